"""The device pipeline's AutoAugment, RandAugment, TrivialAugmentWide and random erasing against
torchvision's: the same result op by op, the same draws in distribution, the same order in the
whole pipeline, and draws that are a function of (seed, epoch, indices) only.

torchvision's reference for one op is its own `_apply_image_or_video_transform`, the method every
policy's `forward` calls; the draws of `forward` are recorded by wrapping that method.
"""

import collections
import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from vit_lightning import compat
from vit_lightning.data.device_augment import AFFINE, OPS, Recipe, _op, draw_erasing, erase
from vit_lightning.data.device_pipeline import ResidentImages

POLICIES = {
    "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
    "randaugment": v2.RandAugment,
    "trivialaugment": v2.TrivialAugmentWide,
}
SIZES = {"cifar": (3, 32, 32), "fmnist": (1, 28, 28)}


def _images(c: int, h: int, w: int) -> torch.Tensor:
    """Noise over several ranges, plus the edge cases: a constant image (autocontrast's and
    equalize's degenerate branches) and a two-valued one."""
    g = torch.Generator().manual_seed(0)
    noise = [torch.randint(lo, hi, (c, h, w), generator=g) for lo, hi in
             [(0, 256), (0, 256), (0, 256), (40, 90), (200, 256), (0, 16)]]  # fmt: skip
    const = torch.full((c, h, w), 77)
    two = torch.where(torch.rand(c, h, w, generator=g) < 0.3, 12, 240)
    return torch.stack([*noise, const, two]).to(torch.uint8)


