"""`RunSummary`: what makes runs comparable (size, devices, precision, commit, throughput)."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger


def git_commit() -> str:
    """The commit of the checkout this package runs from, with "-dirty" for local changes."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode:
            raise OSError(out.stderr)
        return out.stdout.strip()

    try:
        return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "-uno") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"  # an installed wheel, or no git


class RunSummary(Callback):
    """Records what makes runs comparable: the facts go to every logger's hyperparameters and
    to the W&B run summary; the training throughput is logged as `train/throughput` each epoch.

    Facts: parameter count, device type and count, precision, global batch size, git commit.
    Throughput is global img/s over the epoch's training batches (data loading included,
    validation excluded). Its clock reads the device once per epoch, never per step.

    Args:
        enabled: Set false to skip it.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._t0: float | None = None
        self._samples = 0
        self._throughput: float | None = None

    def facts(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return {
            "params": sum(p.numel() for p in pl_module.parameters()),
            "device": trainer.strategy.root_device.type,
            "device_count": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "precision": str(trainer.precision),
            "global_batch_size": getattr(pl_module, "global_batch_size", None),
            "git_commit": git_commit(),
        }

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        facts = self.facts(trainer, pl_module)
        for logger in trainer.loggers:
            logger.log_hyperparams({"run": facts})
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(facts)

    def _sync_time(self, trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._samples, self._throughput = time.perf_counter(), 0, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._samples += len(batch[0])  # a shape, not a value: no device sync

    def _stop(self, trainer: L.Trainer) -> None:
        if self._t0 is not None and self._samples:
            elapsed = self._sync_time(trainer) - self._t0
            self._throughput = self._samples * trainer.world_size / elapsed
        self._t0 = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(trainer)  # the epoch's training part ends where validation starts

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(trainer)
        if self.enabled and self._throughput is not None:
            pl_module.log("train/throughput", self._throughput, rank_zero_only=True)
