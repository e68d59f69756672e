"""Fashion-MNIST through torchvision's `FashionMNIST`; Debian's copy is used when present."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from pathlib import Path
from typing import Any

from torchvision.datasets import FashionMNIST
from torchvision.transforms import v2

from vit_lightning.data.augment import DeviceAugment, Policy, choices, describe
from vit_lightning.data.torchvision_base import TorchvisionDataModule

FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist

AUGMENT = {
    "none": Policy("no augmentation", list, DeviceAugment()),
    "flip": Policy(
        "horizontal flip", lambda: [v2.RandomHorizontalFlip()], DeviceAugment(flip=True)
    ),
    "crop_flip": Policy(
        "random crop (pad 2), then horizontal flip",
        lambda: [v2.RandomCrop(28, padding=2), v2.RandomHorizontalFlip()],
        DeviceAugment(pad=2, flip=True),
    ),
}
Augment = choices(AUGMENT)


class FashionMNISTDataModule(TorchvisionDataModule):
    __doc__ = f"""Fashion-MNIST (28x28 grayscale): seeded train/val split of the 60k training images.

    Before downloading, the four idx files are looked up in `local_dirs` (gzipped or not) and
    decompressed into `<data_dir>/FashionMNIST/raw/`, where torchvision reads them.

    Args:
        data_dir: Root directory; torchvision reads `<data_dir>/FashionMNIST/raw/`.
        augment: Training augmentation: {describe(AUGMENT)}.
        local_dirs: Directories searched for the idx files; default Debian's install location.
        **kwargs: `TorchvisionDataModule`'s arguments (download, val_size, split_seed,
            device_pipeline) and `ImageDataModule`'s (batch_size, num_workers, ...).
    """

    dataset_cls = FashionMNIST
    dataset_name = "Fashion-MNIST"
    train_len = 60000
    mean, std = FASHION_MNIST_MEAN, FASHION_MNIST_STD
    num_classes, in_chans, img_size = 10, 1, 28
    AUGMENT = AUGMENT
    files = tuple(name.removesuffix(".gz") for name, _ in FashionMNIST.resources)

    def __init__(
        self,
        data_dir: str = "./data",
        augment: Augment = "flip",
        local_dirs: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, augment=augment, **kwargs)
        self.local_dirs = [DEBIAN_FASHION_MNIST_DIR] if local_dirs is None else list(local_dirs)
        self.class_names = list(FASHION_MNIST_CLASSES)

    @property
    def raw_dir(self) -> Path:
        return self.root / FashionMNIST.__name__ / "raw"

    def find_local(self) -> bool:
        if all((self.raw_dir / f).is_file() for f in self.files):
            return True
        for d in map(Path, self.local_dirs):
            found = {
                f: next((d / n for n in (f, f + ".gz") if (d / n).is_file()), None)
                for f in self.files
            }
            if None in found.values():
                continue
            self.raw_dir.mkdir(parents=True, exist_ok=True)
            for f, src in found.items():
                _copy_decompressed(src, self.raw_dir / f)
            return True
        return False

    def download_files(self) -> list[tuple[Path, str]]:
        return [(self.raw_dir / name, md5) for name, md5 in FashionMNIST.resources]

    def damaged_files(self) -> list[tuple[Path, str]]:
        paths = [self.raw_dir / name for name in self.files]
        return [(p, why) for p in paths if p.is_file() and (why := idx_problem(p))]

    def how_to_fix(self) -> str:
        return (
            f"Searched {[str(self.raw_dir), *self.local_dirs]}. Install Debian's copy "
            "(apt-get install dataset-fashion-mnist), or put the four idx files "
            f"({', '.join(self.files)}, optionally .gz) in {self.raw_dir}/, or set "
            "--data.data_dir / --data.local_dirs"
        )


def _copy_decompressed(src: Path, dst: Path) -> None:
    """Write-then-rename: an interrupted copy never looks like a complete file."""
    tmp = dst.with_name(f"{dst.name}.tmp{os.getpid()}")
    try:
        with (gzip.open if src.suffix == ".gz" else open)(src, "rb") as i, open(tmp, "wb") as o:
            shutil.copyfileobj(i, o)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def idx_problem(path: Path) -> str | None:
    """Why an uncompressed idx file (MNIST format) is unreadable, or None if its header and size
    agree: magic 0x0000 08 <ndim>, ndim big-endian int32 sizes, then uint8 data."""
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:3] != b"\x00\x00\x08" or not 1 <= head[3] <= 4:
            return "not an idx file of uint8 (bad magic number)"
        dims = f.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        return "truncated header"
    n = 1
    for d in struct.unpack(f">{head[3]}I", dims):
        n *= d
    expected, size = 4 + 4 * head[3] + n, path.stat().st_size
    return None if size == expected else f"{size} bytes, its header says {expected}: truncated"
