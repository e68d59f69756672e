"""torchvision's AutoAugment, RandAugment, TrivialAugmentWide and RandomErasing, drawn per image
and applied to a whole uint8 batch on its device.

The work is split in two, like `device_pipeline.ResidentImages`' crop and flip:
- `Recipe.draw` runs in the loader, on the CPU: for each image a policy, ops, magnitude bins and
  signs (and an erasing box), with the distributions of torchvision's `forward`s. The result is a
  few integers per image: an *action* per op slot, an index into a table of every (op, magnitude)
  the policy can produce, precomputed once with torchvision's own magnitude tables.
- `Recipe.apply` runs on the device. Per slot, the batch is sorted by op (the order and the group
  sizes are known on the host, so nothing syncs), each group runs one batched kernel with
  per-image parameters gathered from the action table, and the batch is put back in order.

Each batched op follows torchvision's uint8 kernel step by step (`test_device_augment.py` checks
op by op that the results agree). The affine ops build torchvision's sampling grid from the same
float32 inverse matrices, which are computed by torchvision's own `_get_inverse_affine_matrix`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from vit_lightning import compat
from vit_lightning.errors import ConfigError

# geometric ops first: one grid_sample serves them all
OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert",
)  # fmt: skip
AFFINE = range(1, 6)
POLICIES = (v2.AutoAugment, v2.RandAugment, v2.TrivialAugmentWide)


class Actions:
    """Every (op, magnitude) a policy can apply, with what its batched kernel needs.

    Row 0 is the identity. `factor`/`rest` are f32(1 + m) and f32(-m), torchvision's blend ratio
    and `1.0 - ratio` (each rounded once from double, as its kernels do); `theta` is the float32
    inverse affine matrix; `mask` Posterize's bit mask; `threshold` Solarize's, as the least
    pixel value it inverts.
    """

    def __init__(self) -> None:
        self.index: dict[tuple[str, float], int] = {("Identity", 0.0): 0}  # row by (op, m)

    @property
    def names(self) -> list[tuple[str, float]]:
        return list(self.index)  # rows in order: a dict keeps insertion order

    def add(self, name: str, magnitude: float) -> int:
        return self.index.setdefault((name, magnitude), len(self.index))  # -0.0 == 0.0: one row

    def tables(self, h: int, w: int) -> dict[str, torch.Tensor]:
        op = torch.tensor([OPS.index(n) for n, _ in self.names])
        mags = [m for _, m in self.names]
        theta = torch.tensor([_theta(n, m, h, w) for n, m in self.names], dtype=torch.float32)
        bits = [int(m) if n == "Posterize" else 8 for n, m in self.names]
        return {
            "op": op,
            "factor": torch.tensor([1.0 + m for m in mags], dtype=torch.float32),
            "rest": torch.tensor([1.0 - (1.0 + m) for m in mags], dtype=torch.float32),
            "theta": theta.view(-1, 2, 3),
            "mask": torch.tensor([(0xFF << (8 - b)) & 0xFF for b in bits], dtype=torch.uint8),
            "threshold": torch.tensor(
                [_threshold(m) if n == "Solarize" else 256 for n, m in self.names]
            ),
        }


def _threshold(m: float) -> int:
    """Solarize inverts pixels >= 255 * m; torch compares uint8 with that double in float32."""
    return math.ceil(torch.tensor(255 * m, dtype=torch.float32).item())


def _theta(name: str, m: float, h: int, w: int) -> list[float]:
    """torchvision's inverse affine matrix for one op, as its `_apply_image_or_video_transform`
    and `rotate_image` build it (centre (0, 0) is the image centre, except for shears)."""
    inverse = compat.inverse_affine_matrix
    if name in ("ShearX", "ShearY"):
        shear = [math.degrees(math.atan(m)), 0.0][:: 1 if name == "ShearX" else -1]
        return inverse([-w * 0.5, -h * 0.5], 0.0, [0.0, 0.0], 1.0, shear)  # center=[0, 0]
    if name in ("TranslateX", "TranslateY"):
        t = [float(int(m)), 0.0][:: 1 if name == "TranslateX" else -1]
        return inverse([0.0, 0.0], 0.0, t, 1.0, [0.0, 0.0])
    if name == "Rotate":
        return inverse([0.0, 0.0], -(m % 360), [0.0, 0.0], 1.0, [0.0, 0.0])
    return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


class Recipe:
    """One torchvision policy (or none) plus random erasing, as batched draws and ops.

    Args:
        policy: A `v2.AutoAugment`, `v2.RandAugment` or `v2.TrivialAugmentWide` (their default
            nearest interpolation and zero fill), or None.
        erasing: RandomErasing's probability on the normalised tensor (value 0); 0 disables.
        size: (H, W) of the images the policy sees (after the crop): magnitudes depend on it.
    """

    def __init__(self, policy: v2.Transform | None, erasing: float, size: tuple[int, int]):
        if policy is not None and (
            type(policy) not in POLICIES
            or str(policy.interpolation) not in ("nearest", str(v2.InterpolationMode.NEAREST))
            or policy.fill not in (None, 0)
        ):
            raise ConfigError(
                f"the device pipeline batches {'/'.join(p.__name__ for p in POLICIES)} with "
                f"nearest interpolation and zero fill, got {policy!r}: set "
                "--data.device_pipeline=false to run it in the loader"
            )
        self.policy, self.erasing, self.size = policy, float(erasing), size
        self.actions, self.slots = Actions(), 0
        self.sub: torch.Tensor | None = None  # AutoAugment's sub-policies
        self.grid: torch.Tensor | None = None  # RandAugment's / TrivialAugmentWide's op x bin
        h, w = size
        if isinstance(policy, v2.AutoAugment):
            # (25 sub-policies, 2 slots): [action if positive, action if negated, probability]
            self.sub = torch.tensor(
                [
                    [[*self._pair(name, idx, 10), p] for name, p, idx in sub]
                    for sub in compat.autoaugment_policies(policy)
                ],
                dtype=torch.float64,
            )
            self.slots = 2
        elif policy is not None:  # RandAugment: fixed bin; TrivialAugmentWide: a uniform bin
            space = compat.augmentation_space(policy)
            bins = policy.num_magnitude_bins
            pick = [policy.magnitude] if isinstance(policy, v2.RandAugment) else range(bins)
            # (ops, bins, 2): the action for each op, bin and sign
            self.grid = torch.tensor([[self._pair(name, b, bins) for b in pick] for name in space])
            self.slots = policy.num_ops if isinstance(policy, v2.RandAugment) else 1
        self._tables = {
            **self.actions.tables(h, w),
            "base": _base_grid(h, w),
            "half": torch.tensor([0.5 * w, 0.5 * h]),
            # torchvision's sharpness kernel: 1s around a 5, normalised (a, b = 1/13, 5/13)
            "blur": torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0,
        }
        self._device_tables: dict[str, torch.Tensor] | None = None

    def _pair(self, name: str, idx: int | None, bins: int) -> list[int]:
        """(action, negated action) for op `name` at magnitude bin `idx`, as torchvision reads
        it from its `_AUGMENTATION_SPACE`: `float(magnitudes[idx])`, negated for signed ops."""
        fn, signed = compat.augmentation_space(self.policy)[name]
        mags = fn(bins, *self.size)
        m = 0.0 if mags is None else float(mags[idx])
        return [self.actions.add(name, m), self.actions.add(name, -m if signed else m)]

    def __bool__(self) -> bool:
        return self.slots > 0 or self.erasing > 0

    # -- on the host, in the loader -------------------------------------------------------------

    def draw(self, n: int, g: torch.Generator) -> dict[str, Any]:
        """Per-image draws for a batch of `n`, from `g`: `actions` (n, slots), and per slot the
        op-sorted `order` and its group sizes `counts` (host ints: no sync to split by them);
        `erase` (n, 5) [on, top, left, height, width] when erasing."""
        out: dict[str, Any] = {}
        if self.slots:
            sign = torch.rand(n, self.slots, generator=g, dtype=torch.float64) <= 0.5
            if self.sub is not None:  # AutoAugment: one sub-policy, each op with its probability
                sub = self.sub[torch.randint(len(self.sub), (n,), generator=g)]  # (n, 2, 3)
                on = torch.rand(n, 2, generator=g, dtype=torch.float64) <= sub[..., 2]
                act = torch.where(sign, sub[..., 1], sub[..., 0]).long() * on
            else:
                op = torch.randint(len(self.grid), (n, self.slots), generator=g)
                b = torch.randint(self.grid.shape[1], (n, self.slots), generator=g)
                act = self.grid[op, b, sign.long()]
            out["actions"] = act
            op = self._tables["op"][act]
            kind = torch.where((op >= AFFINE[0]) & (op <= AFFINE[-1]), AFFINE[0], op).T
            out["order"] = torch.sort(kind, dim=1, stable=True).indices  # (slots, n)
            out["counts"] = [torch.bincount(k, minlength=len(OPS)).tolist() for k in kind]
        if self.erasing > 0:
            out["erase"] = draw_erasing(n, self.erasing, self.size, g)
        return out

    # -- on the device --------------------------------------------------------------------------

    def tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        if self._device_tables is None or self._device_tables["op"].device != device:
            self._device_tables = {k: v.to(device) for k, v in self._tables.items()}
        return self._device_tables

    def apply(
        self, x: torch.Tensor, actions: torch.Tensor, order: torch.Tensor, counts: list[list[int]]
    ) -> torch.Tensor:
        """The policy on uint8 (B, C, H, W), slot after slot, as `draw` drew it."""
        t = self.tables(x.device)
        for k in range(actions.shape[1]):
            o, sizes = order[k], counts[k]
            xs, acts = x[o], actions[o, k]
            parts, start = [], 0
            for op, size in enumerate(sizes):
                if size:
                    a = acts[start : start + size]
                    parts.append(_op(op, xs[start : start + size], a, t))
                    start += size
            out = torch.cat(parts) if len(parts) > 1 else parts[0]
            x = torch.empty_like(out).index_copy_(0, o, out)
        return x


def from_transforms(
    transforms: list[v2.Transform], erasing: float, size: tuple[int, int]
) -> tuple[int, bool, Recipe]:
    """(pad, flip, recipe) for a policy table's transforms, which the device pipeline applies
    in their order: RandomCrop(size, padding=pad), RandomHorizontalFlip(), then one policy."""
    pad, flip, policy = 0, False, None
    for t in transforms:
        if policy is None and isinstance(t, v2.RandomCrop) and _zero_padded_crop(t, size):
            pad = t.padding[0]
        elif policy is None and isinstance(t, v2.RandomHorizontalFlip) and t.p == 0.5:
            flip = True
        elif policy is None and isinstance(t, POLICIES):
            policy = t
        else:
            raise ConfigError(
                f"the device pipeline runs RandomCrop(size, padding=p), RandomHorizontalFlip() and "
                f"then one of {'/'.join(p.__name__ for p in POLICIES)}; it cannot run {t!r} here: "
                "set --data.device_pipeline=false to run it in the loader"
            )
    return pad, flip, Recipe(policy, erasing, size)


def _zero_padded_crop(t: v2.RandomCrop, size: tuple[int, int]) -> bool:
    p = t.padding
    return (
        tuple(t.size) == size
        and p is not None
        and len(set(p)) == 1
        and t.padding_mode == "constant"
        and t.fill in (0, {"others": 0}, {v2.Transform: 0})
        and not t.pad_if_needed
    )


def draw_erasing(n: int, p: float, size: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """RandomErasing's box per image (scale (0.02, 0.33), ratio (0.3, 3.3)): (n, 5) long
    [on, top, left, h, w]. Like torchvision, up to 10 tries for a box that fits, else no erase."""
    h_img, w_img = size
    area = h_img * w_img
    on = torch.rand(n, generator=g) < p
    log_ratio = torch.log(torch.tensor((0.3, 3.3)))
    scale = torch.empty(n, 10).uniform_(0.02, 0.33, generator=g).double()
    ratio = torch.exp(torch.empty(n, 10).uniform_(*log_ratio.tolist(), generator=g)).double()
    # torchvision: int(round(sqrt(...))) in double; torch.round rounds half to even, as round()
    hs = torch.sqrt(area * scale * ratio).round().long()
    ws = torch.sqrt(area * scale / ratio).round().long()
    fits = (hs < h_img) & (ws < w_img)
    first = torch.where(fits.any(1), fits.long().argmax(1), 0)
    h = hs.gather(1, first[:, None])[:, 0] * fits.any(1)
    w = ws.gather(1, first[:, None])[:, 0] * fits.any(1)
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    top = (u[:, 0] * (h_img - h + 1)).long()
    left = (u[:, 1] * (w_img - w + 1)).long()
    return torch.stack([on & fits.any(1), top, left, h, w], 1).long()


def erase(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zero each image's box (B, 5) [on, top, left, h, w], as `F.erase(..., v=0)` does."""
    _, _, h, w = x.shape
    on, top, left, bh, bw = boxes.T[..., None]
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    r = (rows >= top) & (rows < top + bh) & on.bool()  # (B, H)
    c = (cols >= left) & (cols < left + bw)  # (B, W)
    return x.masked_fill((r[:, :, None] & c[:, None, :])[:, None], 0.0)


