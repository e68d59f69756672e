"""Callbacks the CLI attaches to every run: a current last.ckpt, a predictions CSV, a run summary."""

from __future__ import annotations

import csv
import os
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger


class LastCheckpoint(ModelCheckpoint):
    """Writes `last.ckpt` at the end of every epoch, and every N optimizer steps if asked.

    A ModelCheckpoint that monitors a metric refreshes its `save_last` file only when the metric
    improves, so `last.ckpt` goes stale. This one monitors nothing: it always saves, in place.
    Lightning makes step and epoch triggers exclusive; here the step trigger is added to the epoch
    one, and skipped on an epoch's last batch, whose save comes right after validation.

    Args:
        dirpath: Directory of `last.ckpt`; the CLI sets it to `<default_root_dir>/checkpoints`.
        every_n_train_steps: Also save every N optimizer steps (mid-epoch), 0 to disable.
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 0) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps={every_n_train_steps} must be >= 0")
        super().__init__(
            dirpath=dirpath,
            filename=self.CHECKPOINT_NAME_LAST,
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
        )
        self._every_n_train_steps = every_n_train_steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            super().on_train_batch_end(trainer, *args)


class PredictionWriter(BasePredictionWriter):
    """Writes `predict` results to a CSV: one row per image with file, class and probability.

    Args:
        output_file: CSV path; defaults to `<default_root_dir>/predictions.csv`. Under DDP each
            rank writes its own `-rank<N>` file.
    """

    def __init__(self, output_file: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_file = output_file
        self._writer: Any = None
        self._fh: Any = None
        self._names: list[str] = []

    def path(self, trainer: L.Trainer) -> str:
        path = self.output_file or os.path.join(trainer.default_root_dir, "predictions.csv")
        if trainer.world_size > 1:
            root, ext = os.path.splitext(path)
            path = f"{root}-rank{trainer.global_rank}{ext}"
        return path

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.path(trainer)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._fh = open(path, "w", newline="")  # noqa: SIM115 - spans predict hooks
        self._writer = csv.writer(self._fh)
        self._writer.writerow(["file", "class", "class_index", "probability"])
        self._names = trainer.datamodule.predict_names()  # once, not per batch

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: torch.Tensor,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        class_names = trainer.datamodule.class_names
        prob, idx = prediction.float().max(dim=-1)
        for i, p, c in zip(batch_indices, prob.tolist(), idx.tolist(), strict=True):
            self._writer.writerow([self._names[i], class_names[c], c, f"{p:.6f}"])

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fh.close()
        print(f"Wrote predictions to {self.path(trainer)}")


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
