"""The fixed 2-D sin-cos position embedding of MoCo v3 and MAE: `VisionTransformer(pos_embed='sincos')`.

Not trained: each patch's entry encodes its (row, column) at geometric frequencies, so the model
starts with a notion of 2-D distance that a learned table has to discover. Equal to timm's
`timm.layers.build_sincos2d_pos_embed(grid, dim, interleave_sin_cos=True)`; this file never
imports timm (`tests/test_vit_variants.py` checks the equality).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vit_lightning.errors import ConfigError

__all__ = ["build_sincos2d_pos_embed"]


def build_sincos2d_pos_embed(
    feat_shape: Sequence[int],
    dim: int,
    temperature: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(H*W, dim) embedding for an H×W grid, rows in the patch tokens' row-major order.

    The channels are four blocks of dim/4: sin(h ω), cos(h ω), sin(w ω), cos(w ω), for the row h,
    the column w and ω_i = temperature^(-i / (dim/4)). That is MoCo v3's layout; MAE's is the same
    with the two halves swapped (column first). It matters only to load one into the other.

    Args:
        feat_shape: The patch grid (H, W).
        dim: Embedding dimension; a multiple of 4.
        temperature: Longest wavelength, in patches, over 2π.
        device: Device of the result.
        dtype: Dtype of the result; computed in float32.
    """
    if dim % 4:
        raise ConfigError(
            f"embed_dim={dim} must be divisible by 4 for pos_embed='sincos' (sin and cos of the "
            f"row and of the column); use another embed_dim or pos_embed='learn'"
        )
    pos_dim = dim // 4
    exp = torch.arange(pos_dim, device=device).to(torch.float32) / pos_dim
    omega = 1.0 / (temperature**exp)  # (dim/4,), the same float ops as timm's freq_bands
    h, w = feat_shape
    rows, cols = (torch.arange(s, device=device).to(torch.float32) for s in (h, w))
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij")).flatten(1).T  # (H*W, 2): (h, w)
    angles = grid.unsqueeze(-1) * omega  # (H*W, 2, dim/4)
    return torch.stack([angles.sin(), angles.cos()], dim=2).flatten(1).to(dtype)  # (H*W, dim)
