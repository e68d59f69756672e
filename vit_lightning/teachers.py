"""Old path of `vit_lightning.models.teachers`, kept for configs and checkpoints that name
`vit_lightning.teachers.<Class>`."""

from vit_lightning.models.teachers import ConvNet, ResNet

__all__ = ["ConvNet", "ResNet"]
