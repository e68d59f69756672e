"""`Trainer`: Lightning's Trainer, with a checkpoint save that every rank agrees on, and a resumed
fit that writes its checkpoints under the names they had."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint

from vit_lightning import compat
from vit_lightning.errors import ConfigError, UserError
from vit_lightning.run.export import Format, export_run
from vit_lightning.run.files import pid_alive

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
LAUNCHER_PID = "VIT_LIGHTNING_LAUNCHER_PID"  # set by a fit's first process while it runs


def end_with_launcher() -> None:
    """Makes this DDP rank end when the process that started it ends (Linux).

    Lightning's launcher is rank 0, which starts the other ranks as its children during `fit`. It
    watches them (one that dies takes the job down), but they did not watch it: rank 0 killed, or
    ended by a SIGTERM before any handler was in place, left rank 1 waiting for it in the process
    group's setup until the group's timeout (30 min). A rank that `Trainer.fit`'s first process
    started (it finds that process's PID in LAUNCHER_PID) gets SIGKILL when that process ends;
    rank 0 writes every file, so nothing is lost. Ranks that torchrun or srun start have a parent
    of their own and are left alone.
    """
    launcher = os.environ.get(LAUNCHER_PID, "")
    if os.environ.get("LOCAL_RANK", "0") == "0" or not launcher.isdigit():
        return
    if not sys.platform.startswith("linux"):
        return
    if os.getppid() != int(launcher) and pid_alive(int(launcher)):
        return  # not its child: another launcher started this rank
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0):
        return
    if os.getppid() != int(launcher):
        os.kill(os.getpid(), signal.SIGKILL)  # it ended before prctl: the signal would never come


@contextlib.contextmanager
def _launching() -> Iterator[None]:
    """LAUNCHER_PID for the ranks Lightning starts during this fit (they inherit os.environ)."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        yield
        return
    before = os.environ.get(LAUNCHER_PID)
    os.environ[LAUNCHER_PID] = str(os.getpid())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LAUNCHER_PID, None)
        else:
            os.environ[LAUNCHER_PID] = before


class Trainer(compat.RestoringMixin, L.Trainer):
    """`lightning.Trainer` whose `save_checkpoint` fails on every rank when one rank fails.

    Under DDP only rank 0 writes, and the others wait in a barrier after the write. When the
    write fails (a full disk), rank 0 raises before that barrier; Lightning's own launcher kills
    the other ranks then, but ranks started by torchrun or srun wait there until the process
    group times out (30 min by default). Here the barrier is an all-reduce of the outcome, so
    every rank raises at once and the job ends in seconds.

    A fit resumed from a checkpoint replaces a checkpoint file of the same name instead of
    writing a `-v1` copy beside it (ModelCheckpoint's version counter). Such a file was written by
    this run after the checkpoint it resumes from, by an attempt that died before its next
    `last.ckpt` (say between the epoch's best and last saves): the resumed run repeats that epoch
    and saves that file again. With the counter, the repeat went to `best-...-v1.ckpt` and the
    first copy, which no checkpoint's state records, stayed in the folder for good. A fresh fit
    keeps the counter, so it never replaces an earlier run's file.

    A DDP rank started by Lightning's launcher ends with it (`end_with_launcher`), and
    `trainer.restoring` names the checkpoint a run restores before the module's `setup` (see
    `compat.RestoringMixin`). The CLI uses this class.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        end_with_launcher()  # before fit sets up the process group, where rank 1 waits
        super().__init__(*args, **kwargs)

    def fit(
        self,
        model: L.LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: L.LightningDataModule | None = None,
        ckpt_path: _PATH | None = None,
        weights_only: bool | None = None,
    ) -> None:
        if ckpt_path is not None:
            for callback in self.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):
                    compat.disable_version_counter(callback)
        with _launching():
            return super().fit(
                model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, weights_only
            )

    def save_checkpoint(
        self, filepath: _PATH, weights_only: bool | None = None, storage_options: Any = None
    ) -> None:
        if self.world_size == 1 or self.model is None:
            return super().save_checkpoint(filepath, weights_only, storage_options)
        error = None
        with self.profiler.profile("save_checkpoint"):
            checkpoint = compat.dump_checkpoint(self, weights_only)
            try:
                self.strategy.save_checkpoint(checkpoint, filepath, storage_options=storage_options)
            except Exception as e:  # re-raised below, once every rank knows
                error = e
            # once per save, not per step: the device sync of the read is fine here
            failed = torch.tensor(int(error is not None), device=self.strategy.root_device)
            failed = int(self.strategy.reduce(failed, reduce_op="sum"))
        if error is not None:
            raise error
        if failed:
            raise UserError(
                f"checkpoint {str(filepath)!r} was not saved: rank 0 could not write it (its "
                "error says why). The previous checkpoint is unchanged."
            )

    def export(
        self,
        model: L.LightningModule,
        ckpt_path: str,  # required: without weights, export only with --ckpt_path=none
        datamodule: L.LightningDataModule | None = None,
        format: Format = "onnx",
        output: str | None = None,
        weights_only: bool | None = None,
    ) -> Path:
        """Export a checkpoint's network to ONNX or torch.export, with a dynamic batch size.

        Args:
            model: The configured LightningModule; its weights come from `ckpt_path`.
            ckpt_path: The checkpoint: a file, `last` or `best`; `none` (which the CLI turns
                into None) exports the untrained model.
            datamodule: Gives the input's channels and image size.
            format: `onnx` (a `.onnx` file for ONNX Runtime) or `torch.export` (a `.pt2` file:
                `torch.export.load(path).module()`).
            output: The file to write; default `<default_root_dir>/model.onnx` (or `model.pt2`).
                An existing file is not replaced: name another, or remove it first.
            weights_only: As for `fit` and `test`: how torch.load reads the checkpoint (None:
                torch's default). Also lets a run's own config.yaml be passed as --config.
        """
        return export_run(self, model, ckpt_path, datamodule, format, output, weights_only)


def check_accelerator(accelerator: Any) -> None:
    """`--trainer.accelerator=gpu` where torch sees no GPU: one line, not Lightning's traceback."""
    if str(accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
        raise ConfigError(
            f"trainer.accelerator={accelerator}, but torch finds no CUDA GPU on this machine "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}{hint}). Use "
            "--trainer.accelerator=cpu, or auto to take whatever is there"
        )
