"""The DataModules, one file per dataset: CIFAR-10, Fashion-MNIST, your own image folders and a
synthetic set.

Every DataModule exposes `num_classes`, `in_chans`, `img_size` and `class_names` right after
`__init__` (the CLI links them into the model), yields `(x, y)` batches with x float32 normalised
(B, C, H, W) and y int64, and can predict on a folder of PNG/JPEG files (`predict_dir`).

Files: `base.py` (what every DataModule shares), `torchvision_base.py` (datasets on disk),
`augment.py` (augmentation tables), `cifar10.py`, `fashion_mnist.py`, `synthetic.py`,
`image_folder.py` (your own images, a folder per class), `folder.py` (predict folders),
`sampling.py` (resumable train order), `device_pipeline.py` (data held and augmented on the
training device). Configs name the classes by this package's path, e.g.
`vit_lightning.data.CIFAR10DataModule`.
"""

from vit_lightning.data.base import ImageDataModule
from vit_lightning.data.cifar10 import (
    AUGMENT as CIFAR10_AUGMENT,
)
from vit_lightning.data.cifar10 import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10DataModule,
)
from vit_lightning.data.fashion_mnist import (
    AUGMENT as FASHION_MNIST_AUGMENT,
)
from vit_lightning.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    FashionMNISTDataModule,
    idx_problem,
)
from vit_lightning.data.folder import ImageFolderFlat
from vit_lightning.data.image_folder import (
    AUGMENT as IMAGE_FOLDER_AUGMENT,
)
from vit_lightning.data.image_folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataModule,
)
from vit_lightning.data.synthetic import SyntheticDataModule
from vit_lightning.data.torchvision_base import TorchvisionDataModule

__all__ = [
    "CIFAR10_AUGMENT",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10DataModule",
    "FASHION_MNIST_AUGMENT",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FashionMNISTDataModule",
    "IMAGE_FOLDER_AUGMENT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImageFolderFlat",
    "SyntheticDataModule",
    "TorchvisionDataModule",
    "idx_problem",
]
