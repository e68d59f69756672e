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
# # 01 · A Vision Transformer, one step at a time
#
# A Vision Transformer (ViT, [Dosovitskiy et al., 2020](https://arxiv.org/abs/2010.11929))
# classifies an image in five steps:
#
# 1. **cut** the image into non-overlapping *p×p* patches and map each to a *D*-dim token;
# 2. **prepend** a learnable `[CLS]` token;
# 3. **add** learnable position embeddings (attention alone does not know where a token is);
# 4. **mix** the tokens with a stack of Transformer encoder blocks;
# 5. **classify** from the final `[CLS]` token with a linear head.
#
# This notebook runs each step by hand with the modules of `vit_lightning.VisionTransformer`
# and checks that the result is exactly `net(x)`. Then it looks at what training puts into the
# position embeddings, and at the per-block DropPath (stochastic depth) rates.
#
# Runs offline on a CPU in well under a minute. Set `VIT_CHECKPOINT` to a checkpoint from
# `python -m vit_lightning fit ...` to look at its position embeddings instead of training a
# tiny model here.

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vit_lightning import VisionTransformer
from vit_lightning.analysis import viz
from vit_lightning.analysis.tutorial import (
    ARCH,
    STEPS,
    accuracy,
    checkpoint_from_env,
    load_data,
    quiet_lightning,
    train_tiny_vit,
)
from vit_lightning.models.vit import DropPath, drop_path_rates
from vit_lightning.module import ViTClassifier

CHECKPOINT = checkpoint_from_env()  # $VIT_CHECKPOINT, e.g. runs/fashion_mnist/checkpoints/last.ckpt
quiet_lightning()  # a quieter Trainer

# %% [markdown]
# We use Fashion-MNIST (28×28 grayscale clothes, 10 classes) when it is installed, and a
# synthetic stand-in otherwise. The model: 4×4 patches, so a 7×7 grid of 49 patch tokens of
# dimension D = 64, three blocks of four heads. `eval()` turns dropout and DropPath off, so
# the forward pass is deterministic and we can compare results exactly.

# %%
torch.manual_seed(0)
dm = load_data(augment="crop_flip")  # the augmentation only matters for training, in part 6
x, y = next(iter(DataLoader(dm.val_set, batch_size=8)))  # (B, C, H, W) normalised, labels
net = VisionTransformer(
    img_size=dm.img_size, in_chans=dm.in_chans, num_classes=dm.num_classes, **ARCH
).eval()
B, C, H, W = x.shape
p = net.patch_embed.patch_size[0]
rows, cols = net.patch_embed.grid_size
D = net.embed_dim
print("ARCH =", ARCH)  # vit_lightning.analysis.tutorial's tiny ViT, shared with notebook 02
print(f"x {tuple(x.shape)}; {rows}x{cols} patches of {p}x{p}; D={D}")
print(f"{sum(t.numel() for t in net.parameters()):,} parameters")

# %% [markdown]
# ## 1 · Patches to tokens
#
# Cutting the image into patches and flattening each one gives a matrix of shape
# (N, C·p·p), one row per patch in row-major order. A linear layer then maps every row to D
# numbers. `F.unfold` does the cutting. A convolution with kernel = stride = p computes exactly
# the same thing in one call, and that is how `patch_embed.proj` is implemented. Below we do it
# both ways with the conv's own weights and check that the two agree.

# %%
patches = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, N, C*p*p)
weight = net.patch_embed.proj.weight  # (D, C, p, p): one p x p filter per output dimension
bias = net.patch_embed.proj.bias
tokens_matmul = patches @ weight.reshape(D, -1).T + bias  # (B, N, D)

tokens_conv = net.patch_embed.proj(x)  # (B, D, rows, cols)
tokens_conv = tokens_conv.flatten(2).transpose(1, 2)  # (B, N, D), row-major over the grid

torch.testing.assert_close(tokens_matmul, tokens_conv, rtol=1e-4, atol=1e-5)
torch.testing.assert_close(net.patch_embed(x), tokens_conv)
print("unfold + matmul == strided conv:", tuple(tokens_conv.shape))