# -- the batched ops: torchvision's uint8 kernels with a parameter per image ---------------------


def _blend(img: torch.Tensor, other: torch.Tensor, a: torch.Tensor, t: dict) -> torch.Tensor:
    """torchvision's `_blend`: img * ratio + other * (1 - ratio), clamped, back to uint8."""
    ratio, rest = t["factor"][a].view(-1, 1, 1, 1), t["rest"][a].view(-1, 1, 1, 1)
    # addcmul rounds once, like torchvision's add_(other, alpha=...); `+ other * rest` would not
    return torch.addcmul(img.mul(ratio), other, rest).clamp_(0, 255).to(torch.uint8)


def _gray(img: torch.Tensor) -> torch.Tensor:
    """The float grayscale torchvision's saturation/contrast blend towards (floored for uint8)."""
    return TF.rgb_to_grayscale(img).float() if img.shape[1] == 3 else img.float()


def _base_grid(h: int, w: int) -> torch.Tensor:
    """torchvision's `_affine_grid` base: pixel centres relative to the image centre, (1, HW, 3)."""
    base = torch.empty(1, h, w, 3)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h)[:, None])
    base[..., 2].fill_(1)
    return base.view(1, h * w, 3)


def _affine(img: torch.Tensor, a: torch.Tensor, t: dict) -> torch.Tensor:
    """torchvision's `_affine_grid` + `_apply_grid_transform` (nearest, zero fill), batched."""
    n, _, h, w = img.shape
    theta = t["theta"][a].transpose(1, 2) / t["half"]  # (n, 3, 2), torchvision's rescaled theta
    grid = t["base"].expand(n, -1, -1).bmm(theta).view(n, h, w, 2)
    out = F.grid_sample(
        img.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    return out.round_().to(torch.uint8)


def _sharpness(img: torch.Tensor, a: torch.Tensor, t: dict) -> torch.Tensor:
    c = img.shape[1]
    out = img.float()
    blurred = F.conv2d(out, t["blur"].expand(c, 1, 3, 3), groups=c).round_()
    view = out[..., 1:-1, 1:-1]
    view.addcmul_(blurred.sub_(view), t["rest"][a].view(-1, 1, 1, 1))  # borders stay as they are
    return out.clamp_(0, 255).to(torch.uint8)


def _op(op: int, img: torch.Tensor, a: torch.Tensor, t: dict) -> torch.Tensor:
    """Op `op` (an index into OPS; 1 stands for every affine op) on a group of images."""
    name = OPS[op]
    if name == "Identity":
        return img
    if op in AFFINE:
        return _affine(img, a, t)
    if name == "Brightness":
        return img.mul(t["factor"][a].view(-1, 1, 1, 1)).clamp_(0, 255).to(torch.uint8)
    if name == "Color":
        return img if img.shape[1] == 1 else _blend(img, _gray(img), a, t)
    if name == "Contrast":
        return _blend(img, _gray(img).mean(dim=(-3, -2, -1), keepdim=True), a, t)
    if name == "Sharpness":
        return _sharpness(img, a, t)
    if name == "Posterize":
        return img & t["mask"][a].view(-1, 1, 1, 1)
    if name == "Solarize":
        return torch.where(img >= t["threshold"][a].view(-1, 1, 1, 1), ~img, img)
    if name == "AutoContrast":
        return TF.autocontrast(img)
    if name == "Equalize":
        return TF.equalize(img)
    return TF.invert(img)
