"""Fashion-MNIST through torchvision's `FashionMNIST`; Debian's copy is used when present."""

from __future__ import annotations

import gzip
import math
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.datasets import FashionMNIST
from torchvision.transforms import v2

from vit_lightning.data.augment import Policy, choices, describe
from vit_lightning.data.torchvision_base import TorchvisionDataModule, writing_into
from vit_lightning.errors import DataError

FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist

AUGMENT = {
    "none": Policy("no augmentation", list),
    "flip": Policy("horizontal flip", lambda: [v2.RandomHorizontalFlip()]),
    "crop_flip": Policy(
        "random crop (pad 2), then horizontal flip",
        lambda: [v2.RandomCrop(28, padding=2), v2.RandomHorizontalFlip()],
    ),
    "randaugment": Policy(
        "horizontal flip, then RandAugment", lambda: [v2.RandomHorizontalFlip(), v2.RandAugment()]
    ),
    "trivialaugment": Policy(
        "horizontal flip, then TrivialAugmentWide",
        lambda: [v2.RandomHorizontalFlip(), v2.TrivialAugmentWide()],
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
            random_erasing, device_pipeline) and `ImageDataModule`'s (batch_size, num_workers, ...).
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
            with writing_into(self.raw_dir, f"the idx files from {d} are decompressed"):
                for f, src in found.items():
                    _copy_decompressed(src, self.raw_dir / f)
            return True
        return False

    def download_files(self) -> list[tuple[Path, str]]:
        return [(self.raw_dir / name, md5) for name, md5 in FashionMNIST.resources]

    def damaged_files(self) -> list[tuple[Path, str]]:
        problems = []
        for name_x, name_y in zip(self.files[::2], self.files[1::2], strict=True):
            x, y = self.raw_dir / name_x, self.raw_dir / name_y  # one split's images, labels
            bad = [(p, why) for p in (x, y) if p.is_file() and (why := idx_problem(p))]
            problems += bad
            if bad or not (x.is_file() and y.is_file()):
                continue
            (n_x, *hw), (n_y, *rest) = idx_dims(x), idx_dims(y)
            if hw != [self.img_size] * 2:
                want = f"[N, {self.img_size}, {self.img_size}]"
                problems.append((x, f"shape {[n_x, *hw]}, images need {want}"))
            elif rest:
                problems.append((y, f"{len(rest) + 1} dimensions, labels have 1"))
            elif n_x != n_y:
                problems.append((y, f"{n_y} labels, but {x.name} holds {n_x} images"))
            elif why := label_problem(y, self.num_classes):
                problems.append((y, why))
        return problems

    def how_to_fix(self) -> str:
        return (
            f"Searched {[str(self.raw_dir), *self.local_dirs]}. Install Debian's copy "
            "(apt-get install dataset-fashion-mnist), or put the four idx files "
            f"({', '.join(self.files)}, optionally .gz) in {self.raw_dir}/, or set "
            "--data.data_dir / --data.local_dirs"
        )


def _copy_decompressed(src: Path, dst: Path) -> None:
    """Write-then-rename: an interrupted copy never looks like a complete file, and a damaged
    source is named here, not later as its copy."""
    tmp = dst.with_name(f"{dst.name}.tmp{os.getpid()}")
    try:
        try:
            with (gzip.open if src.suffix == ".gz" else open)(src, "rb") as i, open(tmp, "wb") as o:
                shutil.copyfileobj(i, o)
            why = idx_problem(tmp)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:  # a truncated or non-gzip .gz
            why = f"{type(e).__name__}: {e}"
        if why:
            raise DataError(
                f"Fashion-MNIST {src} is damaged ({why}). Replace it with an intact copy, or "
                "take its directory out of --data.local_dirs."
            )
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def idx_dims(path: Path) -> list[int]:
    """The sizes in an uncompressed idx file's header (MNIST format: magic 0x0000 08 <ndim>,
    ndim big-endian int32 sizes, then uint8 data); a DataError saying why it is unreadable."""
    size = path.stat().st_size
    if size == 0:
        raise DataError("empty file")
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:3] != b"\x00\x00\x08" or not 1 <= head[3] <= 4:
            raise DataError("not an idx file of uint8 (bad magic number)")
        dims = f.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        raise DataError(f"{size} bytes: truncated header")
    sizes = list(struct.unpack(f">{head[3]}I", dims))
    expected = 4 + 4 * head[3] + math.prod(sizes)  # Python ints: no overflow
    if size != expected:
        cut = "truncated" if size < expected else "trailing bytes"
        raise DataError(f"{size} bytes, its header says {expected}: {cut}")
    return sizes


def idx_problem(path: Path) -> str | None:
    """Why an uncompressed idx file is unreadable, or None if its header and size agree."""
    try:
        idx_dims(path)
    except DataError as e:
        return str(e)
    return None


def label_problem(path: Path, num_classes: int) -> str | None:
    """Why a (readable) idx label file holds a label that is no class, or None."""
    labels = np.fromfile(path, dtype=np.uint8, offset=8)  # after magic and count
    bad = np.flatnonzero(labels >= num_classes)
    if not bad.size:
        return None
    return f"label {labels[bad[0]]} at index {bad[0]} is not in 0..{num_classes - 1}"
