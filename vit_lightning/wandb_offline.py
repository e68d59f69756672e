"""TEMPORARY shim: the old module path, until tests and notebooks import vit_lightning.wandb_runs."""

from vit_lightning.wandb_runs import read_offline_run  # noqa: F401