def _reference(policy, img: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    fill = policy._fill
    return policy._apply_image_or_video_transform(img, name, magnitude, policy.interpolation, fill)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("name", list(POLICIES))
def test_every_op_and_magnitude_equals_torchvisions_kernel(name, size):
    c, h, w = SIZES[size]
    policy = POLICIES[name]()
    recipe = Recipe(policy, 0.0, (h, w))
    x, tables = _images(c, h, w), recipe.tables(torch.device("cpu"))
    seen = set()
    for a, (op, m) in enumerate(recipe.actions.names):
        acts = torch.full((len(x),), a)
        ours = _op(AFFINE[0] if OPS.index(op) in AFFINE else OPS.index(op), x, acts, tables)
        ref = torch.stack([_reference(policy, xi, op, m) for xi in x])
        assert ours.dtype == torch.uint8 and torch.equal(ours, ref), f"{op} magnitude {m}"
        seen.add(op)
    # every op the policy has was checked: AutoAugment's CIFAR-10 policy has no ShearX, and
    # RandAugment / TrivialAugmentWide have no Invert
    unused = {"ShearX"} if name == "autoaugment" else {"Invert"}
    assert seen - {"Identity"} == set(OPS) - unused - {"Identity"}


def test_equalize_and_autocontrast_degenerate_images_are_left_as_torchvision_leaves_them():
    x = _images(3, 32, 32)[6:]  # constant and two-valued
    recipe = Recipe(v2.TrivialAugmentWide(), 0.0, (32, 32))
    t = recipe.tables(torch.device("cpu"))
    for op in ("AutoContrast", "Equalize"):
        a = torch.full((len(x),), recipe.actions.index[(op, 0.0)])
        assert torch.equal(_op(OPS.index(op), x, a, t), getattr(TF, op.lower())(x))
    assert torch.equal(x[0], _op(OPS.index("Equalize"), x, a, t)[0])  # nothing to equalize


# -- draws in distribution ----------------------------------------------------------------------


def _theirs(policy, n: int, hw: tuple[int, int]) -> list[tuple[tuple[str, float], ...]]:
    """n calls of the policy's forward: the (op, magnitude) sequence each applied."""
    calls, img = [], torch.zeros(1, *hw, dtype=torch.uint8)
    record = lambda image, op, m, **_: calls[-1].append((op, round(m, 5))) or image  # noqa: E731
    policy._apply_image_or_video_transform = record
    torch.manual_seed(0)
    for _ in range(n):
        calls.append([])
        policy(img)
    return [tuple(c) for c in calls]


def _ours(recipe: Recipe, n: int) -> list[tuple[tuple[str, float], ...]]:
    draws = recipe.draw(n, torch.Generator().manual_seed(1))
    names = recipe.actions.names
    # AutoAugment skips an op it does not apply (our identity row); the others apply
    # "Identity" as an op of their own
    skipped = {("Identity", 0.0)} if isinstance(recipe.policy, v2.AutoAugment) else set()
    out = []
    for row in draws["actions"].tolist():
        ops = [(names[a][0], round(names[a][1], 5)) for a in row]
        out.append(tuple(o for o in ops if o not in skipped))
    return out


def _chi2_limit(df: int) -> float:
    """The chi-square quantile at p = 1e-6 (Wilson-Hilferty): seeds are fixed, so a pass here
    is a fixed outcome, and a real difference of the sizes below lands far beyond it."""
    z = 4.753
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _homogeneous(a: collections.Counter, b: collections.Counter) -> tuple[float, float]:
    """(chi-square, limit) of two samples over the union of their categories."""
    na, nb = sum(a.values()), sum(b.values())
    keys = set(a) | set(b)
    stat = 0.0
    for k in keys:
        pooled = (a[k] + b[k]) / (na + nb)
        stat += (a[k] - na * pooled) ** 2 / (na * pooled) + (b[k] - nb * pooled) ** 2 / (
            nb * pooled
        )
    return stat, _chi2_limit(max(len(keys) - 1, 1))


@pytest.mark.parametrize("name", list(POLICIES))
def test_ops_and_magnitudes_are_drawn_as_torchvision_draws_them(name):
    n, hw = 60_000, (32, 32)
    theirs, ours = _theirs(POLICIES[name](), n, hw), _ours(Recipe(POLICIES[name](), 0.0, hw), n)
    # the same support: every (op, signed magnitude) one side produces, the other does too
    flat = lambda runs: collections.Counter(o for r in runs for o in r)  # noqa: E731
    t, o = flat(theirs), flat(ours)
    assert set(t) == set(o), set(t) ^ set(o)
    # op frequencies, ops applied per image, and each op's magnitude histogram
    checks = {
        "op frequency": (collections.Counter(op for op, _ in t.elements()),
                         collections.Counter(op for op, _ in o.elements())),
        "ops per image": (collections.Counter(map(len, theirs)), collections.Counter(map(len, ours))),
    }  # fmt: skip
    for op in {op for op, _ in t}:
        checks[f"{op} magnitudes"] = (
            collections.Counter({k: v for k, v in t.items() if k[0] == op}),
            collections.Counter({k: v for k, v in o.items() if k[0] == op}),
        )
    for what, (a, b) in checks.items():
        stat, limit = _homogeneous(a, b)
        assert stat < limit, f"{name}: {what} differ (chi2 {stat:.0f} > {limit:.0f})"


def test_the_distribution_check_catches_one_wrong_magnitude():
    # the check above has the power it claims: one bin of TrivialAugment's Rotate read one off
    n, hw = 60_000, (32, 32)
    theirs, recipe = (
        _theirs(v2.TrivialAugmentWide(), n, hw),
        Recipe(v2.TrivialAugmentWide(), 0.0, hw),
    )
    row = list(compat.augmentation_space(recipe.policy)).index("Rotate")
    recipe.grid[row, 7] = recipe.grid[row, 8]  # bin 7 now draws bin 8's magnitude
    ours = _ours(recipe, n)
    t = collections.Counter(x for r in theirs for x in r if x[0] == "Rotate")
    o = collections.Counter(x for r in ours for x in r if x[0] == "Rotate")
    stat, limit = _homogeneous(t, o)
    assert stat > limit


def test_erasing_boxes_are_drawn_as_torchvision_draws_them():
    n, size, p = 40_000, (32, 32), 0.25
    theirs_t = v2.RandomErasing(p=p)
    torch.manual_seed(0)
    img = torch.zeros(3, *size)
    theirs = []
    for _ in range(n):
        if torch.rand(1) >= p:  # RandomErasing's own coin (`_RandomApplyTransform`)
            continue
        params = theirs_t.make_params([img])
        if params["v"] is not None:
            theirs.append((params["i"], params["j"], params["h"], params["w"]))
    boxes = draw_erasing(n, p, size, torch.Generator().manual_seed(1))
    ours = [tuple(b[1:]) for b in boxes.tolist() if b[0]]
    assert abs(len(ours) - len(theirs)) < 5 * math.sqrt(n * p * (1 - p))  # the erase rate
    for what, key in {
        "area": lambda b: b[2] * b[3],
        "aspect ratio (h, w)": lambda b: (b[2], b[3]),
        "top given height": lambda b: (b[2], b[0]),
    }.items():
        a, b = collections.Counter(map(key, theirs)), collections.Counter(map(key, ours))
        # pool sparse categories, so the chi-square is valid
        rare = {k for k in set(a) | set(b) if a[k] + b[k] < 20}
        a2, b2 = collections.Counter(), collections.Counter()
        for pooled, counts in ((a2, a), (b2, b)):
            for k, v in counts.items():
                pooled["rare" if k in rare else k] += v
        stat, limit = _homogeneous(a2, b2)
        assert stat < limit, f"erasing {what} differs (chi2 {stat:.0f} > {limit:.0f})"


def test_erasing_zeroes_the_box_as_torchvision_erase_does():
    x = torch.randn(4, 3, 32, 32)
    boxes = torch.tensor(
        [[1, 3, 5, 10, 7], [0, 0, 0, 20, 20], [1, 0, 0, 31, 1], [1, 20, 2, 12, 30]]
    )
    ours = erase(x, boxes)
    for xi, (on, i, j, h, w), oi in zip(x, boxes.tolist(), ours, strict=True):
        ref = TF.erase(xi, i, j, h, w, torch.zeros(1, 1, 1)) if on else xi
        assert torch.equal(oi, ref)


# -- the whole pipeline -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(POLICIES))
def test_the_pipeline_is_crop_flip_policy_normalize_erase_for_the_same_draws(name):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=g)
    recipe = Recipe(POLICIES[name](), 0.5, (32, 32))
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    ds = ResidentImages(images, torch.zeros(96), mean, std, "train", 4, True, 3, recipe)
    draws = ds.__getitems__([(i, 2) for i in range(5, 69)])
    x, _ = ds.batch(**{k: v for k, v in draws.items() if k != "split"})
    ref_policy, names = POLICIES[name](), recipe.actions.names
    for j, i in enumerate(draws["index"].tolist()):
        top, left = draws["shift"][j].tolist()
        img = TF.crop(TF.pad(images[i], [4]), top, left, 32, 32)
        img = TF.horizontal_flip(img) if draws["flip"][j] else img
        for a in draws["actions"][j].tolist():  # slot after slot
            img = _reference(ref_policy, img, *names[a])
        ref = TF.normalize(TF.to_dtype(img, torch.float32, scale=True), mean, std)
        on, ti, tj, h, w = draws["erase"][j].tolist()
        ref = TF.erase(ref, ti, tj, h, w, torch.zeros(1, 1, 1)) if on else ref
        assert torch.equal(x[j], ref), f"image {j}: actions {draws['actions'][j].tolist()}"
    assert draws["erase"][:, 0].any() and len(set(draws["actions"].flatten().tolist())) > 5


