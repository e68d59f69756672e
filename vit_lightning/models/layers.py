"""The ViT's layers, as in `timm/layers/`: patch embedding, attention, MLP, stochastic depth, block,
the resampling of position embeddings and patch-embedding kernels for new sizes, and timm's rule
for which blocks' features to take.

Names, keys, initialisation and maths follow timm, so `vit.py`'s model is timm's VisionTransformer
with the same state_dict. This file never imports timm.

Shapes: B batch, C channels, H/W image size, p patch size, N tokens (prefix + patches), D embed dim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vit_lightning.errors import ConfigError

__all__ = [
    "PatchEmbed",
    "Attention",
    "Mlp",
    "LayerScale",
    "DropPath",
    "Block",
    "LayerNorm",
    "drop_path",
    "drop_path_rates",
    "feature_take_indices",
    "trunc_normal_",
    "resample_abs_pos_embed",
    "resample_patch_embed",
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
        mask = mask.div_(keep_prob)  # assigned: fx drops an in-place op whose result is unused
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
        qk_norm: LayerNorm on each head's queries and keys (timm's q_norm, k_norm).
        attn_drop: Dropout on the attention weights.
        proj_drop: Dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError.of(self, f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qk_norm = qk_norm  # a flag, not Identity calls: the default path costs what it did
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = LayerNorm(self.head_dim) if qk_norm else nn.Identity()
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
        us = t.view(B, N, n, self.num_heads, self.head_dim).unbind(2)
        return tuple(us[i].transpose(1, 2) for i in range(n))  # indexed: an fx Proxy can't iterate

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        q, k, v = self._heads(self.qkv(x), 3)  # 3 × (B, heads, N, head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    def forward(self, x: torch.Tensor, first_only: int = 0) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); with first_only=k (True is 1), (B, k, D): the outputs for the
        first k tokens alone, whose queries still attend to every token's key and value."""
        B, N, D = x.shape
        if first_only:
            w_q, w_kv = self.qkv.weight.split([D, 2 * D])
            b_q, b_kv = (None, None) if self.qkv.bias is None else self.qkv.bias.split([D, 2 * D])
            (q,) = self._heads(F.linear(x[:, :first_only], w_q, b_q), 1)
            k, v = self._heads(F.linear(x, w_kv, b_kv), 2)
            if self.qk_norm:
                q, k = self.q_norm(q), self.k_norm(k)
            N = q.shape[2]
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
        qk_norm: bool = False,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values: float | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_norm, attn_drop, proj_drop)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, first_only: int = 0) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); with first_only=k, the first k tokens' outputs alone, (B, k, D)."""
        res = x[:, :first_only] if first_only else x
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


def resample_patch_embed(
    patch_embed: torch.Tensor,
    new_size: Sequence[int],
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resize a (D, C, h, w) patch-embedding kernel to new_size, FlexiViT-style (Beyer et al., 2023).

    With R the (H*W, h*w) matrix that resizes a flattened h×w patch to H×W, the new kernel is
    pinv(Rᵀ) w: a resized patch then gives (almost) the old token, <R x, w'> ≈ <x, w>. The same
    maths as timm's function of the same name, so a checkpoint loads to the same logits.
    """
    old_size, new_size = tuple(patch_embed.shape[-2:]), _pair(new_size)
    if old_size == new_size:
        return patch_embed
    n_old = old_size[0] * old_size[1]
    basis = torch.eye(n_old, device=patch_embed.device).reshape(n_old, 1, *old_size)
    resized = F.interpolate(  # (h*w, 1, H, W): each basis patch resized
        basis, size=new_size, mode=interpolation, antialias=antialias, align_corners=False
    )
    resize_mat = resized.squeeze(1).permute(1, 2, 0).reshape(-1, n_old)  # (H*W, h*w)
    D, C = patch_embed.shape[:2]
    w = patch_embed.reshape(D, C, n_old).float() @ torch.linalg.pinv(resize_mat)  # (D, C, H*W)
    return w.reshape(D, C, *new_size).to(patch_embed.dtype)


def feature_take_indices(
    num_features: int, indices: int | Sequence[int] | None = None
) -> tuple[list[int], int]:
    """timm's rule for which blocks to take: all if None, the last n if an int, else the listed
    ones (negative from the end). Returns the absolute indices and the largest."""
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ConfigError(f"indices={indices}: take the last 1 to {num_features} blocks")
        take = list(range(num_features - indices, num_features))
    else:
        take = [num_features + i if i < 0 else i for i in indices]
        if not take or not all(0 <= i < num_features for i in take):
            raise ConfigError(
                f"indices={list(indices)}: block indices must be in [-{num_features}, "
                f"{num_features - 1}] for a model of depth {num_features}"
            )
    return take, max(take)
