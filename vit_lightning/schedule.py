"""The lr schedule: per-step linear warmup, then cosine decay to a floor, over the whole fit."""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L


def stepping_batches(trainer: L.Trainer) -> int:
    """Optimizer steps in the whole fit, as Lightning's `estimated_stepping_batches`.

    Lightning's property builds the train loader inside `configure_optimizers`, before a resumed
    run's checkpoint is restored, so a stateful loader never gets its state back (it would restart
    the epoch from its first batch). Counting `len()` of a fresh loader instead needs no iterator
    and leaves Lightning's own loader to be built after the restore.
    """
    t = trainer
    dm = t.datamodule
    if dm is None or not hasattr(dm, "train_dataloader") or t.max_epochs in (None, -1):
        return t.estimated_stepping_batches
    batches = len(dm.train_dataloader())
    limit = t.limit_train_batches
    batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    steps = math.ceil(batches / t.accumulate_grad_batches) * max(t.max_epochs, 1)
    return min(steps, t.max_steps) if t.max_steps != -1 else steps


def warmup_cosine(warmup: int, total: int, floor: float) -> Callable[[int], float]:
    """LambdaLR's factor at optimizer step `step`: (step + 1) / warmup, then cosine to `floor`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
