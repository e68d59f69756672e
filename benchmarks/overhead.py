"""Lightning's `fit()` against a bare PyTorch loop: same model, data, optimizer; epoch times.

Three loops over one epoch of in-memory data, interleaved: the bare loop, Lightning with a minimal
LightningModule (the framework's own cost), and the template as `fit` configures it (ViTClassifier
with its metrics and logging, progress bar, our callbacks). Each Lightning epoch is timed from
`on_train_epoch_start` to `on_train_epoch_end`, so Trainer construction is not counted.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import time

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import alternating, cifar_net_kwargs, sync, table
from vit_lightning import VisionTransformer
from vit_lightning.callbacks import NonFiniteGuard, RNGState, RunSummary
from vit_lightning.module import ViTClassifier


class Minimal(L.LightningModule):
    """What a bare loop does, as a LightningModule."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.net.parameters(), fused=self.device.type == "cuda")


class EpochTimer(L.Callback):
    """Seconds of each training epoch, in `epochs`; `seconds` is the last one."""

    def __init__(self) -> None:
        self.epochs: list[float] = []

    @property
    def seconds(self) -> float:
        return self.epochs[-1]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sync(pl_module.device)
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sync(pl_module.device)
        self.epochs.append(time.perf_counter() - self._t)


def bare_epoch(
    net: torch.nn.Module, opt: torch.optim.Optimizer, loader: DataLoader, device: str
) -> float:
    sync(device)
    t = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - t


def lightning_epoch(
    module: L.LightningModule, loader: DataLoader, device: str, template: bool, log_dir: str
) -> float:
    timer = EpochTimer()
    callbacks = [timer] + ([NonFiniteGuard(), RNGState(), RunSummary()] if template else [])
    trainer = L.Trainer(
        accelerator=device,
        devices=1,
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=template,
        logger=CSVLogger(log_dir) if template else False,
        callbacks=callbacks,
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        trainer.fit(module, loader)
    return timer.seconds


TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=10)


def compare(
    device: str, repeats: int, log_dir: str, net_kwargs: dict, steps: int, batch: int
) -> dict[str, float]:
    """Median epoch seconds of the bare loop, minimal Lightning and the template."""
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(steps * batch, 3, 32, 32, generator=g),
        torch.randint(0, 10, (steps * batch,), generator=g),
    )
    torch.manual_seed(0)
    base = VisionTransformer(**net_kwargs)
    bare_net = copy.deepcopy(base).to(device)
    bare_opt = torch.optim.AdamW(bare_net.parameters(), fused=device == "cuda")
    minimal = Minimal(copy.deepcopy(base))
    template = ViTClassifier(copy.deepcopy(base), warmup_epochs=0, label_smoothing=0.0)

    def loader() -> DataLoader:
        return DataLoader(
            data, batch_size=batch, shuffle=True, drop_last=True, pin_memory=device == "cuda"
        )

    fns = {
        "bare PyTorch loop": lambda: bare_epoch(bare_net, bare_opt, loader(), device),
        "Lightning, minimal module": lambda: lightning_epoch(
            minimal, loader(), device, False, log_dir
        ),
        "Lightning, this template": lambda: lightning_epoch(
            template, loader(), device, True, log_dir
        ),
    }
    return alternating(fns, repeats)  # each fn returns its own epoch time


def run(device: str, repeats: int, log_dir: str) -> str:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = []
    for name, kwargs, steps, batch in [
        ("CIFAR net, batch 64", cifar_net_kwargs(), 24, 64),
        ("tiny ViT (depth 1, D 32), batch 16", TINY, 200, 16),
    ]:
        med = compare(device, repeats, log_dir, kwargs, steps, batch)
        bare = med["bare PyTorch loop"]
        for k, v in med.items():
            extra = "" if k == "bare PyTorch loop" else f"{1000 * (v - bare) / steps:+.2f} ms"
            rows.append([name, k, f"{1000 * v / steps:.2f} ms", v / bare, extra])
            name = ""
    return (
        "Epoch time per step over in-memory data, medians of "
        f"{repeats}. The tiny ViT's step is short enough that the loop's own host cost shows:\n\n"
        + table(["model", "loop", "per step", "**ratio to bare loop**", "overhead per step"], rows)
    )
