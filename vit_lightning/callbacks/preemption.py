"""`Preemption`: SIGTERM and SIGUSR1 save a checkpoint and stop with a non-zero exit status."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vit_lightning import compat
from vit_lightning.checkpoints import LAST_CHECKPOINT, checkpoint_dir


class Preemption(Callback):
    """SIGTERM (schedulers) and SIGUSR1 (SLURM's warning before the time limit) save a checkpoint
    at the next batch boundary, then stop the run with a non-zero exit status (128 + signal).

    Lightning on its own catches SIGTERM, saves nothing and exits 0, so the scheduler thinks the
    job finished. Under SLURM with auto-requeue, SIGUSR1 stays Lightning's (hpc checkpoint plus
    `scontrol requeue`). The checkpoint is `last.ckpt` in `dirpath`, written by the same code as
    a mid-epoch `every_n_train_steps` save, so `--ckpt_path=last` continues exactly there.
    `preempted_by` holds the signal once the checkpoint is saved; the CLI turns it into the exit
    status.

    Args:
        dirpath: Directory of last.ckpt; the CLI sets it to `<default_root_dir>/checkpoints`.
        enabled: Set false to keep Lightning's default behaviour.
    """

    def __init__(self, dirpath: str | None = None, enabled: bool = True) -> None:
        self.dirpath, self.enabled = dirpath, enabled
        self.preempted_by: int | None = None  # the signal that stopped the run, once saved
        self._signum: int | None = None

    def _path(self, trainer: L.Trainer) -> str:
        folder = self.dirpath or checkpoint_dir(trainer.default_root_dir)
        return os.path.join(folder, LAST_CHECKPOINT)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.preempted_by, self._signum = None, None
        if not self.enabled:
            return
        env = compat.cluster_environment(trainer)
        slurm_requeue = isinstance(env, SLURMEnvironment) and env.auto_requeue
        old_term = signal.getsignal(signal.SIGTERM)  # Lightning's: sets received_sigterm

        def on_term(signum: int, frame: Any) -> None:
            self._signum = self._signum or signum
            if callable(old_term):
                old_term(signum, frame)

        def on_usr1(signum: int, frame: Any) -> None:
            self._signum = self._signum or signum
            compat.request_stop(trainer)

        # Lightning's teardown puts back the handlers it found, ours included
        signal.signal(signal.SIGTERM, on_term)
        if not slurm_requeue:
            signal.signal(signal.SIGUSR1, on_usr1)

    def _save(self, trainer: L.Trainer, where: str) -> None:
        if self.preempted_by is not None:
            return
        self.preempted_by = self._signum or signal.SIGTERM
        path = self._path(trainer)
        trainer.save_checkpoint(path)
        rank_zero_info(
            f"{signal.Signals(self.preempted_by).name} received: saved {path} {where} "
            f"(global step {trainer.global_step}). "
            "Rerun the same command with --ckpt_path=last to continue."
        )

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        # the same state as a mid-epoch checkpoint: Lightning raises SIGTERMException right after
        if self.enabled and trainer.received_sigterm:
            self._save(trainer, "after the current batch")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exc: BaseException):
        if self.enabled and isinstance(exc, SIGTERMException):
            self._save(trainer, "(stopped outside a training batch)")
