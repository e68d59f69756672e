"""`NonFiniteGuard`: stop at the first NaN or inf training loss, and never save such weights."""

from __future__ import annotations

import math
from collections import deque

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from vit_lightning.errors import ConfigError, UserError


class NonFiniteLossError(UserError):
    """A NaN or inf training loss, or non-finite weights about to be saved."""


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
            raise ConfigError.of(self, f"nonfinite_guard.max_pending={max_pending} must be >= 1")
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
