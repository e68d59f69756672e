"""Old path of `vit_lightning.run.wandb_logger.WandbLogger`, kept for configs and checkpoints
that name `vit_lightning.wandb_runs.WandbLogger`."""

from vit_lightning.run.wandb_logger import WandbLogger

__all__ = ["WandbLogger"]
