"""GPU-only figures: model FLOPs utilisation of a ViT-S/16 at 224, and a CIFAR-10 epoch's time.

MFU counts the full model's FLOPs (the usual convention: forward + backward = 3x forward, two
FLOPs per multiply-add), not the smaller work our [CLS]-only last block does, so it compares with
published figures for the same architecture.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import lightning as L
import torch

from benchmarks.common import cifar_net_kwargs, interleaved, table
from benchmarks.data_pipeline import write_cifar10
from benchmarks.model import train_steps, variants
from benchmarks.overhead import EpochTimer
from vit_lightning import VisionTransformer
from vit_lightning.data import CIFAR10DataModule
from vit_lightning.module import ViTClassifier

# dense bf16 tensor-core peaks, FLOP/s, by device-name fragment (first match wins)
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12),
             ("L4", 121e12), ("A10", 125e12)]  # fmt: skip


def forward_flops(
    img_size: int,
    patch_size: int,
    embed_dim: int,
    depth: int,
    mlp_ratio: float = 4.0,
    num_classes: int = 1000,
    in_chans: int = 3,
    **_,
) -> float:
    """FLOPs of one image's forward pass through a standard ViT (2 per multiply-add)."""
    n_patch, d = (img_size // patch_size) ** 2, embed_dim
    n = n_patch + 1
    macs = n_patch * in_chans * patch_size**2 * d  # patch embedding
    macs += depth * (4 * n * d * d + 2 * n * n * d + 2 * n * d * int(d * mlp_ratio))
    return 2.0 * (macs + d * num_classes)


def peak_flops(device_name: str) -> float | None:
    return next((p for frag, p in PEAK_BF16 if frag in device_name), None)


def mfu(repeats: int, device: str = "cuda", batch: int = 256, img_size: int = 224) -> str:
    kw = dict(
        img_size=img_size, patch_size=16, embed_dim=384, depth=12, num_heads=6, num_classes=1000
    )
    name = torch.cuda.get_device_name() if device == "cuda" else device
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    models = variants(kw, True, device)
    t = interleaved(
        {k: train_steps(m, x, y, 5, torch.bfloat16) for k, m in models.items()}, repeats, device
    )
    per_img, peak = 3 * forward_flops(**kw), peak_flops(name)
    rows = []
    for k, v in t.items():
        ips = 5 * batch / v
        rows.append(
            [
                k,
                f"{ips:,.0f}",
                f"{ips * per_img / 1e12:.0f}",
                f"{100 * ips * per_img / peak:.1f}%" if peak else "peak unknown",
            ]
        )
    return (
        f"ViT-S/16 at {img_size}, batch {batch}, bf16 autocast, {name} (peak "
        f"{peak / 1e12 if peak else float('nan'):.0f} TFLOP/s dense bf16), "
        f"{per_img / 1e9:.1f} GFLOP per image per train step:\n\n"
        + table(["model", "img/s", "TFLOP/s", "**MFU**"], rows)
    )


def cifar_epochs(
    data_dir: Path, workers: int, device: str = "cuda", limit: int | None = None
) -> str:
    """Seconds per CIFAR-10 epoch (45k images) of `fit` with the configs/cifar10.yaml net, bf16."""
    write_cifar10(data_dir)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    setups = {
        f"torchvision loader ({workers} workers, crop + flip), eager": (False, False),
        "device pipeline, eager": (True, False),
        "device pipeline, compiled": (True, True),
    }
    rows = []
    for name, (device_pipeline, compiled) in setups.items():
        torch.manual_seed(0)
        module = ViTClassifier(VisionTransformer(**cifar_net_kwargs()), compile=compiled)
        dm = CIFAR10DataModule(
            str(data_dir),
            download=False,
            batch_size=512,
            num_workers=workers,
            device_pipeline=device_pipeline,
        )
        timer = EpochTimer()
        trainer = L.Trainer(
            accelerator=device,
            devices=1,
            precision="bf16-mixed",
            max_epochs=3,
            limit_train_batches=limit,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
        )
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            trainer.fit(module, dm)
        best = min(timer.epochs[1:])  # epoch 0 pays compilation and worker start-up
        rows.append([name, f"{best:.2f} s", f"{45000 / best:,.0f}", f"{timer.epochs[0]:.1f} s"])
    return (
        "One CIFAR-10 epoch (45k training images, batch 512, bf16-mixed, no validation), "
        "`fit` with the configs/cifar10.yaml net; the best of epochs 2-3:\n\n"
        + table(["data path, model", "epoch", "img/s", "first epoch"], rows)
    )
