"""Build the tutorial notebooks from the cell sources below: `python notebooks/make_notebooks.py`.

Edit the cells here, never the .ipynb files, then rerun this script. The notebooks are written
without outputs and with fixed cell ids, so the same sources always give byte-identical files
(tests/test_notebooks.py checks that the committed notebooks match, and that each one runs).

Cells are Python source strings: `md(...)` for markdown, `code(...)` for code. Code shared by two
notebooks (finding the data, getting a trained model) is written once below and used in both.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(textwrap.dedent(text).strip())


# ---------------------------------------------------------------------------------------------
# Shared cells
# ---------------------------------------------------------------------------------------------

LOAD_DATA = '''
def load_data(augment="none", batch_size=128):
    """Fashion-MNIST (28x28 grayscale) when its files can be found, else look-alike synthetic data."""
    dm = FashionMNISTDataModule(
        DATA_DIR, download=False, augment=augment, batch_size=batch_size, num_workers=0
    )
    try:
        dm.prepare_data()  # finds Debian's /usr/share/datasets/fashion-mnist, no network needed
        dm.setup("fit")
    except (FileNotFoundError, RuntimeError) as e:
        print(f"Fashion-MNIST not found ({type(e).__name__}): using synthetic 28x28 images.")
        dm = SyntheticDataModule(
            num_classes=10, img_size=28, in_chans=1, train_size=8192, val_size=512,
            batch_size=batch_size, num_workers=0,
        )  # fmt: skip
        dm.setup("fit")
    return dm


def checkpoint_path(path):
    """A checkpoint path as given, or relative to the repository (e.g. runs/.../last.ckpt)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() or path.exists() else REPO / path
'''

TRAIN_TINY = '''
def train_tiny_vit(dm, steps):
    """A small ViT trained for `steps` optimizer steps with the project's LightningModule."""
    L.seed_everything(0, verbose=False)
    net = VisionTransformer(
        img_size=dm.img_size, in_chans=dm.in_chans, num_classes=dm.num_classes, **ARCH
    )
    # warmup_epochs counts epochs of the planned run; with max_steps (and no max_epochs) the
    # whole run is one "epoch", so 0.1 warms up over the first 10% of the steps.
    model = ViTClassifier(net, lr=2e-3, warmup_epochs=0.1, label_smoothing=0.0)
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    print(f"trained {steps} steps in {time.perf_counter() - start:.0f} s")
    return net.eval()


@torch.no_grad()
def accuracy(net, dataset, n=1000):
    """Top-1 accuracy on the first n images (or all, if fewer)."""
    x, y = next(iter(DataLoader(dataset, batch_size=n)))
    return (net(x).argmax(dim=-1) == y).float().mean().item()
