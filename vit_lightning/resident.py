# TEMPORARY shim
from vit_lightning.data.device_pipeline import *  # noqa: F403
