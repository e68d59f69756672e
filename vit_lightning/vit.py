"""A Vision Transformer written from scratch, state_dict-compatible with timm's VisionTransformer.

Layering, names and initialisation follow timm (`timm/models/vision_transformer.py`), so that a
state_dict moves between the two with `strict=True` and the same seed builds the same weights.
This file never imports timm; `tests/test_vit_parity.py` checks the equivalence against it.

Shapes: B batch, C channels, H/W image size, p patch size, N tokens (prefix + patches), D embed dim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "VisionTransformer",
    "PatchEmbed",
    "Attention",
    "Mlp",
    "LayerScale",
    "DropPath",
    "Block",
    "drop_path",
    "drop_path_rates",
    "resample_abs_pos_embed",
    "checkpoint_filter_fn",
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "vit_tiny_patch4_32",
    "vit_small_patch4_32",
]


def _pair(x: int | Sequence[int]) -> tuple[int, int]:
    # sizes traced by torch.export are SymInts: int() would fix the export to the traced size
    if isinstance(x, (int, torch.SymInt)):
        return (x, x)
    return tuple(v if isinstance(v, torch.SymInt) else int(v) for v in (x[0], x[1]))


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch, rescale the rest by 1/keep."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one draw per sample, broadcast over tokens
    # new_empty().bernoulli_() consumes the generator exactly as timm does, so masks match per seed
    mask = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0:
        mask.div_(keep_prob)
    return x * mask


class DropPath(nn.Module):
    """Drop paths (stochastic depth) per sample, as a module. Identity in eval or at rate 0."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={round(self.drop_prob, 3):0.3f}"


def drop_path_rates(drop_path_rate: float, depth: int) -> list[float]:
    """timm's linear stochastic-depth rule: rates spaced from 0 to drop_path_rate over the depth."""
    return [x.item() for x in torch.linspace(0, drop_path_rate, depth, device="cpu")]


class PatchEmbed(nn.Module):
    """Image to patch tokens: a p×p conv with stride p, i.e. unfold into patches, then a matmul.

    Args:
        img_size: Input image size the model is built for.
        patch_size: Side of each square patch.
        in_chans: Number of input image channels.
        embed_dim: Token dimension D.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        self.grid_size = (
            self.img_size[0] // self.patch_size[0],
            self.img_size[1] // self.patch_size[1],
        )
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N_patches, D), row-major over the grid


class Attention(nn.Module):
    """Multi-head self-attention on fused F.scaled_dot_product_attention.

    Args:
        dim: Token dimension D.
        num_heads: Number of heads; D must divide evenly among them.
        qkv_bias: Add a bias to the q, k, v projection.
        attn_drop: Dropout on the attention weights.
        proj_drop: Dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, t: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
        """(B, N, n*D) Linear output -> n tensors (B, heads, N, head_dim), as strided views.

        Unbinding the (B, N, n, heads, head_dim) view along its n axis, then transposing, gives
        the same views as timm's permute(2, 0, 3, 1, 4).unbind(0), but autograd then stacks the
        gradients straight into the Linear's output layout, skipping a full copy per block.
        """
        B, N, _ = t.shape
        return tuple(
            u.transpose(1, 2) for u in t.view(B, N, n, self.num_heads, self.head_dim).unbind(2)
        )

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._heads(self.qkv(x), 3)  # q, k, v: 3 × (B, heads, N, head_dim)

    def forward(self, x: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); with first_only, (B, 1, D): the output for token 0 alone,
        whose query still attends to every token's key and value."""
        B, N, D = x.shape
        if first_only:
            w_q, w_kv = self.qkv.weight.split([D, 2 * D])
            b_q, b_kv = (None, None) if self.qkv.bias is None else self.qkv.bias.split([D, 2 * D])
            (q,) = self._heads(F.linear(x[:, :1], w_q, b_q), 1)
            k, v = self._heads(F.linear(x, w_kv, b_kv), 2)
            N = 1
        else:
            q, k, v = self._qkv(x)
        dropout_p = self.attn_drop.p if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, heads, N, head_dim)
        x = x.transpose(1, 2).reshape(B, N, D)
        return self.proj_drop(self.proj(x))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """softmax(q kᵀ / √d) of shape (B, heads, N, N), computed explicitly for visualisation only."""
        q, k, _ = self._qkv(x)
        return (q * self.scale @ k.transpose(-2, -1)).softmax(dim=-1)


