"""`Preemption`: SIGTERM, SIGINT and SIGUSR1 stop a run with exit status 128 + signal; `fit` saves."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vit_lightning import compat
from vit_lightning.run.checkpoints import LAST_CHECKPOINT, checkpoint_dir


class Preemption(Callback):
    """SIGTERM (schedulers), SIGINT (Ctrl-C) and SIGUSR1 (SLURM's warning before the time limit)
    stop the run after the current batch with a non-zero exit status (128 + signal).

    Lightning on its own catches SIGTERM, saves nothing and exits 0, so the scheduler thinks the
    job finished; Ctrl-C exits 1. Under SLURM with auto-requeue, SIGUSR1 stays Lightning's (hpc
    checkpoint plus `scontrol requeue`).

    - `fit` saves `last.ckpt` in `dirpath` first, written by the same code as a mid-epoch
      `every_n_train_steps` save, so `--ckpt_path=last` continues exactly there.
    - `validate`, `test` and `predict` write nothing: their state (no optimizer, step 0) would
      replace the training checkpoint.
    - A fit stops only after a training batch. Under DDP the ranks agree at every training batch
      end (one all-reduce of the signal number, on the host), so all of them save and stop at the
      same batch whichever rank got the signal. Acting on each rank's own flag let rank 0 wait in
      the save's barrier while rank 1 waited in the next collective, forever.
    - A signal during validation, or in an epoch's last batch, lets that validation and the
      epoch's checkpoints finish, and takes effect after the next training batch, or at the end of
      training after the final validation (nothing is left to save then). Lightning resumes a
      checkpoint saved in validation or after an epoch's last batch at the next epoch, so the
      rest of that validation, its best checkpoint and any epoch-end step would be lost.
    - A second Ctrl-C stops at once, without saving.

    `preempted_by` holds the signal once the run has stopped for it; the CLI turns it into the
    exit status.

    Args:
        dirpath: Directory of last.ckpt; the CLI sets it to `<default_root_dir>/checkpoints`.
        enabled: Set false to keep Lightning's default behaviour.
    """

    def __init__(self, dirpath: str | None = None, enabled: bool = True) -> None:
        self.dirpath, self.enabled = dirpath, enabled
        self.preempted_by: int | None = None  # the signal that stopped the run
        self._signum: int | None = None  # the signal this process received
        self._installed = False
        self._group: Any = None  # set in setup under DDP

    def _path(self, trainer: L.Trainer) -> str:
        folder = self.dirpath or checkpoint_dir(trainer.default_root_dir)
        return os.path.join(folder, LAST_CHECKPOINT)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.preempted_by, self._signum, self._installed = None, None, False
        # the flag is host state: a CPU (gloo) group agrees on it without the device sync that a
        # reduce on the training backend (NCCL) plus a read would cost every step
        multi = self.enabled and trainer.world_size > 1 and dist.is_initialized()
        self._group = dist.new_group(backend="gloo") if multi else None

    def _install(self, trainer: L.Trainer) -> None:
        """Replaces Lightning's SIGTERM handler, which broadcasts from inside the handler under
        DDP. Lightning installs it just before the loops start, and at teardown puts back the
        handlers it found then, so ours last for this run only."""
        if not self.enabled or self._installed:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal would raise; Lightning skips its handlers here too
        self._installed = True
        env = compat.cluster_environment(trainer)
        slurm_requeue = isinstance(env, SLURMEnvironment) and env.auto_requeue

        def on_signal(signum: int, frame: Any) -> None:
            if signum == signal.SIGINT and self._signum == signal.SIGINT:
                raise KeyboardInterrupt  # pressed twice: Lightning's abort, nothing saved
            if self._signum is None:
                self._signum = signum
                launcher = trainer.strategy.launcher
                if signum == signal.SIGTERM and launcher is not None:
                    launcher.kill(signum)  # the DDP ranks this process launched, as Lightning does
            if trainer.state.fn != TrainerFn.FITTING:
                compat.request_stop(trainer)  # eval loops stop at their next batch boundary

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if not slurm_requeue:
            signal.signal(signal.SIGUSR1, on_signal)

    # the first hook of each stage's loops, after Lightning's own handlers are in place
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)

    on_train_start = on_validation_start = on_test_start = on_predict_start = on_sanity_check_start

    def _save(self, trainer: L.Trainer, where: str) -> None:
        self.preempted_by = self._signum or signal.SIGTERM
        path = self._path(trainer)
        trainer.save_checkpoint(path)
        rank_zero_info(
            f"{signal.Signals(self.preempted_by).name} received: saved {path} {where} "
            f"(global step {trainer.global_step}). "
            "Rerun the same command with --ckpt_path=last to continue."
        )

    def _agreed_signal(self) -> int:
        """The signal any rank received (0 for none); every rank calls it at the same point."""
        signum = self._signum or 0
        if self._group is not None:
            flag = torch.tensor(signum)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
            signum = int(flag)
        return signum

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not self.enabled or self.preempted_by is not None:
            return
        if signum := self._agreed_signal():  # every rank stops at this batch, or none does
            self._signum = signum
            if compat.is_last_train_batch(trainer):
                # a checkpoint from here resumes at the next epoch, past this one's validation
                # and epoch-end saves; stop after them instead (see the class docstring)
                return
            self._save(trainer, "after the current batch")
            raise SIGTERMException  # now, on every rank: the epoch's validation would not agree

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A signal after the last training batch (in the final validation, under DDP): the run
        is complete and so are its checkpoints, but it still exits 128 + signal as promised."""
        if not self.enabled or self.preempted_by is not None:
            return
        if signum := self._agreed_signal():
            self._signum = self.preempted_by = signum
            rank_zero_info(
                f"{signal.Signals(signum).name} received after the last training batch: the run "
                "completed and its checkpoints are complete."
            )
            raise SIGTERMException

    def _stop_evaluation(self, trainer: L.Trainer) -> None:
        # also after an eval loop's last batch, where Lightning's own check does not stop it
        if self.enabled and self._signum and trainer.state.fn != TrainerFn.FITTING:
            raise SIGTERMException

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._stop_evaluation(trainer)

    on_test_batch_end = on_predict_batch_end = on_validation_batch_end

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exc: BaseException):
        if not self.enabled or not isinstance(exc, SIGTERMException) or self.preempted_by:
            return
        fn = trainer.state.fn
        if fn == TrainerFn.FITTING and trainer.world_size == 1:
            self._save(trainer, "(stopped outside a training batch)")
            return
        self.preempted_by = self._signum or signal.SIGTERM
        why = (
            "only fit writes checkpoints"
            if fn != TrainerFn.FITTING
            else "under DDP the ranks save together, only at a training batch"
        )
        rank_zero_info(
            f"{signal.Signals(self.preempted_by).name} received: {fn.value} stopped "
            f"without saving ({why})."
        )
