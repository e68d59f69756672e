"""`TorchvisionDataModule`: a torchvision dataset on disk, found or downloaded, checked, split.

A dataset built on it declares, as class attributes, `dataset_cls` (the torchvision class),
`dataset_name`, `train_len`, `mean`, `std`, `num_classes`, `in_chans`, `img_size` and its
`AUGMENT` table (see `augment.py`), and implements four methods about its files:
`find_local()`, `download_files()`, `damaged_files()` and `how_to_fix()`.

Every failure about the files is a `DataError` (a `UserError`: one line from the CLI, exit 1) that
names the file or folder and says what to do; `DataNotFoundError` is also a FileNotFoundError.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset
from torchvision.datasets import VisionDataset
from torchvision.datasets.utils import check_integrity
from torchvision.transforms import v2

from vit_lightning.data.augment import Table, choose
from vit_lightning.data.base import ImageDataModule
from vit_lightning.data.device_augment import Recipe, from_transforms
from vit_lightning.data.device_pipeline import ResidentImages
from vit_lightning.errors import ConfigError, DataError, DataNotFoundError

DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation; urllib's default is to wait forever


class TorchvisionDataModule(ImageDataModule):
    """Seeded train/val split of the training files; the test files for `test`.

    Args:
        data_dir: Root directory handed to the torchvision dataset.
        download: Download when the data is not found locally.
        val_size: Training images held out for validation (seeded split).
        split_seed: Seed of the train/val split.
        augment: Training augmentation, a name from the dataset's `AUGMENT` table.
        random_erasing: Probability of RandomErasing (torchvision's defaults, value 0) on the
            normalised tensor, after the policy; 0 disables.
        device_pipeline: Hold the uint8 images on the training device and run the whole
            training augmentation there in batches, with torchvision's distributions
            (`device_pipeline.py`, `device_augment.py`); the loader then only yields indices
            and draws (num_workers is ignored).
        **kwargs: `ImageDataModule`'s arguments (batch_size, num_workers, ...).
    """

    dataset_cls: type[VisionDataset]
    dataset_name: str
    train_len: int
    AUGMENT: Table

    def __init__(
        self,
        data_dir: str = "./data",
        download: bool = True,
        val_size: int = 5000,
        split_seed: int = 0,
        augment: str = "none",
        random_erasing: float = 0.0,
        device_pipeline: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0 < val_size < self.train_len:
            raise ConfigError.of(self, f"val_size must be in (0, {self.train_len}), got {val_size}")
        self.policy = choose(self.AUGMENT, augment, owner=self)
        if not 0.0 <= random_erasing <= 1.0:
            raise ConfigError.of(self, f"random_erasing must be in [0, 1], got {random_erasing}")
        self.random_erasing = random_erasing
        if device_pipeline:  # a transform it cannot run is a config error, found here
            self.device_augment()
        self.data_dir, self.download = data_dir, download
        if self.root.exists() and not self.root.is_dir():  # found early, before any run file
            raise ConfigError.of(self, self._not_a_dir())
        self.val_size, self.split_seed = val_size, split_seed
        self.augment, self.device_pipeline = augment, device_pipeline

    def train_transform(self) -> v2.Transform:
        transform = super().train_transform()
        if self.random_erasing > 0:  # on the normalised tensor, after the policy
            transform.transforms.append(v2.RandomErasing(p=self.random_erasing))
        return transform

    def device_augment(self) -> tuple[int, bool, Recipe]:
        """(pad, flip, recipe): the training augmentation as the device pipeline runs it."""
        size = (self.img_size, self.img_size)
        return from_transforms(self.policy.transforms(), self.random_erasing, size)

    @property
    def root(self) -> Path:
        """Absolute data directory, so messages say exactly where we looked."""
        return Path(self.data_dir).expanduser().resolve()

    # -- what each dataset says about its files -----------------------------------------------

    def find_local(self) -> bool:
        """Make the files readable without the network if a copy can be found; True if so."""
        raise NotImplementedError

    def download_files(self) -> list[tuple[Path, str]]:
        """(path, md5) of the files a download writes, so a half-written one can be removed."""
        raise NotImplementedError

    def damaged_files(self) -> list[tuple[Path, str]]:
        """(file, reason) for each present data file that is unreadable, or whose images and
        labels disagree (counts, or a label that is no class), for error messages."""
        raise NotImplementedError

    def how_to_fix(self) -> str:
        """What the user can do when the data cannot be found."""
        raise NotImplementedError

    # -- finding, downloading and reading -----------------------------------------------------

    def _fix(self) -> str:
        return self.how_to_fix() + ("" if self.download else ", or pass --data.download=true") + "."

    def _not_a_dir(self) -> str:
        return (
            f"data_dir {self.root} is a file, not a directory: set --data.data_dir to the "
            f"directory that holds (or will hold) the {self.dataset_name} files."
        )

    def _check_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():  # else "not found" would mislead
            raise ConfigError.of(self, self._not_a_dir())

    def prepare_data(self) -> None:
        """Make the files available: local copy first, then torchvision's download."""
        self._check_root()
        if self.find_local():
            return
        name, root = self.dataset_name, self.root
        if not self.download:
            raise DataNotFoundError(f"{name} not found in {root} (download=False). {self._fix()}")
        check_writable(root, f"the {name} download is saved")
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                for train in (True, False):
                    self.dataset_cls(str(root), train=train, download=True)
        except Exception as e:  # URLError, OSError, torchvision's md5 RuntimeError, ...
            # a half-written archive must not pass for a download on the next run
            for path, md5 in self.download_files():
                if path.is_file() and not check_integrity(str(path), md5):
                    path.unlink()
            raise DataError(
                f"Could not download {name} into {root} ({type(e).__name__}: {e}). {self._fix()}"
            ) from e

    def _dataset(self, train: bool, transform: v2.Transform | None) -> VisionDataset:
        self._check_root()
        try:
            ds = self.dataset_cls(str(self.root), train=train, transform=transform)
        except Exception as e:  # torchvision: "Dataset not found or corrupted", or a read error
            damaged = self.damaged_files()
            what = "; ".join(f"{p} ({why})" for p, why in damaged) or f"files in {self.root}"
            raise DataError(
                f"{self.dataset_name} {what}: missing or corrupted ({e}). "
                f"Delete the damaged files and retry. {self._fix()}"
            ) from e
        self._check_labels(ds, train)
        return ds

    def _check_labels(self, ds: VisionDataset, train: bool) -> None:
        """One label per image, each a class: else a run trains at chance accuracy (counts
        differ: torchvision pairs them by position) or dies mid-epoch (a label out of range)."""
        labels = torch.as_tensor(ds.targets)
        images, bad = len(ds.data), (labels < 0) | (labels >= self.num_classes)
        if len(labels) == images and not bad.any():
            return
        what = "; ".join(f"{p} ({why})" for p, why in self.damaged_files())
        if not what:  # a dataset whose files are fine one by one, wrong together
            split = "training" if train else "test"
            what = f"{split} files in {self.root} ({images} images, {len(labels)} labels"
            if bad.any():
                i = int(bad.nonzero()[0])
                what += f"; label {int(labels[i])} of image {i} is not in 0..{self.num_classes - 1}"
            what += ")"
        raise DataError(
            f"{self.dataset_name} {what}: the images and labels disagree. "
            f"Delete the damaged files and retry. {self._fix()}"
        )

    def _resident(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's raw uint8 images (N, C, H, W) and labels, for the device pipeline."""
        ds = self._dataset(train, None)
        images = torch.as_tensor(ds.data)  # CIFAR: numpy (N, H, W, C); MNIST-style: (N, H, W)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        return images.contiguous(), torch.as_tensor(ds.targets)

    def fit_datasets(self) -> tuple[Dataset, Dataset]:
        if self.device_pipeline:
            pad, flip, recipe = self.device_augment()
            images, labels = self._resident(True)
            train_idx, val_idx = self.split_indices(len(images), self.val_size, self.split_seed)
            train_idx, val_idx = torch.tensor(train_idx), torch.tensor(val_idx)
            train = ResidentImages(
                images[train_idx],
                labels[train_idx],
                self.mean,
                self.std,
                "train",
                pad=pad,
                flip=flip,
                seed=self.seed,
                recipe=recipe,
            )
            val = ResidentImages(images[val_idx], labels[val_idx], self.mean, self.std, "val")
            return train, val
        # two dataset objects over the same files: val must see eval transforms, not augmentations
        train = self._dataset(True, self.train_transform())
        val = self._dataset(True, self.eval_transform())
        if not 0 < self.val_size < len(train):  # the files hold fewer images than the real set
            raise DataError(
                f"val_size={self.val_size} leaves no training images: {self.root} holds only "
                f"{len(train)} {self.dataset_name} training images. Set --data.val_size lower."
            )
        train_idx, val_idx = self.split_indices(len(train), self.val_size, self.split_seed)
        return Subset(train, train_idx), Subset(val, val_idx)

    def test_dataset(self) -> Dataset:
        if self.device_pipeline:
            return ResidentImages(*self._resident(False), self.mean, self.std, "test")
        return self._dataset(False, self.eval_transform())


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every socket operation while downloading (unless a default is already set)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if old is None else old)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def check_writable(folder: Path, what: str) -> None:
    """Fail naming `folder` before anything is written there, not halfway through a copy."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # permission bits miss read-only mounts
            pass
    except OSError as e:
        raise DataError(
            f"Cannot write to {folder}, where {what} ({e.strerror or e}). Make it writable, or "
            "set --data.data_dir to a writable directory."
        ) from e


@contextmanager
def writing_into(folder: Path, what: str) -> Iterator[None]:
    """`check_writable`, then an OSError while writing (e.g. a full disk) named the same way."""
    check_writable(folder, what)
    try:
        yield
    except DataError:
        raise
    except OSError as e:
        raise DataError(
            f"Could not write to {folder}, where {what} ({e}). Free space or fix the "
            "permissions there, or set --data.data_dir to another directory."
        ) from e
