"""A test callback: from a given step on, rank 0's checkpoint writes fail with ENOSPC."""

import errno
import os

import torch
from lightning.pytorch.callbacks import Callback


class DiskFullAt(Callback):
    def __init__(self, step: int = 2) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step and trainer.global_rank == 0:

            def disk_full(obj, f, *args, **kwargs):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            torch.save = disk_full
