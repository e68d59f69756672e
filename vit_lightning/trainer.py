"""`Trainer`: Lightning's Trainer, with a checkpoint save that every rank agrees on, and a resumed
fit that writes its checkpoints under the names they had."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint

from vit_lightning import compat
from vit_lightning.errors import UserError


class Trainer(L.Trainer):
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
    keeps the counter, so it never replaces an earlier run's file. The CLI uses this class.
    """

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
