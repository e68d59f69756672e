"""The lr schedule: per-step linear warmup, then cosine decay to a floor, over the whole fit.

Its length in optimizer steps follows whichever limit ends the run: `max_steps`, or `max_epochs`
x the optimizer steps per epoch, the smaller when both are set. A run bounded only by `max_time`
has no length in steps: the lr then holds its peak after the warmup. `Schedule.describe` says
which it is, at the start of fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
from lightning.pytorch.callbacks import Timer


def batches_per_epoch(trainer: L.Trainer) -> int | None:
    """Training batches in one epoch (after `limit_train_batches`), None when the train loader
    has no length.

    Counted from `len()` of a fresh loader: Lightning's `num_training_batches` and
    `estimated_stepping_batches` build the train loader inside `configure_optimizers`, before a
    resumed run's checkpoint is restored, so a stateful loader would never get its state back.
    """
    t, dm = trainer, trainer.datamodule
    if dm is None or not hasattr(dm, "train_dataloader"):
        return None
    try:
        batches = len(dm.train_dataloader())
    except TypeError:  # an iterable dataset
        return None
    limit = t.limit_train_batches  # Lightning's: an int count, or a float fraction
    return min(batches, limit) if isinstance(limit, int) else int(batches * limit)


@dataclass(frozen=True)
class Schedule:
    """Warmup and total length of the lr schedule, in optimizer steps.

    Attributes:
        warmup: Linear warmup steps (`warmup_epochs` x steps per epoch).
        total: Steps of the whole fit; None when no step or epoch limit ends the run.
        per_epoch: Optimizer steps per epoch, None when the loader has no length.
        ends_by: The limit that ends the run, e.g. "trainer.max_steps=12".
    """

    warmup: int
    total: int | None
    per_epoch: int | None
    ends_by: str

    def factor(self, floor: float) -> Callable[[int], float]:
        """LambdaLR's lr factor: warmup to 1, cosine to `floor` at `total` (or 1 if none)."""
        if self.total is None:
            return lambda step: (step + 1) / self.warmup if step < self.warmup else 1.0
        return warmup_cosine(self.warmup, self.total, floor)

    def describe(self, lr: float, min_lr: float) -> str:
        """One line for the start of fit: the length in steps, what set it, the lrs."""
        per = f"{self.per_epoch} optimizer steps per epoch" if self.per_epoch else "no epoch length"
        if self.total is None:
            return (
                f"lr schedule: {self.warmup} warmup steps, then the peak lr {lr:g} with no decay: "
                f"{self.ends_by} ends the run, whose length in steps is unknown ({per}); set "
                "trainer.max_epochs or trainer.max_steps for the cosine decay"
            )
        line = (
            f"lr schedule: {self.warmup} warmup steps to lr {lr:g}, cosine to {min_lr:g} at step "
            f"{self.total} ({self.ends_by} ends the run; {per})"
        )
        if self.warmup > self.total:
            peak = lr * self.total / self.warmup
            line += f"; the warmup is longer than the run, so the lr peaks at {peak:g}"
        return line


def plan(
    trainer: L.Trainer, warmup_epochs: float, resumed: tuple[int, int, int] | None = None
) -> Schedule:
    """The schedule of `trainer`'s fit: its length from whichever limit ends the run first.

    Args:
        trainer: The fit's Trainer, its DataModule attached.
        warmup_epochs: Warmup length in epochs (of this run's steps per epoch).
        resumed: (optimizer step, epoch, images of that epoch trained) of a resumed run whose
            steps per epoch differ from its checkpoint's: the epoch limit then counts the steps
            still to come at this run's sizes from there.
    """
    t = trainer
    batches = batches_per_epoch(t)
    per_epoch = math.ceil(batches / t.accumulate_grad_batches) if batches is not None else None
    limits = []  # (steps, what)
    if t.max_steps is not None and t.max_steps != -1:
        limits.append((t.max_steps, f"trainer.max_steps={t.max_steps}"))
    if t.max_epochs is not None and t.max_epochs > 0 and per_epoch is not None:
        steps = per_epoch * t.max_epochs
        if resumed is not None:
            step, epoch, images = resumed
            per_batch = getattr(t.datamodule, "batch_size", 1) * t.world_size
            left = max(0, batches - images // per_batch)  # of the resumed epoch
            later = per_epoch * max(0, t.max_epochs - epoch - 1)
            steps = step + math.ceil(left / t.accumulate_grad_batches) + later
        limits.append((steps, f"trainer.max_epochs={t.max_epochs}"))
    warmup = round(warmup_epochs * per_epoch) if per_epoch else 0
    if not limits:
        timed = any(isinstance(c, Timer) for c in t.callbacks)  # what max_time adds
        ends_by = "trainer.max_time" if timed else "no limit (max_epochs=-1, max_steps=-1)"
        return Schedule(warmup, None, per_epoch, ends_by)
    total, ends_by = min(limits)
    return Schedule(warmup, total, per_epoch, ends_by)


def warmup_cosine(warmup: int, total: int, floor: float) -> Callable[[int], float]:
    """LambdaLR's factor at optimizer step `step`: (step + 1) / warmup, then cosine to `floor`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
