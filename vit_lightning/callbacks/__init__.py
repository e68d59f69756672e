"""The callbacks the CLI attaches to every run, one per module.

`vit_lightning.callbacks.<Name>` class paths keep working for configs and checkpoints.
"""

from vit_lightning.callbacks.last_checkpoint import LastCheckpoint
from vit_lightning.callbacks.nonfinite_guard import NonFiniteGuard, NonFiniteLossError
from vit_lightning.callbacks.prediction_writer import PredictionWriter
from vit_lightning.callbacks.preemption import Preemption
from vit_lightning.callbacks.rng_state import RNGState
from vit_lightning.callbacks.run_summary import RunSummary, git_commit
from vit_lightning.callbacks.val_pictures import ValPictures, log_figure

__all__ = [
    "LastCheckpoint",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "PredictionWriter",
    "Preemption",
    "RNGState",
    "RunSummary",
    "ValPictures",
    "git_commit",
    "log_figure",
]
