"""The networks, as timm lays them out: the ViT (`vit`) and its parts (`layers`, `pos_embed`),
DeiT's distilled ViT (`deit`), the convnet teachers (`teachers`) and loading weights into a
network (`pretrained`). Plain PyTorch: nothing here imports Lightning or timm."""

from vit_lightning.models.deit import (
    VisionTransformerDistilled,
    deit_base_distilled_patch16_224,
    deit_small_distilled_patch16_224,
    deit_tiny_distilled_patch16_224,
)
from vit_lightning.models.vit import (
    VisionTransformer,
    checkpoint_filter_fn,
    resample_abs_pos_embed,
    vit_base_patch16_224,
    vit_small_patch4_32,
    vit_small_patch16_224,
    vit_tiny_patch4_32,
    vit_tiny_patch16_224,
)

__all__ = [
    "VisionTransformer",
    "VisionTransformerDistilled",
    "checkpoint_filter_fn",
    "deit_base_distilled_patch16_224",
    "deit_small_distilled_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "resample_abs_pos_embed",
    "vit_base_patch16_224",
    "vit_small_patch16_224",
    "vit_small_patch4_32",
    "vit_tiny_patch16_224",
    "vit_tiny_patch4_32",
]
