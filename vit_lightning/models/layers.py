"""The ViT's layers, as in `timm/layers/`: patch embedding, attention, MLP, stochastic depth, block,
the resampling of position embeddings and patch-embedding kernels for new sizes, and timm's rule
for which blocks' features to take.

Names, keys, initialisation and maths follow timm, so `vit.py`'s model is timm's VisionTransformer
with the same state_dict. This file never imports timm. The small-data layers timm lacks follow
their papers' reference code instead: CCT's convolutional tokenizer and sequence pooling (Hassani
et al., 2021; SHI-Labs/Compact-Transformers) and shifted patch tokenization and locality
self-attention (Lee et al., 2021; aanna0701/SPT_LSA_ViT).

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
    "ConvTokenizer",
    "ShiftedPatchEmbed",
    "Attention",
    "LocalitySelfAttention",
    "SeqPool",
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
        self.proj = self._projection(in_chans, embed_dim)

    def _projection(self, in_chans: int, embed_dim: int) -> nn.Module:
        p = self.patch_size
        return nn.Conv2d(in_chans, embed_dim, kernel_size=p, stride=p)

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        """The token grid for an (H, W) input: (H/p, W/p)."""
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N_patches, D), row-major over the grid


class ConvTokenizer(nn.Module):
    """CCT's convolutional tokenizer: n × [conv k×k, no bias -> ReLU -> max-pool 3×3 stride 2].

    As CCT's `Tokenizer` with the settings of its models (`src/cct.py`): padding max(1, k//2),
    stride max(1, k//2 - 1) (1 for k=3, 2 for k=7), the inner layers `hidden_chans` wide, the
    last `embed_dim`, Kaiming-normal weights. Each token is one cell of the last pooled map, whose
    receptive field overlaps its neighbours', unlike a patch's.

    Args:
        img_size: Input image size the model is built for.
        in_chans: Number of input image channels.
        embed_dim: Token dimension D (the last conv's channels).
        num_layers: Number of conv-ReLU-pool stages; each halves the grid (and more if stride > 1).
        kernel_size: Odd conv kernel side k.
        hidden_chans: Channels of the stages before the last (CCT's `in_planes`).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        embed_dim: int = 768,
        num_layers: int = 1,
        kernel_size: int = 3,
        hidden_chans: int = 64,
    ) -> None:
        super().__init__()
        self.num_layers, self.kernel_size = num_layers, kernel_size
        self.stride = max(1, kernel_size // 2 - 1)
        padding = max(1, kernel_size // 2)
        chans = [in_chans] + [hidden_chans] * (num_layers - 1) + [embed_dim]
        self.conv_layers = nn.Sequential(
            *[
                nn.Sequential(
                    nn.Conv2d(
                        chans[i], chans[i + 1], kernel_size, self.stride, padding, bias=False
                    ),
                    nn.ReLU(),
                    nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
                )
                for i in range(num_layers)
            ]
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
        self.img_size = _pair(img_size)
        reduction = (2 * self.stride) ** num_layers
        # the total stride: each token stands for a reduction × reduction cell of the input, and
        # an input divisible by it gives an exact grid (export's dynamic sizes use it)
        self.patch_size = (reduction, reduction)
        self.grid_size = self.dynamic_feat_size(self.img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    @staticmethod
    def feat_size(img_size: tuple[int, int], num_layers: int, kernel_size: int) -> tuple[int, int]:
        """The token grid of an (H, W) input. An odd k with padding k//2 makes each conv
        ceil(H / stride) (2p - k = -1), and each pool ceil(H / 2)."""
        (h, w), s = img_size, max(1, kernel_size // 2 - 1)
        for _ in range(num_layers):
            h, w = (h + s - 1) // s, (w + s - 1) // s
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        """The token grid for an (H, W) input."""
        return self.feat_size(img_size, self.num_layers, self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_layers(x)  # (B, D, h, w): h = ceil(H / (2 stride)^n)
        return x.flatten(2).transpose(1, 2)  # (B, h*w, D), row-major over the grid


class ShiftedPatchEmbed(PatchEmbed):
    """Shifted patch tokenization (SPT, Lee et al. 2021): the image and its 4 diagonal shifts by
    half a patch, stacked as 5C channels, cut into patches, then LayerNorm and Linear.

    As the reference's `ShiftedPatchTokenization(is_pe=True)`: zero padding where a shift moves
    the image off its border, channel order [x, left-up, right-up, left-down, right-down], each
    patch flattened as (row, column, channel), LayerNorm with torch's eps 1e-5. Each token then
    sees its patch and the half of each diagonal neighbour next to it.

    Args:
        img_size: Input image size the model is built for.
        patch_size: Side of each square patch, at least 2 (the shift is patch_size // 2).
        in_chans: Number of input image channels.
        embed_dim: Token dimension D.
    """

    def _projection(self, in_chans: int, embed_dim: int) -> nn.Module:
        self.shift = (self.patch_size[0] // 2, self.patch_size[1] // 2)
        patch_dim = 5 * in_chans * self.patch_size[0] * self.patch_size[1]
        self.norm = nn.LayerNorm(patch_dim)  # registered before proj: the reference's key order
        return nn.Linear(patch_dim, embed_dim)

    def shifted(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 5C, H, W): x, then 4 copies of it shifted by half a patch along
        the diagonals, named as the reference's (lu[i, j] = x[i - p/2, j - p/2], ...), zeros
        where a copy has moved off the image."""
        (sh, sw), (H, W) = self.shift, x.shape[-2:]
        xp = F.pad(x, (sw, sw, sh, sh))  # (B, C, H + 2sh, W + 2sw)
        lu = xp[:, :, :H, :W]  # lu[i, j] = x[i - sh, j - sw]: the reference's x_lu
        ru = xp[:, :, :H, 2 * sw :]  # x[i - sh, j + sw]
        lb = xp[:, :, 2 * sh :, :W]  # x[i + sh, j - sw]
        rb = xp[:, :, 2 * sh :, 2 * sw :]  # x[i + sh, j + sw]
        return torch.cat([x, lu, ru, lb, rb], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shifted(x)  # (B, 5C, H, W)
        B, C5, H, W = x.shape
        (ph, pw), (gh, gw) = self.patch_size, (H // self.patch_size[0], W // self.patch_size[1])
        x = x.reshape(B, C5, gh, ph, gw, pw).permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, ph, pw, 5C)
        x = x.reshape(B, gh * gw, ph * pw * C5)  # the reference's 'b (h w) (p1 p2 c)'
        return self.proj(self.norm(x))  # (B, N_patches, D)


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

    def _qkv(self, x: torch.Tensor, first_only: int = 0) -> tuple[torch.Tensor, ...]:
        """3 × (B, heads, N, head_dim); with first_only=k, the queries of the first k tokens."""
        if first_only:
            D = x.shape[-1]
            w_q, w_kv = self.qkv.weight.split([D, 2 * D])
            b_q, b_kv = (None, None) if self.qkv.bias is None else self.qkv.bias.split([D, 2 * D])
            (q,) = self._heads(F.linear(x[:, :first_only], w_q, b_q), 1)
            k, v = self._heads(F.linear(x, w_kv, b_kv), 2)
        else:
            q, k, v = self._heads(self.qkv(x), 3)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    def forward(self, x: torch.Tensor, first_only: int = 0) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); with first_only=k (True is 1), (B, k, D): the outputs for the
        first k tokens alone, whose queries still attend to every token's key and value."""
        B, _, D = x.shape
        q, k, v = self._qkv(x, first_only)
        dropout_p = self.attn_drop.p if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, heads, N, head_dim)
        x = x.transpose(1, 2).reshape(B, q.shape[2], D)
        return self.proj_drop(self.proj(x))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """softmax(q kᵀ / √d) of shape (B, heads, N, N), computed explicitly for visualisation only."""
        q, k, _ = self._qkv(x)
        return (q * self.scale @ k.transpose(-2, -1)).softmax(dim=-1)


class LocalitySelfAttention(Attention):
    """Locality self-attention (LSA, Lee et al. 2021): attention with a learned temperature and
    the diagonal masked, so each token attends to the others, never to itself.

    As the reference's `Attention(is_LSA=True)`: `scale` is a trained Parameter, one per head,
    started at the fixed 1/√head_dim; every token's own key is masked, [CLS] included. The
    attention sharpens where a fixed temperature and the large self-similarity keep it flat.
    Takes `Attention`'s arguments and keys, plus `scale`.
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
        super().__init__(dim, num_heads, qkv_bias, qk_norm, attn_drop, proj_drop)
        self.scale = nn.Parameter(torch.full((num_heads,), self.head_dim**-0.5))

    def _scaled_q(self, q: torch.Tensor) -> torch.Tensor:
        return q * self.scale.to(q.dtype).view(-1, 1, 1)  # (B, heads, N, hd) × (heads, 1, 1)

    @staticmethod
    def off_diagonal(n_q: int, n: int, device: torch.device) -> torch.Tensor:
        """(n_q, n) bool, True where query i may attend key j: everywhere but j == i."""
        return torch.arange(n_q, device=device)[:, None] != torch.arange(n, device=device)

    def forward(self, x: torch.Tensor, first_only: int = 0) -> torch.Tensor:
        """As `Attention.forward`; the first k tokens of first_only=k are masked from themselves."""
        B, _, D = x.shape
        q, k, v = self._qkv(x, first_only)
        mask = self.off_diagonal(q.shape[2], k.shape[2], x.device)
        dropout_p = self.attn_drop.p if self.training else 0.0
        x = F.scaled_dot_product_attention(
            self._scaled_q(q), k, v, attn_mask=mask, dropout_p=dropout_p, scale=1.0
        )  # (B, heads, N, head_dim)
        x = x.transpose(1, 2).reshape(B, q.shape[2], D)
        return self.proj_drop(self.proj(x))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, N) attention weights; the diagonal is exactly 0."""
        q, k, _ = self._qkv(x)
        logits = self._scaled_q(q) @ k.transpose(-2, -1)
        mask = self.off_diagonal(q.shape[2], k.shape[2], x.device)
        return logits.masked_fill(~mask, float("-inf")).softmax(dim=-1)


class SeqPool(nn.Module):
    """CCT's sequence pooling: a softmax over the tokens of a learned score, Linear(D, 1), then
    the tokens' weighted sum. As `TransformerClassifier(seq_pool=True)`'s `attention_pool`.

    Args:
        dim: Token dimension D.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention_pool = nn.Linear(dim, 1)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) tokens -> (B, N) pooling weights, summing to 1 over the tokens."""
        return self.attention_pool(x).squeeze(-1).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, D)."""
        return (self.weights(x).unsqueeze(1) @ x).squeeze(1)  # (B, 1, N) @ (B, N, D)


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

    Disabled options are nn.Identity, so forward has no branches. `attn_layer` is timm's: the
    attention class, `Attention` or `LocalitySelfAttention`.
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
        attn_layer: type[Attention] = Attention,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = attn_layer(dim, num_heads, qkv_bias, qk_norm, attn_drop, proj_drop)
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
