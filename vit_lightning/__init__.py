"""vit-lightning: a Lightning research template for a from-scratch Vision Transformer.

The networks are `vit_lightning.models`; `vit_lightning.VisionTransformer` and the other names
below are the class paths configs and checkpoints use.
"""

from vit_lightning.models import (
    VisionTransformer,
    VisionTransformerDistilled,
    checkpoint_filter_fn,
    deit_base_distilled_patch16_224,
    deit_small_distilled_patch16_224,
    deit_tiny_distilled_patch16_224,
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
