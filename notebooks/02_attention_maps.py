# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Where does a ViT look? Attention maps and rollout
#
# In every block, each attention head gives every token a probability distribution over all
# tokens (a row of a (1 + N)×(1 + N) matrix). The row of the `[CLS]` token says which patches
# that head reads from. The head reads only `[CLS]` to classify, so this row is the
# natural thing to draw.
#
# Single blocks tell only part of the story: `[CLS]` in block 3 reads tokens that are already
# mixtures from blocks 1–2. *Attention rollout* ([Abnar & Zuidema,
# 2020](https://arxiv.org/abs/2005.00928)) chains the blocks' head-averaged attention (plus
# the identity, for the residual connection) to estimate how much each input patch flows into
# the final `[CLS]`.
#
# The model comes from `VIT_CHECKPOINT` (a checkpoint from `python -m vit_lightning fit ...`)
# when set; otherwise a tiny ViT is trained here for about 15 s on Fashion-MNIST (synthetic
# images when Fashion-MNIST is not installed). A model with `global_pool="avg"`, such as
# `configs/fashion_mnist.yaml`'s, classifies from the mean of the patch tokens; its `[CLS]`
# attention still shows what `[CLS]` gathers, but not what the head reads.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader

from vit_lightning.analysis import viz
from vit_lightning.analysis.tutorial import (
    STEPS,
    accuracy,
    checkpoint_from_env,
    datamodule_from_checkpoint,
    load_data,
    quiet_lightning,
    train_tiny_vit,
)
from vit_lightning.module import ViTClassifier

CHECKPOINT = checkpoint_from_env()  # $VIT_CHECKPOINT, e.g. runs/fashion_mnist/checkpoints/last.ckpt
quiet_lightning()  # a quieter Trainer

# %%
if CHECKPOINT:
    net = ViTClassifier.load_from_checkpoint(CHECKPOINT, map_location="cpu").net.eval()
    dm = datamodule_from_checkpoint(CHECKPOINT)
else:
    dm = load_data()
    net = train_tiny_vit(dm, STEPS)  # about 15 s on 2 CPU cores
print(f"validation accuracy (first 1000 images): {accuracy(net, dm.val_set):.1%}")
print(f"{net.patch_embed.grid_size} patch grid, {len(net.blocks)} blocks")
if net.global_pool != "token":
    print(f"global_pool={net.global_pool!r}: the head reads the patch tokens, not [CLS]")

# %% [markdown]
# ## 1 · The attention matrices
#
# `net.attention_maps(x)` recomputes the forward pass with an explicit softmax and returns one
# (B, heads, 1 + N, 1 + N) tensor per block. Row *i* is what token *i* reads; every row sums to
# 1. Below: the head-averaged matrix of the first and the last block for one image. Row 0 is
# `[CLS]`.

# %%
x, y = next(
    iter(
        DataLoader(
            dm.val_set, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)
        )
    )
)
maps = net.attention_maps(x)  # depth x (B, heads, 1 + N, 1 + N)
torch.testing.assert_close(maps[0].sum(dim=-1), torch.ones(maps[0].shape[:-1]))
print(len(maps), "blocks of", tuple(maps[0].shape))

fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for ax, b in zip(axes, [0, len(maps) - 1], strict=True):
    im = ax.imshow(maps[b][0].mean(dim=0), cmap="inferno")
    ax.set(
        title=f"block {b}, mean over heads", xlabel="key token (0 = [CLS])", ylabel="query token"
    )
    fig.colorbar(im, ax=ax, shrink=0.8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2 · Per-head [CLS] attention and rollout
#
# `viz.cls_attention(net, x)` takes row 0 of the last block, drops the `[CLS]` column and folds
# the rest back onto the patch grid: (B, heads, rows, cols). `viz.attention_rollout` chains all
# blocks. Each row of the figure: the image, the rollout over it, then each head of the last
# block. The heads differ: some read a few patches on the object, others its outline or
# the background around it.

# %%
heads = viz.cls_attention(net, x)  # (B, heads, rows, cols), last block
rollout = viz.attention_rollout(net, x)  # (B, rows, cols), sums to 1 per image
images = viz.to_display(x, dm.mean, dm.std)  # (B, H, W, C) in [0, 1]
fig = viz.attention_figure(images[:6], heads[:6], rollout[:6])
plt.show()

# %% [markdown]
# How `[CLS]` attention changes with depth, for one image: block by block (mean over heads),
# then the rollout that combines them.

# %%
i = 0
fig, axes = plt.subplots(1, len(maps) + 2, figsize=(1.8 * (len(maps) + 2), 2.2))
axes[0].imshow(images[i].squeeze(-1), cmap="gray")
axes[0].set_title(dm.class_names[y[i]], fontsize=8)
for b in range(len(maps)):
    cls_map = viz.cls_attention(net, x[i : i + 1], block=b).mean(dim=1)  # (1, rows, cols)
    axes[b + 1].imshow(cls_map[0], cmap="inferno")
    axes[b + 1].set_title(f"block {b}", fontsize=8)
axes[-1].imshow(rollout[i], cmap="inferno")
axes[-1].set_title("rollout", fontsize=8)
for ax in axes:
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3 · Predictions next to labels
#
# Title: predicted class (probability), then the true class; green when right, red when wrong.

# %%
with torch.no_grad():
    probs = net(x).softmax(dim=-1)
fig = viz.prediction_grid(images, probs, y, dm.class_names)
plt.show()
print(f"{(probs.argmax(dim=-1) == y).sum().item()}/{len(y)} right")
