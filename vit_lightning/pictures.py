"""TEMPORARY shim: the old module path, until tests and notebooks import the new ones."""

from vit_lightning.callbacks.val_pictures import ValPictures, log_figure  # noqa: F401
from vit_lightning.viz import confusion_figure  # noqa: F401
