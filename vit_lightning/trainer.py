"""`Trainer`: Lightning's Trainer, with a checkpoint save that every rank agrees on."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.types import _PATH

from vit_lightning import compat
from vit_lightning.errors import UserError


class Trainer(L.Trainer):
    """`lightning.Trainer` whose `save_checkpoint` fails on every rank when one rank fails.

    Under DDP only rank 0 writes, and the others wait in a barrier after the write. When the
    write fails (a full disk), rank 0 raises before that barrier; Lightning's own launcher kills
    the other ranks then, but ranks started by torchrun or srun wait there until the process
    group times out (30 min by default). Here the barrier is an all-reduce of the outcome, so
    every rank raises at once and the job ends in seconds. The CLI uses this class.
    """

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
