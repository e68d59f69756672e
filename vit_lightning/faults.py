"""What keeps a long run safe: atomic checkpoint files, preemption signals, non-finite losses."""

from __future__ import annotations

import math
import os
import signal
from collections import deque
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class UserError(RuntimeError):
    """A failure with a message that says what to do; the CLI prints it without a traceback."""


class NonFiniteLossError(UserError):
    pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint files that are either complete or absent, and load errors that name the file.

    Lightning writes into a temp file in the system temp dir and then moves it; across
    filesystems (local /tmp, checkpoints on NFS or Lustre) that move is a copy, so a crash can
    leave a truncated file. Here the temp file sits next to the target, is fsynced, and
    `os.replace` swaps it in: the previous checkpoint stays loadable until the new one is whole.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        try:  # make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass  # some filesystems cannot fsync a directory

    def load_checkpoint(self, path: str | Path, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, *args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as e:  # zip reader, unpickling, EOF: all mean a damaged file
            raise corrupt_checkpoint(path, e) from e


def corrupt_checkpoint(path: str | Path, e: BaseException) -> UserError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return UserError(
        f"Checkpoint {str(path)!r} is corrupt or truncated and cannot be loaded "
        f"({type(e).__name__}: {first}). Delete or move it and resume from another one "
        "(e.g. --ckpt_path=<dir>/best-....ckpt), or start afresh without --ckpt_path."
    )


# the signal that stopped the run, if any: `main` turns it into the exit status (128 + signum)
_preempted_by: int | None = None


def preempted_by() -> int | None:
    return _preempted_by


class Preemption(Callback):
    """SIGTERM (schedulers) and SIGUSR1 (SLURM's warning before the time limit) save a checkpoint
    at the next batch boundary, then stop the run with a non-zero exit status (128 + signal).

    Lightning on its own catches SIGTERM, saves nothing and exits 0, so the scheduler thinks the
    job finished. Under SLURM with auto-requeue, SIGUSR1 stays Lightning's (hpc checkpoint plus
    `scontrol requeue`). The checkpoint is `last.ckpt` in `dirpath`, written by the same code as
    a mid-epoch `every_n_train_steps` save, so `--ckpt_path=last` continues exactly there.

    Args:
        dirpath: Directory of last.ckpt; the CLI sets it to `<default_root_dir>/checkpoints`.
        enabled: Set false to keep Lightning's default behaviour.
    """

    def __init__(self, dirpath: str | None = None, enabled: bool = True) -> None:
        self.dirpath, self.enabled = dirpath, enabled
        self._signum: int | None = None
        self._saved = False

    def _path(self, trainer: L.Trainer) -> str:
        return os.path.join(self.dirpath or os.path.join(trainer.default_root_dir, "checkpoints"),
                            "last.ckpt")  # fmt: skip

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        global _preempted_by
        _preempted_by, self._signum, self._saved = None, None, False
        if not self.enabled:
            return
        env = trainer._accelerator_connector.cluster_environment
        slurm_requeue = isinstance(env, SLURMEnvironment) and env.auto_requeue
        connector = trainer._signal_connector
        old_term = signal.getsignal(signal.SIGTERM)  # Lightning's: sets received_sigterm

        def on_term(signum: int, frame: Any) -> None:
            self._signum = self._signum or signum
            if callable(old_term):
                old_term(signum, frame)

        def on_usr1(signum: int, frame: Any) -> None:
            self._signum = self._signum or signum
            connector.received_sigterm = True  # Lightning then stops after the current batch

        # Lightning's teardown puts back the handlers it found, ours included
        signal.signal(signal.SIGTERM, on_term)
        if not slurm_requeue:
            signal.signal(signal.SIGUSR1, on_usr1)

    def _save(self, trainer: L.Trainer, where: str) -> None:
        global _preempted_by
        if self._saved:
            return
        self._saved = True
        _preempted_by = self._signum or signal.SIGTERM
        path = self._path(trainer)
        trainer.save_checkpoint(path)
        name = signal.Signals(_preempted_by).name
        rank_zero_info(
            f"{name} received: saved {path} {where} (global step {trainer.global_step}). "
            "Rerun the same command with --ckpt_path=last to continue."
        )

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        # the same state as a mid-epoch checkpoint: Lightning raises SIGTERMException right after
        if self.enabled and trainer.received_sigterm:
            self._save(trainer, "after the current batch")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exc: BaseException):
        if self.enabled and isinstance(exc, SIGTERMException):
            self._save(trainer, "(stopped outside a training batch)")


class NonFiniteGuard(Callback):
    """Stops training at the first NaN or inf training loss, naming the step and the value, and
    refuses to write a checkpoint whose weights are not finite, so the last one on disk is good.

    On CPU the loss is checked after every step. On CUDA each step queues a non-blocking copy of
    its loss and an event; later steps read the copies whose events have completed, so the host
    never waits on the device unless it runs more than `max_pending` steps ahead. It stops within
    that many steps, and the weight check before each save catches the steps in between.

    Args:
        enabled: Set false to let non-finite losses through (e.g. to debug them).
        max_pending: CUDA only: unread losses allowed before the host waits for the oldest.
    """

    def __init__(self, enabled: bool = True, max_pending: int = 16) -> None:
        if max_pending < 1:
            raise ValueError(f"nonfinite_guard.max_pending={max_pending} must be >= 1")
        self.enabled, self.max_pending = enabled, max_pending
        self._pending: deque[tuple[int, torch.Tensor, torch.cuda.Event]] = deque()

    def _fail(self, step: int, value: float, trainer: L.Trainer) -> None:
        raise NonFiniteLossError(
            f"Training loss is {value} at global step {step} (epoch {trainer.current_epoch}). "
            "Training stopped; checkpoints on disk hold the last finite weights. Try a lower "
            "model.lr or longer warmup, bf16 instead of 16-mixed, or gradient clipping "
            "(--trainer.gradient_clip_val=1.0). --nonfinite_guard.enabled=false disables this check."
        )

    def _check_pending(self, trainer: L.Trainer, keep: int) -> None:
        """Read every completed loss copy, waiting for the oldest while more than `keep` remain."""
        while self._pending:
            step, host, event = self._pending[0]
            if len(self._pending) <= keep and not event.query():
                return  # still running; look again after the next step
            event.synchronize()
            self._pending.popleft()
            if not math.isfinite(host.item()):
                self._fail(step, host.item(), trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.enabled or outputs is None:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        step = trainer.global_step
        if loss.device.type != "cuda":
            if not math.isfinite(loss.item()):
                self._fail(step, loss.item(), trainer)
            return
        host = torch.empty((), dtype=loss.dtype, pin_memory=True)
        host.copy_(loss.detach(), non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append((step, host, event))
        self._check_pending(trainer, keep=self.max_pending)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_pending(trainer, keep=0)  # the last steps' losses, before fit returns

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, ckpt) -> None:
        if not self.enabled:
            return
        self._check_pending(trainer, keep=0)
        bad = [n for n, p in pl_module.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteLossError(
                f"Not saving a checkpoint at global step {trainer.global_step}: parameters "
                f"{bad[:3]}{'...' if len(bad) > 3 else ''} hold NaN or inf. The last checkpoint "
                "on disk holds finite weights; see the loss at the steps before."
            )
