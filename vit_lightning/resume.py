"""TEMPORARY shim: the old module path, until tests and benchmarks import the new ones."""

from vit_lightning.callbacks.rng_state import RNGState  # noqa: F401
from vit_lightning.checkpoints import newest_checkpoint  # noqa: F401
from vit_lightning.wandb_runs import RUN_ID_FILE, wandb_run_id  # noqa: F401