class Mlp(nn.Module):
    """Two-layer GELU MLP: D -> hidden -> D, with dropout after each layer."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (CaiT), started at `init_values`."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def trunc_normal_(
    t: torch.Tensor, std: float = 1.0, a: float = -2.0, b: float = 2.0
) -> torch.Tensor:
    """Truncated normal by inverse CDF: timm's sampler.

    torch >= 2.15 samples by rejection instead, which draws other numbers from the same seed;
    keeping timm's lets a seed reproduce timm's exact weights.
    """

    def cdf(v: float) -> float:
        return (1.0 + math.erf(v / std / math.sqrt(2.0))) / 2.0

    with torch.no_grad():
        t.uniform_(2 * cdf(a) - 1, 2 * cdf(b) - 1).erfinv_().mul_(std * math.sqrt(2.0))
        return t.clamp_(min=a, max=b)


def LayerNorm(dim: int) -> nn.LayerNorm:  # noqa: N802 - reads as a layer type, like timm's
    return nn.LayerNorm(dim, eps=1e-6)  # timm's ViT eps, not torch's 1e-5


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(norm(x)), then x + mlp(norm(x)).

    Disabled options are nn.Identity, so forward has no branches.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values: float | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(
            dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop
        )
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); with first_only, token 0's output alone, (B, 1, D)."""
        res = x[:, :1] if first_only else x
        x = res + self.drop_path1(self.ls1(self.attn(self.norm1(x), first_only)))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


