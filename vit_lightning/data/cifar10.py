"""CIFAR-10 through torchvision's `CIFAR10`, with its download and integrity checks."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity, extract_archive
from torchvision.transforms import v2

from vit_lightning.data.augment import Policy, choices, describe
from vit_lightning.data.torchvision_base import TorchvisionDataModule, writing_into
from vit_lightning.errors import ConfigError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _crop_flip() -> list[v2.Transform]:
    return [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]


# every policy starts with crop + flip, as in the ViT-for-small-datasets recipes
AUGMENT = {
    "none": Policy("random crop (pad 4) and horizontal flip only", _crop_flip),
    "autoaugment": Policy(
        "crop, flip, then AutoAugment's CIFAR-10 policy",
        lambda: [*_crop_flip(), v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)],
    ),
    "randaugment": Policy(
        "crop, flip, then RandAugment", lambda: [*_crop_flip(), v2.RandAugment()]
    ),
    "trivialaugment": Policy(
        "crop, flip, then TrivialAugmentWide", lambda: [*_crop_flip(), v2.TrivialAugmentWide()]
    ),
}
Augment = choices(AUGMENT)


class CIFAR10DataModule(TorchvisionDataModule):
    __doc__ = f"""CIFAR-10: 45k/5k seeded train/val split of the 50k training images; the 10k test set.

    Args:
        data_dir: Directory holding `cifar-10-batches-py/` or `cifar-10-python.tar.gz`.
        augment: Training augmentation: {describe(AUGMENT)}.
        resize: Upsample every image to resize x resize (bicubic) after the augmentation, e.g.
            224 to fine-tune an ImageNet ViT; None keeps 32x32. The model's img_size follows.
        **kwargs: `TorchvisionDataModule`'s arguments (download, val_size, split_seed,
            random_erasing, device_pipeline) and `ImageDataModule`'s (batch_size, num_workers, ...).
    """

    dataset_cls = CIFAR10
    dataset_name = "CIFAR-10"
    train_len = 50000
    mean, std = CIFAR10_MEAN, CIFAR10_STD
    num_classes, in_chans, img_size = 10, 3, 32
    AUGMENT = AUGMENT

    def __init__(
        self,
        data_dir: str = "./data",
        augment: Augment = "none",
        resize: int | None = None,
        **kwargs: Any,
    ) -> None:
        if resize is not None and (resize < 1 or kwargs.get("device_pipeline")):
            raise ConfigError.of(
                self,
                f"resize={resize} must be >= 1, and the device pipeline keeps 32x32: set "
                "--data.device_pipeline=false to resize",
            )
        super().__init__(data_dir=data_dir, augment=augment, **kwargs)
        self.class_names = list(CIFAR10_CLASSES)
        self.resize = resize
        if resize is not None:
            self.img_size = resize  # linked into the model by the CLI

    def eval_transform(self) -> v2.Transform:
        transform = super().eval_transform()
        if self.resize is not None:  # on the uint8 image, before the float conversion
            resize = v2.Resize(self.resize, interpolation=v2.InterpolationMode.BICUBIC)
            transform.transforms.insert(1, resize)
        return transform

    def find_local(self) -> bool:
        folder = self.root / CIFAR10.base_folder
        if all((folder / name).is_file() for name, _ in _files()):
            return True  # integrity is checked by torchvision at setup
        tar = self.root / CIFAR10.filename
        if check_integrity(str(tar), CIFAR10.tgz_md5):  # a hand-placed archive needs no network
            with writing_into(self.root, f"{tar.name} is extracted"):
                extract_archive(str(tar), str(self.root))
            return True
        return False

    def download_files(self) -> list[tuple[Path, str]]:
        return [(self.root / CIFAR10.filename, CIFAR10.tgz_md5)]

    def damaged_files(self) -> list[tuple[Path, str]]:
        folder, problems = self.root / CIFAR10.base_folder, []
        for name, md5 in _files():
            path = folder / name
            if not path.is_file():
                continue
            if not check_integrity(str(path), md5):
                problems.append((path, "checksum mismatch: truncated or altered"))
            # a matching checksum means the official file, unless the md5 lists were changed
            elif name != CIFAR10.meta["filename"] and (
                why := batch_problem(path, self.num_classes)
            ):
                problems.append((path, why))
        return problems

    def how_to_fix(self) -> str:
        return (
            f"Put {CIFAR10.filename} (from https://www.cs.toronto.edu/~kriz/cifar.html) or its "
            f"extracted {CIFAR10.base_folder}/ folder in {self.root}, or set --data.data_dir "
            "to a directory that holds them"
        )


def _files() -> list[tuple[str, str]]:
    """(name, md5) of every file in cifar-10-batches-py/, read when called (tests patch them)."""
    batches = [*CIFAR10.train_list, *CIFAR10.test_list]
    return [*map(tuple, batches), (CIFAR10.meta["filename"], CIFAR10.meta["md5"])]


def batch_problem(path: Path, num_classes: int) -> str | None:
    """Why a CIFAR batch file's rows and labels disagree, or None."""
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")  # as torchvision reads it
    rows, labels = len(entry["data"]), entry.get("labels", entry.get("fine_labels", []))
    if rows != len(labels):
        return f"{rows} image rows, but {len(labels)} labels"
    bad = [(i, y) for i, y in enumerate(labels) if not 0 <= y < num_classes]
    if bad:
        return f"label {bad[0][1]} of row {bad[0][0]} is not in 0..{num_classes - 1}"
    return None
