"""A Trainer for in-process tests: CPU, and no logger, checkpoints, progress bar or summary."""

from typing import Any

import lightning as L

QUIET = dict(
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)


def quiet_trainer(**overrides: Any) -> L.Trainer:
    """`L.Trainer(**QUIET, **overrides)`; overrides win."""
    return L.Trainer(**{**QUIET, **overrides})