def resample_abs_pos_embed(
    posemb: torch.Tensor,
    new_size: Sequence[int],
    old_size: Sequence[int] | None = None,
    num_prefix_tokens: int = 1,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resize a (1, prefix + H*W, D) position embedding to a new grid, leaving prefix tokens alone.

    Same maths as timm's function of the same name (bicubic, antialiased), so outputs match.
    """
    new_size = _pair(new_size)
    num_new_tokens = new_size[0] * new_size[1] + num_prefix_tokens
    if old_size is None:
        hw = int(math.sqrt(posemb.shape[1] - num_prefix_tokens))
        old_size = (hw, hw)
    old_size = _pair(old_size)
    # Under torch.export the new size is symbolic and comparing it would fix the export to the
    # traced size; resampling to the same size is exact (bicubic at the grid points), so skip it.
    exporting = torch.compiler.is_exporting()
    if not exporting and num_new_tokens == posemb.shape[1] and old_size == new_size:
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    D, dtype = posemb.shape[-1], posemb.dtype
    grid = grid.float().reshape(1, *old_size, D).permute(0, 3, 1, 2)  # (1, D, h, w)
    grid = F.interpolate(grid, size=new_size, mode=interpolation, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, D).to(dtype)  # (1, H*W, D)
    return torch.cat([prefix, grid], dim=1)


class VisionTransformer(nn.Module):
    """Vision Transformer (Dosovitskiy et al., 2020), a drop-in for timm's VisionTransformer.

    Args:
        img_size: Input image size.
        patch_size: Patch size; must divide img_size.
        in_chans: Number of input image channels.
        num_classes: Number of classes of the linear head (0 for no head).
        global_pool: 'token' reads the [CLS] token, 'avg' averages the patch tokens.
        embed_dim: Token dimension.
        depth: Number of Transformer blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP hidden size as a multiple of embed_dim.
        qkv_bias: Bias on the qkv projection.
        init_values: LayerScale initial value; None or 0 disables LayerScale.
        class_token: Prepend a learnable [CLS] token.
        dynamic_img_size: Accept any input size divisible by patch_size, resampling pos_embed.
        drop_rate: Dropout before the head.
        pos_drop_rate: Dropout after adding position embeddings.
        proj_drop_rate: Dropout after the attention projection and in the MLP.
        attn_drop_rate: Dropout on attention weights.
        drop_path_rate: Stochastic depth of the last block; earlier blocks ramp up linearly from 0.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: Literal["token", "avg"] = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float | None = None,
        class_token: bool = True,
        dynamic_img_size: bool = False,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _check_args(locals())
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        self.has_class_token = class_token
        self.dynamic_img_size = dynamic_img_size
        use_fc_norm = global_pool == "avg"  # timm: avg pooling moves the final norm after the pool

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + self.num_prefix_tokens, embed_dim)
        )
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(
            *[
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate,
                    init_values=init_values,
                    drop_path=dpr[i],
                )
                for i in range(depth)
            ]
        )
        self.norm = nn.Identity() if use_fc_norm else LayerNorm(embed_dim)
        self.fc_norm = LayerNorm(embed_dim) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """timm's default ('') init, drawn in timm's order so a seed gives timm's exact weights."""
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():  # the conv keeps its default init, as in timm
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters that AdamW should not decay (besides norms and biases)."""
        return {"pos_embed", "cls_token"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head, e.g. to fine-tune on a dataset with a different number of classes."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _check_input(self, x: torch.Tensor) -> tuple[int, int]:
        """Validate (B, C, H, W) and return the patch grid size, with errors that name the fix."""
        ph, pw = self.patch_embed.patch_size
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected input of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}; "
                f"the model was built with in_chans={self.in_chans}"
            )
        H, W = x.shape[-2:]
        if self.dynamic_img_size:
            if H % ph or W % pw:
                raise ValueError(
                    f"input size {H}x{W} is not divisible by patch_size {ph}x{pw}; "
                    f"resize or pad the input to a multiple of the patch size"
                )
        elif self.patch_embed.img_size != (H, W):
            eh, ew = self.patch_embed.img_size
            raise ValueError(
                f"expected input of shape (B, {self.in_chans}, {eh}, {ew}), got {tuple(x.shape)}; "
                f"resize the input or build the model with dynamic_img_size=True"
            )
        return H // ph, W // pw

    def _pos_embed(self, x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        pos_embed = self.pos_embed
        if self.dynamic_img_size:
            pos_embed = resample_abs_pos_embed(
                pos_embed, grid_size, self.patch_embed.grid_size, self.num_prefix_tokens
            )
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N, D)
        return self.pos_drop(x + pos_embed)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, N, D) normalised tokens."""
        grid_size = self._check_input(x)
        x = self._pos_embed(self.patch_embed(x), grid_size)
        x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, D) tokens -> (B, num_classes) logits, or the pooled (B, D) features if pre_logits."""
        x = x[:, 0] if self.global_pool == "token" else x[:, self.num_prefix_tokens :].mean(dim=1)
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool != "token" or len(self.blocks) == 0:
            return self.forward_head(self.forward_features(x))
        # The head reads only the [CLS] token, so the last block computes only its output: one
        # query instead of N, and proj and MLP on one token. Same logits and DropPath draws as
        # forward_head(forward_features(x)), which still returns every token.
        grid_size = self._check_input(x)
        x = self._pos_embed(self.patch_embed(x), grid_size)
        *blocks, last = self.blocks
        for blk in blocks:
            x = blk(x)
        return self.forward_head(self.norm(last(x, first_only=True)))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-block attention weights, a list of depth tensors (B, heads, N, N), for visualisation.

        A separate, explicit-softmax pass: the default forward keeps the fused kernel.
        """
        maps = []
        x = self._pos_embed(self.patch_embed(x), self._check_input(x))
        for blk in self.blocks:
            maps.append(blk.attn.attention_map(blk.norm1(x)))
            x = blk(x)
        return maps


