"""Pictures of a ViT and its predictions: attention from [CLS], attention rollout, prediction
grids, confusion matrices. Shared by the `ValPictures` callback and the notebooks. Needs
matplotlib."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def patch_grid(net: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(rows, cols) of the token grid the network makes of `x` (a conv tokenizer's too)."""
    embed = net.patch_embed
    if hasattr(embed, "dynamic_feat_size"):
        return tuple(embed.dynamic_feat_size(tuple(x.shape[-2:])))
    ph, pw = embed.patch_size
    return x.shape[-2] // ph, x.shape[-1] // pw


@torch.no_grad()
def cls_attention(net: nn.Module, x: torch.Tensor, block: int = -1) -> torch.Tensor:
    """Attention from [CLS] to every patch in one block: (B, heads, rows, cols), rows sum to <= 1.

    Needs `net.attention_maps` (vit_lightning's VisionTransformer) and a class token.
    """
    attn = net.attention_maps(x)[block]  # (B, heads, N, N)
    rows, cols = patch_grid(net, x)
    start = attn.shape[-1] - rows * cols  # skip [CLS] (and any register tokens)
    return attn[:, :, 0, start:].reshape(*attn.shape[:2], rows, cols)


@torch.no_grad()
def attention_rollout(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Abnar & Zuidema's attention rollout from [CLS]: (B, rows, cols), summing to 1 per image.

    Each block's head-averaged attention gets the residual (0.5 A + 0.5 I) and the products are
    chained from the first block to the last.
    """
    maps = net.attention_maps(x)
    n = maps[0].shape[-1]
    eye = torch.eye(n, device=x.device)
    rollout = eye.expand(x.shape[0], n, n)
    for attn in maps:
        a = 0.5 * attn.mean(dim=1) + 0.5 * eye
        rollout = (a / a.sum(dim=-1, keepdim=True)) @ rollout
    rows, cols = patch_grid(net, x)
    cls = rollout[:, 0, n - rows * cols :].reshape(-1, rows, cols)
    return cls / cls.sum(dim=(-2, -1), keepdim=True)


def to_display(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised (B, C, H, W) -> (B, H, W, C) in [0, 1] for imshow."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1).permute(0, 2, 3, 1).cpu()


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, rows, cols) -> (B, H, W), nearest patch blocks (what the model actually sees)."""
    return F.interpolate(maps[:, None].float(), size=size, mode="nearest")[:, 0].cpu()


def prediction_grid(images, probs, targets, class_names, cols: int = 8):
    """Images titled 'pred (p) / true', green when right, red when wrong. Returns a Figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    conf, pred = probs.max(dim=-1)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray")
        p, t = int(pred[i]), int(targets[i])
        right = p == t
        title = f"{class_names[p]} ({conf[i]:.2f})\n{class_names[t]}"
        ax.set_title(title, fontsize=7, color="green" if right else "red")
    fig.tight_layout()
    return fig


def attention_figure(images, heads: torch.Tensor, rollout: torch.Tensor):
    """Per image, one row: the image, the rollout overlay, then each head's [CLS] attention."""
    import matplotlib.pyplot as plt

    n, h = heads.shape[:2]
    size = tuple(images.shape[1:3])
    fig, axes = plt.subplots(n, h + 2, figsize=(1.5 * (h + 2), 1.5 * n), squeeze=False)
    roll, head_maps = upsample(rollout, size), upsample(heads.flatten(0, 1), size)
    for i in range(n):
        img = images[i].squeeze(-1) if images.shape[-1] == 1 else images[i]
        axes[i, 0].imshow(img, cmap="gray")
        axes[i, 1].imshow(img, cmap="gray")
        axes[i, 1].imshow(roll[i], cmap="inferno", alpha=0.6)
        for j in range(h):
            axes[i, j + 2].imshow(head_maps[i * h + j], cmap="inferno")
        for ax in axes[i]:
            ax.axis("off")
    axes[0, 0].set_title("image", fontsize=7)
    axes[0, 1].set_title("rollout", fontsize=7)
    for j in range(h):
        axes[0, j + 2].set_title(f"head {j}", fontsize=7)
    fig.tight_layout()
    return fig


def confusion_figure(confmat: torch.Tensor, class_names: list[str]):
    """Row-normalised confusion matrix (rows: true class), counts in the cells."""
    import matplotlib.pyplot as plt

    n = len(class_names)
    rates = confmat.float() / confmat.sum(dim=1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(0.5 * n + 2, 0.5 * n + 1.5))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                c = int(confmat[i, j])
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, c, ha="center", va="center", fontsize=6, color=color)
    fig.tight_layout()
    return fig
