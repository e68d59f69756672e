"""vit-lightning: a Lightning research template for a from-scratch Vision Transformer.

The networks are `vit_lightning.models`; its names are re-exported here because configs and
checkpoints name them by the short path, e.g. `vit_lightning.VisionTransformer`.
"""

from vit_lightning.models import *  # noqa: F403
from vit_lightning.models import __all__  # noqa: F401