def _check_args(args: dict) -> None:
    """Fail at construction, naming the argument, rather than with a shape error at step 1."""
    img, patch = _pair(args["img_size"]), _pair(args["patch_size"])
    if img[0] % patch[0] or img[1] % patch[1]:
        raise ValueError(
            f"img_size={args['img_size']} must be divisible by patch_size={args['patch_size']}"
        )
    if args["embed_dim"] % args["num_heads"]:
        raise ValueError(
            f"embed_dim={args['embed_dim']} must be divisible by num_heads={args['num_heads']}"
        )
    if args["global_pool"] not in ("token", "avg"):
        raise ValueError(f"global_pool={args['global_pool']!r} must be 'token' or 'avg'")
    if args["global_pool"] == "token" and not args["class_token"]:
        raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg'")
    rates = ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate")
    for name in rates:
        if not 0.0 <= args[name] < 1.0:
            raise ValueError(f"{name}={args[name]} must be in [0, 1)")
    for name in ("depth", "num_heads", "embed_dim", "in_chans"):
        if args[name] < 1:
            raise ValueError(f"{name}={args[name]} must be >= 1")
    if args["num_classes"] < 0 or args["mlp_ratio"] <= 0:
        raise ValueError(
            f"num_classes={args['num_classes']} must be >= 0 and mlp_ratio={args['mlp_ratio']} > 0"
        )


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: VisionTransformer) -> dict:
    """Adapt a checkpoint to `model`'s resolution: resample pos_embed to the model's patch grid.

    For fine-tuning at a new image size, e.g. a 224 checkpoint into a 384 model:
    `model.load_state_dict(checkpoint_filter_fn(sd, model))`.
    """
    out = dict(state_dict)
    pe = out.get("pos_embed")
    if pe is not None and pe.shape != model.pos_embed.shape:
        out["pos_embed"] = resample_abs_pos_embed(
            pe, model.patch_embed.grid_size, num_prefix_tokens=model.num_prefix_tokens
        )
    return out


# Named constructors. Keyword arguments override the preset, as with timm.create_model.
def _create(defaults: dict, **kwargs) -> VisionTransformer:
    return VisionTransformer(**{**defaults, **kwargs})


def vit_tiny_patch16_224(**kwargs) -> VisionTransformer:
    """ViT-Ti/16 at 224×224 (5.7M params)."""
    return _create(dict(patch_size=16, embed_dim=192, depth=12, num_heads=3), **kwargs)


def vit_small_patch16_224(**kwargs) -> VisionTransformer:
    """ViT-S/16 at 224×224 (22M params)."""
    return _create(dict(patch_size=16, embed_dim=384, depth=12, num_heads=6), **kwargs)


def vit_base_patch16_224(**kwargs) -> VisionTransformer:
    """ViT-B/16 at 224×224 (86M params)."""
    return _create(dict(patch_size=16, embed_dim=768, depth=12, num_heads=12), **kwargs)


_CIFAR = dict(img_size=32, patch_size=4, num_classes=10)  # 8×8 grid of 4×4 patches = 64 tokens


def vit_tiny_patch4_32(**kwargs) -> VisionTransformer:
    """ViT-Ti width on 32×32 inputs with 4×4 patches (5.4M params), for CIFAR."""
    return _create(dict(**_CIFAR, embed_dim=192, depth=12, num_heads=3), **kwargs)


def vit_small_patch4_32(**kwargs) -> VisionTransformer:
    """ViT-S width on 32×32 inputs with 4×4 patches (21M params), for CIFAR."""
    return _create(dict(**_CIFAR, embed_dim=384, depth=12, num_heads=6), **kwargs)