'''

# ---------------------------------------------------------------------------------------------
# 01: a ViT's forward pass, step by step
# ---------------------------------------------------------------------------------------------

NB01 = [
    md("""
    # 01 · A Vision Transformer, one step at a time

    A Vision Transformer (ViT, [Dosovitskiy et al., 2020](https://arxiv.org/abs/2010.11929))
    classifies an image in five steps:

    1. **cut** the image into non-overlapping *p×p* patches and map each to a *D*-dim token;
    2. **prepend** a learnable `[CLS]` token;
    3. **add** learnable position embeddings (attention alone does not know where a token is);
    4. **mix** the tokens with a stack of Transformer encoder blocks;
    5. **classify** from the final `[CLS]` token with a linear head.

    This notebook runs each step by hand with the modules of `vit_lightning.VisionTransformer`
    and checks that the result is exactly `net(x)`. Then it looks at what training puts into the
    position embeddings, and at the per-block DropPath (stochastic depth) rates.

    Runs offline on a CPU in well under a minute. Set `VIT_CHECKPOINT` to a checkpoint from
    `python -m vit_lightning fit ...` to look at its position embeddings instead of training a
    tiny model here.
    """),
    code("""
    %matplotlib inline
    import logging
    import math
    import os
    import time
    from pathlib import Path

    import lightning as L
    import matplotlib.pyplot as plt
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    import vit_lightning
    from vit_lightning import VisionTransformer, viz
    from vit_lightning.data import FashionMNISTDataModule, SyntheticDataModule
    from vit_lightning.module import ViTClassifier
    from vit_lightning.vit import DropPath, drop_path_rates

    REPO = Path(vit_lightning.__file__).resolve().parents[1]  # the checkout, wherever we run
    DATA_DIR = os.environ.get("VIT_DATA_DIR", str(REPO / "data"))  # the CLI configs' ./data
    CHECKPOINT = os.environ.get("VIT_CHECKPOINT")  # e.g. runs/fashion_mnist/checkpoints/last.ckpt
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # a quieter Trainer
    """),
    code(LOAD_DATA),
    md("""
    We use Fashion-MNIST (28×28 grayscale clothes, 10 classes) when it is installed, and a
    synthetic stand-in otherwise. The model: 4×4 patches, so a 7×7 grid of 49 patch tokens of
    dimension D = 64, three blocks of four heads. `eval()` turns dropout and DropPath off, so
    the forward pass is deterministic and we can compare results exactly.
    """),
    code("""
    torch.manual_seed(0)
    dm = load_data(augment="crop_flip")  # the augmentation only matters for training, in part 6
    x, y = next(iter(DataLoader(dm.val_set, batch_size=8)))  # (B, C, H, W) normalised, labels
    ARCH = dict(patch_size=4, embed_dim=64, depth=3, num_heads=4, mlp_ratio=2.0)
    net = VisionTransformer(
        img_size=dm.img_size, in_chans=dm.in_chans, num_classes=dm.num_classes, **ARCH
    ).eval()
    B, C, H, W = x.shape
    p = net.patch_embed.patch_size[0]
    rows, cols = net.patch_embed.grid_size
    D = net.embed_dim
    print(f"x {tuple(x.shape)}; {rows}x{cols} patches of {p}x{p}; D={D}")
    print(f"{sum(t.numel() for t in net.parameters()):,} parameters")
    """),
    md("""
    ## 1 · Patches to tokens

    Cutting the image into patches and flattening each one gives a matrix of shape
    (N, C·p·p), one row per patch in row-major order. A linear layer then maps every row to D
    numbers. `F.unfold` does the cutting. A convolution with kernel = stride = p computes exactly
    the same thing in one call, and that is how `patch_embed.proj` is implemented. Below we do it
    both ways with the conv's own weights and check that the two agree.
    """),
    code("""
    patches = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, N, C*p*p)
    weight = net.patch_embed.proj.weight  # (D, C, p, p): one p x p filter per output dimension
    bias = net.patch_embed.proj.bias
    tokens_matmul = patches @ weight.reshape(D, -1).T + bias  # (B, N, D)

    tokens_conv = net.patch_embed.proj(x)  # (B, D, rows, cols)
    tokens_conv = tokens_conv.flatten(2).transpose(1, 2)  # (B, N, D), row-major over the grid

    torch.testing.assert_close(tokens_matmul, tokens_conv, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net.patch_embed(x), tokens_conv)
    print("unfold + matmul == strided conv:", tuple(tokens_conv.shape))
    """),
    code("""
    image = viz.to_display(x[:1], dm.mean, dm.std)[0, ..., 0]  # (H, W) in [0, 1]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), gridspec_kw={"width_ratios": [1.2, 0.6, 1.6]})
    axes[0].imshow(image, cmap="gray")
    for k in range(1, rows):
        axes[0].axhline(k * p - 0.5, color="tab:orange", lw=1)
    for k in range(1, cols):
        axes[0].axvline(k * p - 0.5, color="tab:orange", lw=1)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        axes[0].text(c * p + p / 2 - 0.5, r * p + p / 2 - 0.5, i, color="tab:orange",
                     ha="center", va="center", fontsize=7)  # fmt: skip
    axes[0].set_title(f"{dm.class_names[y[0]]}: {rows}x{cols} patches of {p}x{p}")
    axes[1].imshow(patches[0], aspect="auto", cmap="gray")
    axes[1].set(title="unfolded: N x (C·p·p)", xlabel="pixel in patch", ylabel="patch")
    axes[2].imshow(tokens_conv[0].detach(), aspect="auto", cmap="coolwarm")
    axes[2].set(title="tokens: N x D", xlabel="embedding dimension", ylabel="patch")
    axes[0].axis("off")
    fig.tight_layout()
    plt.show()
    """),
    md("""
    ## 2 · Prepend the [CLS] token

    A single learnable vector `cls_token` of shape (1, 1, D), the same for every image, is put
    in front of the patch tokens. It has no pixels of its own; through attention it gathers
    what the classifier needs, and the head reads only this token (`global_pool="token"`; with
    `global_pool="avg"` the head averages the patch tokens instead).
    """),
    code("""
    cls = net.cls_token.expand(B, -1, -1)  # (B, 1, D)
    tokens = torch.cat([cls, tokens_conv], dim=1)  # (B, 1 + N, D)
    print(tuple(tokens.shape))
    """),
    md("""
    ## 3 · Add position embeddings

    Self-attention treats its input as a *set*: shuffle the patches and every token's output is
    shuffled the same way. To let the model know where a patch came from, a learnable vector per
    position (`pos_embed`, shape (1, 1 + N, D)) is added. `pos_drop` is dropout, an identity in
    eval mode. The model's own `_pos_embed` does steps 2 and 3 together.
    """),
    code("""
    tokens = net.pos_drop(tokens + net.pos_embed)
    torch.testing.assert_close(tokens, net._pos_embed(net.patch_embed(x), (rows, cols)))
    print(tuple(net.pos_embed.shape))
    """),
    md("""
    ## 4 · The Transformer encoder

    Each block is *pre-norm*: `x = x + attn(norm1(x))`, then `x = x + mlp(norm2(x))`.
    (DropPath, `drop_path1/2`, and LayerScale, `ls1/2`, sit on the residual branches; here
    they are identities.)

    Attention, written out for the first block: each head projects every token to a query
    *q*, a key *k* and a value *v* (each D/heads wide). Token *i* takes a weighted average of all
    values, with weights softmax(q_i · k_j / √d) over *j*. The heads' outputs are concatenated
    and projected back to D. The model runs the fused `F.scaled_dot_product_attention` kernel;
    our explicit version must give the same numbers.
    """),
    code("""
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
    """),
    md("""
    ## 5 · Head and loss

    The head is one linear layer on the final `[CLS]` token. Cross-entropy compares its logits
    with the labels. An untrained model is close to uniform over the 10 classes, so the loss is
    near ln 10 ≈ 2.30.
    """),
    code("""
    pooled = h[:, 0]  # global_pool="token": the [CLS] token
    logits = net.head(net.head_drop(net.fc_norm(pooled)))  # fc_norm is used by "avg" pooling
    loss = F.cross_entropy(logits, y)
    print(f"logits {tuple(logits.shape)}, loss {loss.item():.3f} (ln 10 = {math.log(10):.3f})")

    torch.testing.assert_close(logits, net(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, net.forward_head(net.forward_features(x)))
    print("step by step == net(x)")
    """),
    md("""
    ## 6 · What the position embeddings learn

    `pos_embed` starts as small random noise, so no two positions are alike. Training makes
    positions that play similar roles similar. Below, one small map per patch position, laid
    out like the grid: the cosine similarity of that position's embedding to every position's.

    What appears depends on the data. Here a tiny model is trained for a few hundred steps
    with random 2-pixel shifts and left-right flips: positions group by what usually lies there
    (the garment's body in the middle, background at the sides), and mirror-image positions
    look alike because of the flips. Longer runs on varied images also show locality: nearby
    patches, the same row or column. Set `VIT_CHECKPOINT` to look at a model of your own, e.g.
    the 40-epoch `configs/fashion_mnist.yaml` run.
    """),
    code(TRAIN_TINY),
    code("""
    STEPS = 300  # about 15 s on 2 CPU cores
    if CHECKPOINT:
        trained = ViTClassifier.load_from_checkpoint(
            checkpoint_path(CHECKPOINT), map_location="cpu"
        ).net.eval()
    else:
        trained = train_tiny_vit(dm, STEPS)
        print(f"validation accuracy (first 1000 images): {accuracy(trained, dm.val_set):.1%}")
    """),
    code("""
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
    """),
    md("""
    ## 7 · DropPath: stochastic depth per block

    DropPath regularises deep ViTs: during training each residual branch is skipped for a random
    subset of samples (and the kept ones are scaled by 1/(1 − rate), so the expectation is
    unchanged). It is identity at eval time. Deeper blocks are dropped more often: the rate
    rises linearly from 0 at the first block to `drop_path_rate` at the last (timm's rule).
    """),
    code("""
    torch.manual_seed(0)
    dp = DropPath(0.5).train()
    print("train:", dp(torch.ones(8, 1)).flatten().tolist())  # each sample kept (x2) or dropped
    print("eval: ", dp.eval()(torch.ones(8, 1)).flatten().tolist())

    deep = VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32,
                             depth=12, num_heads=2, drop_path_rate=0.1)  # fmt: skip
    # block 0's rate is 0, and a rate of 0 builds nn.Identity, which has no drop_prob
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in deep.blocks]
    assert rates == drop_path_rates(0.1, 12)

    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.bar(range(len(rates)), rates, color="tab:blue")
    ax.set(xlabel="block", ylabel="drop rate", title="DropPath rate per block (drop_path_rate=0.1)")
    ax.set_xticks(range(len(rates)))
    plt.show()
    """),
    md("""
    **Next:** `02_attention_maps.ipynb` looks at what the trained attention heads look at, and
    `03_compare_runs.ipynb` compares training runs logged to W&B.
    """),
]

# ---------------------------------------------------------------------------------------------
# 02: attention maps
# ---------------------------------------------------------------------------------------------

NB02 = [
    md("""
    # 02 · Where does a ViT look? Attention maps and rollout

    In every block, each attention head gives every token a probability distribution over all
    tokens (a row of a (1 + N)×(1 + N) matrix). The row of the `[CLS]` token says which patches
    that head reads from. The head reads only `[CLS]` to classify, so this row is the
    natural thing to draw.

    Single blocks tell only part of the story: `[CLS]` in block 3 reads tokens that are already
    mixtures from blocks 1–2. *Attention rollout* ([Abnar & Zuidema,
    2020](https://arxiv.org/abs/2005.00928)) chains the blocks' head-averaged attention (plus
    the identity, for the residual connection) to estimate how much each input patch flows into
    the final `[CLS]`.

    The model comes from `VIT_CHECKPOINT` (a checkpoint from `python -m vit_lightning fit ...`)
    when set; otherwise a tiny ViT is trained here for about 15 s on Fashion-MNIST (synthetic
    images when Fashion-MNIST is not installed). A model with `global_pool="avg"`, such as
    `configs/fashion_mnist.yaml`'s, classifies from the mean of the patch tokens; its `[CLS]`
    attention still shows what `[CLS]` gathers, but not what the head reads.
    """),
    code("""
    %matplotlib inline
    import importlib
    import logging
    import os
    import time
    from pathlib import Path

    import lightning as L
    import matplotlib.pyplot as plt
    import torch
    from torch.utils.data import DataLoader

    import vit_lightning
    from vit_lightning import VisionTransformer, viz
    from vit_lightning.data import FashionMNISTDataModule, SyntheticDataModule
    from vit_lightning.module import ViTClassifier

    REPO = Path(vit_lightning.__file__).resolve().parents[1]  # the checkout, wherever we run
    DATA_DIR = os.environ.get("VIT_DATA_DIR", str(REPO / "data"))  # the CLI configs' ./data
    CHECKPOINT = os.environ.get("VIT_CHECKPOINT")  # e.g. runs/fashion_mnist/checkpoints/last.ckpt
    ARCH = dict(patch_size=4, embed_dim=64, depth=3, num_heads=4, mlp_ratio=2.0)
    STEPS = 300  # optimizer steps when training here: about 15 s on 2 CPU cores
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # a quieter Trainer
    """),
    code(LOAD_DATA),
    code('''
    def datamodule_from_checkpoint(path):
        """Rebuild the DataModule a CLI run trained on from the hyperparameters in its checkpoint."""
        hp = torch.load(path, map_location="cpu", weights_only=False)["datamodule_hyper_parameters"]
        module, _, name = hp["_class_path"].rpartition(".")
        args = {k: v for k, v in hp.items() if not k.startswith("_")}
        args.update(num_workers=0, predict_dir=None)
        if "data_dir" in args:  # relative to the repository, where the CLI is run from
            args.update(data_dir=str(REPO / args["data_dir"]), download=False)
        dm = getattr(importlib.import_module(module), name)(**args)
        dm.prepare_data()
        dm.setup("fit")
        return dm
    '''),
    code(TRAIN_TINY),
    code("""
    if CHECKPOINT:
        path = checkpoint_path(CHECKPOINT)
        net = ViTClassifier.load_from_checkpoint(path, map_location="cpu").net.eval()
        dm = datamodule_from_checkpoint(path)
    else:
        dm = load_data()
        net = train_tiny_vit(dm, STEPS)
    print(f"validation accuracy (first 1000 images): {accuracy(net, dm.val_set):.1%}")
    print(f"{net.patch_embed.grid_size} patch grid, {len(net.blocks)} blocks")
    if net.global_pool != "token":
        print(f"global_pool={net.global_pool!r}: the head reads the patch tokens, not [CLS]")
    """),
    md("""
    ## 1 · The attention matrices

    `net.attention_maps(x)` recomputes the forward pass with an explicit softmax and returns one
    (B, heads, 1 + N, 1 + N) tensor per block. Row *i* is what token *i* reads; every row sums to
    1. Below: the head-averaged matrix of the first and the last block for one image. Row 0 is
    `[CLS]`.
    """),
    code("""
    x, y = next(iter(DataLoader(dm.val_set, batch_size=16, shuffle=True,
                                generator=torch.Generator().manual_seed(0))))  # fmt: skip
    maps = net.attention_maps(x)  # depth x (B, heads, 1 + N, 1 + N)
    torch.testing.assert_close(maps[0].sum(dim=-1), torch.ones(maps[0].shape[:-1]))
    print(len(maps), "blocks of", tuple(maps[0].shape))

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, b in zip(axes, [0, len(maps) - 1], strict=True):
        im = ax.imshow(maps[b][0].mean(dim=0), cmap="inferno")
        ax.set(title=f"block {b}, mean over heads", xlabel="key token (0 = [CLS])",
               ylabel="query token")  # fmt: skip
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    plt.show()
    """),
    md("""
    ## 2 · Per-head [CLS] attention and rollout

    `viz.cls_attention(net, x)` takes row 0 of the last block, drops the `[CLS]` column and folds
    the rest back onto the patch grid: (B, heads, rows, cols). `viz.attention_rollout` chains all
    blocks. Each row of the figure: the image, the rollout over it, then each head of the last
    block. The heads differ: some read a few patches on the object, others its outline or
    the background around it.
    """),
    code("""
    heads = viz.cls_attention(net, x)  # (B, heads, rows, cols), last block
    rollout = viz.attention_rollout(net, x)  # (B, rows, cols), sums to 1 per image
    images = viz.to_display(x, dm.mean, dm.std)  # (B, H, W, C) in [0, 1]
    fig = viz.attention_figure(images[:6], heads[:6], rollout[:6])
    plt.show()
    """),
    md("""
    How `[CLS]` attention changes with depth, for one image: block by block (mean over heads),
    then the rollout that combines them.
    """),
    code("""
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
    """),
    md("""
    ## 3 · Predictions next to labels

    Title: predicted class (probability), then the true class; green when right, red when wrong.
    """),
    code("""
    with torch.no_grad():
        probs = net(x).softmax(dim=-1)
    fig = viz.prediction_grid(images, probs, y, dm.class_names)
    plt.show()
    print(f"{(probs.argmax(dim=-1) == y).sum().item()}/{len(y)} right")
    """),
]

# ---------------------------------------------------------------------------------------------
# 03: compare runs
# ---------------------------------------------------------------------------------------------

NB03 = [
    md("""
    # 03 · Comparing training runs

    Every `python -m vit_lightning fit` run logs its full resolved config (model, data, trainer),
    its metrics, and a summary (parameter count, throughput, best validation accuracy). This
    notebook puts several runs side by side: learning curves and a table of configs and results.

    Where the runs come from, in order:

    1. **W&B online**: with `WANDB_API_KEY` and `RUNS_PATH="entity/project"` set, through
       `wandb.Api()`;
    2. **local folders**: `RUNS_DIR` (a folder or a glob such as `runs/*`) is searched for
       offline W&B runs (`wandb/offline-run-*`, read without a server by
       `vit_lightning.wandb_offline.read_offline_run`) and for CSVLogger logs (`metrics.csv`);
    3. **a demo**: neither set, it trains three tiny models on synthetic data (the smoke config,
       3 epochs, noisier images) that differ only in learning rate, about 10 s each.
    """),
    code("""
    %matplotlib inline
    import csv
    import glob
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import matplotlib.pyplot as plt
    import yaml
    from matplotlib.ticker import MaxNLocator

    import vit_lightning
    from vit_lightning.wandb_offline import read_offline_run

    REPO = Path(vit_lightning.__file__).resolve().parents[1]
    RUNS_PATH = os.environ.get("RUNS_PATH")  # "entity/project" on W&B
    RUNS_DIR = os.environ.get("RUNS_DIR")  # folder or glob of run folders
    ONLINE = bool(os.environ.get("WANDB_API_KEY") and RUNS_PATH)
    print("source:", "W&B " + RUNS_PATH if ONLINE else RUNS_DIR or "demo runs")
    """),
    md("""
    ## Demo runs (only when no runs were given)

    The same command you would type in a shell, once per learning rate. Each run writes
    checkpoints and an offline W&B run under its `default_root_dir`.
    """),
    code("""
    if not ONLINE and not RUNS_DIR:
        RUNS_DIR = tempfile.mkdtemp(prefix="vit-runs-")
        for lr in [3e-4, 1e-3, 3e-3]:
            cmd = [sys.executable, "-m", "vit_lightning", "fit",
                   "--config", str(REPO / "configs" / "smoke.yaml"),
                   f"--trainer.default_root_dir={RUNS_DIR}/lr{lr:g}", f"--model.lr={lr}",
                   "--trainer.max_epochs=3", "--data.init_args.noise=2.0",
                   "--trainer.enable_progress_bar=false"]  # fmt: skip
            print("python", *cmd[1:])
            env = {**os.environ, "WANDB_MODE": "offline"}  # demo runs never upload
            done = subprocess.run(cmd, cwd=RUNS_DIR, env=env, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"fit failed:\\n{done.stderr[-3000:]}")
        print("runs in", RUNS_DIR)
    """),
    md("""
    ## Load the runs

    Each source becomes the same dict: `name`, nested `config`, `history` (a list of logged
    rows, e.g. `{"epoch": 1, "trainer/global_step": 31, "val/acc": 0.8}`) and `summary`.
    A run resumed from a checkpoint keeps its W&B id but writes a new offline folder; those
    pieces are joined back into one run.
    """),
    code('''
    def from_wandb_api(path):
        import wandb

        runs = wandb.Api().runs(path)
        return [
            {"name": f"{r.name} ({r.id})", "config": r.config, "history": list(r.scan_history()),
             "summary": r.summary_metrics}
            for r in runs
        ]  # fmt: skip


    def from_offline_dirs(dirs):
        """Offline W&B runs; folders of one resumed run (same id) are merged in time order."""
        runs = {}
        for d in sorted(dirs, key=lambda d: Path(d).name):  # offline-run-<time>-<id>
            r = read_offline_run(d)
            name = f"{Path(d).parents[1].name} ({r['id']})"  # <default_root_dir>/wandb/offline-run-*
            run = runs.setdefault(r["id"], {"name": name, "config": {}, "history": [], "summary": {}})
            run["config"].update(r["config"])
            run["history"] += r["history"]
            run["summary"].update(r["summary"])
        return list(runs.values())


    def from_csv(metrics_csv):
        """A CSVLogger folder: metrics.csv, and hparams.yaml with the config (the CLI logs it)."""
        folder = Path(metrics_csv).parent
        with open(metrics_csv, newline="") as f:
            history = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
        for row in history:
            if "step" in row:
                row["trainer/global_step"] = row.pop("step")  # the name W&B uses
        hparams = folder / "hparams.yaml"
        config = yaml.safe_load(hparams.read_text()) if hparams.is_file() else {}
        summary = {k: v for row in history for k, v in row.items()}  # last value of each key
        summary.update((config or {}).get("run") or {})  # params, device, ... (RunSummary)
        name = "/".join(folder.parts[-3:])  # <save_dir>/<name>/version_<n>
        return {"name": name, "config": config or {}, "history": history, "summary": summary}


    if ONLINE:
        runs = from_wandb_api(RUNS_PATH)
    else:
        roots = sorted(glob.glob(os.path.expanduser(RUNS_DIR))) or [RUNS_DIR]
        found = {
            pattern: sorted({f for root in roots
                             for f in glob.glob(os.path.join(root, "**", pattern), recursive=True)})
            for pattern in ["offline-run-*", "metrics.csv"]
        }  # fmt: skip
        offline = [d for d in found["offline-run-*"] if os.path.isdir(d)]
        runs = from_offline_dirs(offline) + [from_csv(f) for f in found["metrics.csv"]]
    assert runs, f"no runs found in {RUNS_PATH if ONLINE else RUNS_DIR}"
    for run in runs:
        print(f"{run['name']}: {len(run['history'])} history rows")
    '''),
    md("""
    ## Learning curves

    Validation metrics are logged once per epoch, training loss and learning rate every few
    steps (`trainer.log_every_n_steps`). The learning-rate panel is a quick check that warmup and
    cosine decay did what the config asked.
    """),
    code("""
    def series(run, key, x):
        points = [(row[x], row[key]) for row in run["history"]
                  if row.get(key) is not None and row.get(x) is not None]  # fmt: skip
        return list(zip(*sorted(points), strict=True)) or [[], []]


    panels = [("val/acc", "epoch"), ("val/loss", "epoch"),
              ("train/loss_step", "trainer/global_step"), ("train/lr", "trainer/global_step")]  # fmt: skip
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (key, x) in zip(axes.flat, panels, strict=True):
        for run in runs:
            xs, ys = series(run, key, x)
            ax.plot(xs, ys, marker="o" if x == "epoch" else None, ms=3, label=run["name"])
        ax.set(title=key, xlabel=x.split("/")[-1])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    """),
    md("""
    ## Configs and results

    The config values come from the logged config (`model.lr`, `model.net.init_args.depth`,
    ...). `val/acc_best` is the best validation accuracy seen, `params` and `train/throughput`
    (training images per second) come from the run summary.
    """),
    code("""
    def get(d, dotted):
        for part in dotted.split("."):
            if not isinstance(d, dict) or part not in d:
                return None
            d = d[part]
        return d


    def best(run, key="val/acc"):
        values = [row[key] for row in run["history"] if row.get(key) is not None]
        return run["summary"].get(key + "_best", max(values, default=None))


    columns = {  # header: value of a run
        "run": lambda r: r["name"],
        "lr": lambda r: get(r["config"], "model.lr"),
        "wd": lambda r: get(r["config"], "model.weight_decay"),
        "dim": lambda r: get(r["config"], "model.net.init_args.embed_dim"),
        "depth": lambda r: get(r["config"], "model.net.init_args.depth"),
        "heads": lambda r: get(r["config"], "model.net.init_args.num_heads"),
        "patch": lambda r: get(r["config"], "model.net.init_args.patch_size"),
        "epochs": lambda r: get(r["config"], "trainer.max_epochs"),
        "best val/acc": best,
        "val/loss": lambda r: r["summary"].get("val/loss"),
        "params": lambda r: r["summary"].get("params") or get(r["config"], "run.params"),
        "img/s": lambda r: r["summary"].get("train/throughput"),
    }


    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.0f}" if v >= 100 else f"{v:.4g}"
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


    table = [[fmt(f(run)) for f in columns.values()]
             for run in sorted(runs, key=lambda r: best(r) or 0, reverse=True)]  # fmt: skip
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(columns)]
    print("  ".join(h.ljust(w) for h, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    """),
]

NOTEBOOKS = {
    "01_vit_from_scratch.ipynb": NB01,
    "02_attention_maps.ipynb": NB02,
    "03_compare_runs.ipynb": NB03,
}


def build(cells: list[nbformat.NotebookNode], stem: str) -> nbformat.NotebookNode:
    """A notebook without outputs, with stable cell ids (stem-00, stem-01, ...)."""
    nb = new_notebook(
        cells=[nbformat.from_dict(dict(c)) for c in cells],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{stem}-{i:02d}"
    nbformat.validate(nb)
    return nb


def main(out_dir: Path = HERE) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, cells in NOTEBOOKS.items():
        path = out_dir / name
        nbformat.write(build(cells, name.split("_")[0]), path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="default: this folder")
    for path in main(parser.parse_args().out_dir):
        print("wrote", path)