def test_policy_and_erasing_draws_depend_on_seed_epoch_and_indices_only():
    images = torch.zeros(64, 3, 32, 32, dtype=torch.uint8)
    recipe = Recipe(v2.TrivialAugmentWide(), 0.25, (32, 32))
    ds = ResidentImages(
        images, torch.zeros(64), (0.0,) * 3, (1.0,) * 3, "train", 4, True, 1, recipe
    )
    keys = [(i, 5) for i in range(10, 42)]
    a, b = ds.__getitems__(keys), ds.__getitems__(keys)
    for k in ("actions", "order", "erase"):
        assert torch.equal(a[k], b[k])
    assert a["counts"] == b["counts"]
    other = ds.__getitems__([(i, 6) for i in range(10, 42)])
    assert not torch.equal(a["actions"], other["actions"])
    reseeded = ResidentImages(
        images, torch.zeros(64), (0.0,) * 3, (1.0,) * 3, "train", 4, True, 2, recipe
    )
    assert not torch.equal(a["actions"], reseeded.__getitems__(keys)["actions"])


def test_draws_are_the_same_with_loader_workers():
    from torch.utils.data import DataLoader

    from vit_lightning.data.device_pipeline import passthrough
    from vit_lightning.data.sampling import ResumableSampler

    images = torch.zeros(64, 3, 32, 32, dtype=torch.uint8)
    recipe = Recipe(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10), 0.25, (32, 32))
    ds = ResidentImages(
        images, torch.zeros(64), (0.0,) * 3, (1.0,) * 3, "train", 4, True, 1, recipe
    )
    batches = {}
    for workers in (0, 2):
        sampler = ResumableSampler(ds, shuffle=True, seed=1)
        sampler.set_epoch(3)
        loader = DataLoader(ds, 16, sampler=sampler, num_workers=workers, collate_fn=passthrough)
        batches[workers] = list(loader)
    for a, b in zip(batches[0], batches[2], strict=True):
        for k in ("index", "shift", "flip", "actions", "order", "erase"):
            assert torch.equal(a[k], b[k]), k
        assert a["counts"] == b["counts"]