# %%
image = viz.to_display(x[:1], dm.mean, dm.std)[0, ..., 0]  # (H, W) in [0, 1]
fig, axes = plt.subplots(1, 3, figsize=(12, 4), gridspec_kw={"width_ratios": [1.2, 0.6, 1.6]})
axes[0].imshow(image, cmap="gray")
for k in range(1, rows):
    axes[0].axhline(k * p - 0.5, color="tab:orange", lw=1)
for k in range(1, cols):
    axes[0].axvline(k * p - 0.5, color="tab:orange", lw=1)
for i in range(rows * cols):
    r, c = divmod(i, cols)
    axes[0].text(
        c * p + p / 2 - 0.5,
        r * p + p / 2 - 0.5,
        i,
        color="tab:orange",
        ha="center",
        va="center",
        fontsize=7,
    )
axes[0].set_title(f"{dm.class_names[y[0]]}: {rows}x{cols} patches of {p}x{p}")
axes[1].imshow(patches[0], aspect="auto", cmap="gray")
axes[1].set(title="unfolded: N x (C·p·p)", xlabel="pixel in patch", ylabel="patch")
axes[2].imshow(tokens_conv[0].detach(), aspect="auto", cmap="coolwarm")
axes[2].set(title="tokens: N x D", xlabel="embedding dimension", ylabel="patch")
axes[0].axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2 · Prepend the [CLS] token
#
# A single learnable vector `cls_token` of shape (1, 1, D), the same for every image, is put
# in front of the patch tokens. It has no pixels of its own; through attention it gathers
# what the classifier needs, and the head reads only this token (`global_pool="token"`; with
# `global_pool="avg"` the head averages the patch tokens instead).

# %%
cls = net.cls_token.expand(B, -1, -1)  # (B, 1, D)
tokens = torch.cat([cls, tokens_conv], dim=1)  # (B, 1 + N, D)
print(tuple(tokens.shape))

# %% [markdown]
# ## 3 · Add position embeddings
#
# Self-attention treats its input as a *set*: shuffle the patches and every token's output is
# shuffled the same way. To let the model know where a patch came from, a learnable vector per
# position (`pos_embed`, shape (1, 1 + N, D)) is added. `pos_drop` is dropout, an identity in
# eval mode. The model's own `_pos_embed` does steps 2 and 3 together.

# %%
tokens = net.pos_drop(tokens + net.pos_embed)
torch.testing.assert_close(tokens, net._pos_embed(net.patch_embed(x), (rows, cols)))
print(tuple(net.pos_embed.shape))

# %% [markdown]
# ## 4 · The Transformer encoder
#
# Each block is *pre-norm*: `x = x + attn(norm1(x))`, then `x = x + mlp(norm2(x))`.
# (DropPath, `drop_path1/2`, and LayerScale, `ls1/2`, sit on the residual branches; here
# they are identities.)
#
# Attention, written out for the first block: each head projects every token to a query
# *q*, a key *k* and a value *v* (each D/heads wide). Token *i* takes a weighted average of all
# values, with weights softmax(q_i · k_j / √d) over *j*. The heads' outputs are concatenated
# and projected back to D. The model runs the fused `F.scaled_dot_product_attention` kernel;
# our explicit version must give the same numbers.

# %%
blk = net.blocks[0]
z = blk.norm1(tokens)
heads, hd = blk.attn.num_heads, blk.attn.head_dim
N = z.shape[1]
q, k, v = blk.attn.qkv(z).reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)  # (B, h, N, hd)
weights = (q @ k.transpose(-2, -1) / math.sqrt(hd)).softmax(dim=-1)  # (B, heads, N, N)
mixed = (weights @ v).transpose(1, 2).reshape(B, N, D)  # heads side by side
attn_out = blk.attn.proj(mixed)
torch.testing.assert_close(attn_out, blk.attn(z), rtol=1e-4, atol=1e-5)

h = tokens + blk.drop_path1(blk.ls1(attn_out))  # residual 1
h = h + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(h))))  # residual 2: per-token MLP
torch.testing.assert_close(h, blk(tokens), rtol=1e-4, atol=1e-5)

for blk in net.blocks[1:]:  # the other blocks, as modules
    h = blk(h)
h = net.norm(h)  # final LayerNorm
torch.testing.assert_close(h, net.forward_features(x), rtol=1e-4, atol=1e-5)
print("attention weights", tuple(weights.shape), "-> features", tuple(h.shape))

