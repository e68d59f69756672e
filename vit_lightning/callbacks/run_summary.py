"""`RunSummary`: what makes runs comparable (size, devices, precision, commit, throughput), and
the run's own record of its results, `<default_root_dir>/results.json`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn

from vit_lightning.run.files import write_file

RESULTS_FILE = "results.json"  # in default_root_dir; `python -m vit_lightning compare` reads it


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

    Rank 0 also writes `<default_root_dir>/results.json` (whole or not at all, merged with what
    is there), the record `compare` reads without W&B:

    - at the end of a fit, or when it stops with an error after training started, `"fit"`:
      `finished` (false for a stopped one), `fit_seconds` (wall time from training start to end,
      validation included, summed over the starts of a resumed run), `val_curve` (one `{"epoch", "step", "val/acc", "val/loss"}` per
      validation), `val/acc_best` and `train/throughput` (the last epoch's); the W&B summary
      gets `fit_seconds` and `fit_finished`;
    - at the end of a test, `"test"`: every `test/*` metric and the checkpoint it tested.

    The curve and the time so far travel in the checkpoint, so a resumed fit reports the whole run.

    Args:
        enabled: Set false to skip it (no facts, no throughput, no results.json).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._t0: float | None = None
        self._samples = 0
        self._throughput: float | None = None
        self._fit_t0: float | None = None  # this start's training began; None: not training
        self._fit_seconds = 0.0  # earlier starts' training time (from the checkpoint)
        self._val_curve: list[dict[str, float]] = []

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

    # -- results.json -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"fit_seconds": self._elapsed(), "val_curve": list(self._val_curve)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._fit_seconds = float(state_dict.get("fit_seconds", 0.0))
        self._val_curve = list(state_dict.get("val_curve", []))

    def _elapsed(self) -> float:
        running = time.perf_counter() - self._fit_t0 if self._fit_t0 is not None else 0.0
        return self._fit_seconds + running

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_t0 = time.perf_counter()  # after setup, checkpoint loading and sanity check

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # before the epoch's checkpoints (Lightning runs ModelCheckpoint callbacks last), so a
        # checkpoint holds the curve up to and including its own validation
        if not self.enabled or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        point = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        point.update(_scalars(trainer.callback_metrics, ("val/acc", "val/loss")))
        self._val_curve.append(point)

    def _fit_record(self, trainer: L.Trainer, finished: bool) -> dict[str, Any]:
        record = {
            "finished": finished,
            "fit_seconds": self._elapsed(),
            "val_curve": self._val_curve,
        }
        record.update(_scalars(trainer.callback_metrics, ("val/acc_best",)))
        if self._throughput is not None:
            record["train/throughput"] = self._throughput
        return record

    def _end_fit(self, trainer: L.Trainer, finished: bool) -> None:
        record = self._fit_record(trainer, finished)
        self._fit_seconds, self._fit_t0 = record["fit_seconds"], None
        if not trainer.is_global_zero:
            return
        update_results(trainer.default_root_dir, "fit", record)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                summary = {"fit_seconds": record["fit_seconds"], "fit_finished": finished}
                logger.experiment.summary.update(summary)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and self._fit_t0 is not None:
            self._end_fit(trainer, finished=True)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = sorted(k for k in trainer.callback_metrics if k.startswith("test/"))
        record: dict[str, Any] = _scalars(trainer.callback_metrics, metrics)
        record["ckpt_path"] = trainer.ckpt_path
        update_results(trainer.default_root_dir, "test", record)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exc: BaseException):
        # a fit stopped after training started (a signal, a NaN loss): what it reached so far;
        # one that failed before leaves results.json as it was
        if self.enabled and self._fit_t0 is not None and trainer.state.fn == TrainerFn.FITTING:
            self._end_fit(trainer, finished=False)


def _scalars(metrics: dict[str, Any], keys: Any) -> dict[str, float]:
    """The logged values of `keys` that are there, as floats (one device read each)."""
    return {k: float(metrics[k]) for k in keys if k in metrics}


def read_results(root: str | os.PathLike) -> dict[str, Any]:
    """`<root>/results.json` as a dict; {} when there is none."""
    path = f"{str(root).rstrip('/')}/{RESULTS_FILE}"
    fs = get_filesystem(path)
    if not fs.isfile(path):
        return {}
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def update_results(root: str | os.PathLike, section: str, record: dict[str, Any]) -> None:
    """Replace `section` ("fit" or "test") of `<root>/results.json`, keeping the other one."""
    try:
        results = read_results(root)
    except (OSError, ValueError):
        results = {}  # unreadable: this run's record replaces it rather than stopping the run
    results[section] = record
    text = json.dumps(results, indent=2, sort_keys=True) + "\n"
    write_file(f"{str(root).rstrip('/')}/{RESULTS_FILE}", text.encode())
