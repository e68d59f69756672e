# TEMPORARY shim
from vit_lightning.data.sampling import *  # noqa: F403
from vit_lightning.data.sampling import sample_seed  # noqa: F401