# %% [markdown]
# ## 5 · Head and loss
#
# The head is one linear layer on the final `[CLS]` token. Cross-entropy compares its logits
# with the labels. An untrained model is close to uniform over the 10 classes, so the loss is
# near ln 10 ≈ 2.30.

# %%
pooled = h[:, 0]  # global_pool="token": the [CLS] token
logits = net.head(net.head_drop(net.fc_norm(pooled)))  # fc_norm is used by "avg" pooling
loss = F.cross_entropy(logits, y)
print(f"logits {tuple(logits.shape)}, loss {loss.item():.3f} (ln 10 = {math.log(10):.3f})")

torch.testing.assert_close(logits, net(x), rtol=1e-4, atol=1e-5)
torch.testing.assert_close(logits, net.forward_head(net.forward_features(x)))
print("step by step == net(x)")

# %% [markdown]
# ## 6 · What the position embeddings learn
#
# `pos_embed` starts as small random noise, so no two positions are alike. Training makes
# positions that play similar roles similar. Below, one small map per patch position, laid
# out like the grid: the cosine similarity of that position's embedding to every position's.
#
# What appears depends on the data. Here a tiny model is trained for a few hundred steps
# with random 2-pixel shifts and left-right flips: positions group by what usually lies there
# (the garment's body in the middle, background at the sides), and mirror-image positions
# look alike because of the flips. Longer runs on varied images also show locality: nearby
# patches, the same row or column. Set `VIT_CHECKPOINT` to look at a model of your own, e.g.
# the 40-epoch `configs/fashion_mnist.yaml` run.

# %%
if CHECKPOINT:
    trained = ViTClassifier.load_from_checkpoint(CHECKPOINT, map_location="cpu").net.eval()
else:
    trained = train_tiny_vit(dm, STEPS)  # about 15 s on 2 CPU cores
    print(f"validation accuracy (first 1000 images): {accuracy(trained, dm.val_set):.1%}")

# %%
g_rows, g_cols = trained.patch_embed.grid_size
pos = trained.pos_embed[0, trained.num_prefix_tokens :].detach()  # drop [CLS]'s entry
pos = F.normalize(pos, dim=-1)
sim = pos @ pos.T  # (N, N) cosine similarities
others = sim[~torch.eye(len(sim), dtype=torch.bool)]  # the colour scale ignores sim(i, i) = 1

fig, axes = plt.subplots(g_rows, g_cols, figsize=(6, 6), squeeze=False)
for i, ax in enumerate(axes.flat):
    im = ax.imshow(sim[i].reshape(g_rows, g_cols), vmin=others.min(), vmax=others.max())
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(im, ax=axes, shrink=0.6, label="cosine similarity")
fig.suptitle("position embedding similarity: row r, column c = patch (r, c) vs all patches")
plt.show()

# %% [markdown]
# ## 7 · DropPath: stochastic depth per block
#
# DropPath regularises deep ViTs: during training each residual branch is skipped for a random
# subset of samples (and the kept ones are scaled by 1/(1 − rate), so the expectation is
# unchanged). It is identity at eval time. Deeper blocks are dropped more often: the rate
# rises linearly from 0 at the first block to `drop_path_rate` at the last (timm's rule).

# %%
torch.manual_seed(0)
dp = DropPath(0.5).train()
print("train:", dp(torch.ones(8, 1)).flatten().tolist())  # each sample kept (x2) or dropped
print("eval: ", dp.eval()(torch.ones(8, 1)).flatten().tolist())

deep = VisionTransformer(
    img_size=28,
    patch_size=7,
    in_chans=1,
    num_classes=10,
    embed_dim=32,
    depth=12,
    num_heads=2,
    drop_path_rate=0.1,
)
# block 0's rate is 0, and a rate of 0 builds nn.Identity, which has no drop_prob
rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in deep.blocks]
assert rates == drop_path_rates(0.1, 12)

fig, ax = plt.subplots(figsize=(6, 2.5))
ax.bar(range(len(rates)), rates, color="tab:blue")
ax.set(xlabel="block", ylabel="drop rate", title="DropPath rate per block (drop_path_rate=0.1)")
ax.set_xticks(range(len(rates)))
plt.show()

# %% [markdown]
# **Next:** `02_attention_maps.ipynb` looks at what the trained attention heads look at, and
# `03_compare_runs.ipynb` compares training runs logged to W&B.
