"""LightningDataModules: CIFAR-10, Fashion-MNIST and a file-free synthetic set for smoke tests.

Every module exposes `num_classes`, `in_chans`, `img_size` and `class_names` right after
`__init__` (the CLI links them into the model), yields `(x, y)` batches with x float32 normalised
(B, C, H, W) and y int64, and can predict on a folder of PNG/JPEG files (`predict_dir`).
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset
from torchvision.datasets import CIFAR10, FashionMNIST, VisionDataset
from torchvision.datasets.utils import check_integrity, extract_archive
from torchvision.transforms import v2

from vit_lightning.loader import ResumableLoader, ResumableSampler, SeededView
from vit_lightning.resident import ResidentImages, passthrough

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FASHION_MNIST_CLASSES",
    "ImageDataModule",
    "TorchvisionDataModule",
    "SyntheticDataModule",
    "CIFAR10DataModule",
    "FashionMNISTDataModule",
    "ImageFolderFlat",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation; urllib's default is to wait forever


class ImageFolderFlat(Dataset):
    """The readable PNG/JPEG files directly inside a folder (sorted, non-recursive), label -1.

    Each file is opened at construction, so unreadable ones are dropped (with a warning naming
    them) before the length is fixed and a DataLoader never meets them mid-epoch.
    """

    def __init__(self, root: str | Path, mode: str, img_size: int, transform: v2.Transform) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"predict_dir {str(root.resolve())!r} is not a directory.")
        files = sorted(
            p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        self.paths: list[Path] = []
        for p in files:
            try:
                with Image.open(p) as im:
                    im.load()  # full decode: verify() misses truncated pixel data
                self.paths.append(p)
            except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
                rank_zero_warn(f"Skipping unreadable image {str(p)!r}: {e}")
        if not self.paths:
            raise FileNotFoundError(
                f"predict_dir {str(root.resolve())!r} holds no readable image "
                f"({'/'.join(IMAGE_SUFFIXES)} files, not searched recursively)."
            )
        self.mode, self.img_size = mode, img_size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as im:
            im = im.convert(self.mode).resize((self.img_size, self.img_size), Image.BICUBIC)
        return self.transform(im), -1


class ImageDataModule(L.LightningDataModule):
    """Shared loaders, split, transforms and predict-on-folder logic for the image datamodules.

    Subclasses set `num_classes`, `in_chans`, `img_size`, `class_names`, `mean`, `std` in
    `__init__` and implement `_fit_datasets()` and `_test_dataset()`.

    Args:
        batch_size: Samples per batch (per device).
        num_workers: DataLoader worker processes.
        pin_memory: Pin host memory for faster host-to-GPU copies (only used when CUDA exists).
        persistent_workers: Keep workers alive across epochs (only when num_workers > 0).
        predict_dir: Folder of PNG/JPEG files to predict on; None predicts on the test split.
    """

    num_classes: int
    in_chans: int
    img_size: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or num_workers < 0:
            raise ValueError(
                f"batch_size={batch_size} must be >= 1 and num_workers={num_workers} >= 0"
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.predict_dir = predict_dir
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.predict_set: Dataset | None = None
        self._predict_names: list[str] = []

    # -- transforms ---------------------------------------------------------------------------

    def _to_tensor(self) -> list[v2.Transform]:
        return [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(self.mean, self.std),
        ]

    def eval_transform(self) -> v2.Transform:
        """PIL image or uint8 array -> normalised float32 tensor, no augmentation."""
        return v2.Compose(self._to_tensor())

    def train_transform(self) -> v2.Transform:
        """Augmentations on the PIL image, then `eval_transform`, then tensor-level ones."""
        pre, post = self._augmentations()
        return v2.Compose(pre + self._to_tensor() + post)

    def _augmentations(self) -> tuple[list[v2.Transform], list[v2.Transform]]:
        """(before-tensor, after-normalise) train augmentations; none by default."""
        return [], []

    # -- datasets -----------------------------------------------------------------------------

    def _fit_datasets(self) -> tuple[Dataset, Dataset]:
        raise NotImplementedError

    def _test_dataset(self) -> Dataset:
        raise NotImplementedError

    @staticmethod
    def split_indices(n: int, val_size: int, seed: int) -> tuple[list[int], list[int]]:
        """Deterministic (train, val) index split of range(n); the val part has val_size items."""
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        return sorted(perm[val_size:]), sorted(perm[:val_size])

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and self.train_set is None:
            self.train_set, self.val_set = self._fit_datasets()
        if stage in ("test", None) and self.test_set is None:
            self.test_set = self._test_dataset()
        if stage in ("predict", None) and self.predict_set is None:
            if self.predict_dir is not None:
                mode = "RGB" if self.in_chans == 3 else "L"
                ds = ImageFolderFlat(self.predict_dir, mode, self.img_size, self.eval_transform())
                self._predict_names = [str(p) for p in ds.paths]
                self.predict_set = ds
            else:
                self.predict_set = self.test_set or self._test_dataset()
                self._predict_names = [f"test/{i}" for i in range(len(self.predict_set))]

    def predict_names(self) -> list[str]:
        """One name per predict sample, in loader order: the file path, or "test/<index>"."""
        if self.predict_set is None:
            raise RuntimeError("predict_names() is only valid after setup('predict').")
        return list(self._predict_names)

    # -- loaders ------------------------------------------------------------------------------

    def _eval_sampler(self, ds: Dataset) -> Sampler | None:
        """Under DDP, each eval sample goes to exactly one rank.

        Lightning's default DistributedSampler pads the eval set with duplicates up to a multiple
        of the world size, and those duplicates would be counted in val/test metrics. Given a
        DistributedSampler, Lightning keeps it, so this one (no padding; ranks may get one batch
        fewer, fine since no eval step syncs) decides. Metrics then sum exactly across ranks.
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return None
        return UnrepeatedDistributedSampler(
            ds, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    def _loader(self, ds: Dataset | None, train: bool = False) -> DataLoader:
        if ds is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a loader.")
        resident = isinstance(ds, ResidentImages)  # batches of indices: workers would only add IPC
        workers = 0 if resident else self.num_workers
        kwargs = dict(
            batch_size=self.batch_size,
            num_workers=workers,
            # pinning without CUDA only buys a warning per loader
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and workers > 0,
            # an own generator: creating an iterator must not draw from the global RNG, or a
            # resumed run (which builds its iterators at other moments) would diverge
            generator=torch.Generator().manual_seed(self.seed),
        )
        if resident:
            kwargs["collate_fn"] = passthrough
        if not train:
            return DataLoader(ds, sampler=self._eval_sampler(ds), **kwargs)
        world, rank = (
            (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        )
        sampler = ResumableSampler(ds, world, rank, shuffle=True, seed=self.seed)
        return ResumableLoader(
            ds if resident else SeededView(ds, self.seed), sampler=sampler, drop_last=True,
            batches_done=self._train_batches_done, **kwargs,
        )  # fmt: skip

    @property
    def seed(self) -> int:
        """The run's seed (`seed_everything`, which LightningCLI calls), else 0."""
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def _train_batches_done(self) -> int:
        """Batches of the current epoch that training has consumed (for resuming mid-epoch)."""
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Device pipeline: an index batch, now on the device, becomes the augmented `(x, y)`."""
        if isinstance(batch, dict) and "index" in batch:
            sets = {s.split: s for s in (self.train_set, self.val_set, self.test_set, self.predict_set)
                    if isinstance(s, ResidentImages)}  # fmt: skip
            return sets[batch["split"]].batch(batch["index"], batch.get("shift"), batch.get("flip"))
        return batch

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set)


class SyntheticDataModule(ImageDataModule):
    """File-free, learnable images for smoke tests: a smooth per-class template plus noise.

    Each class gets a fixed low-frequency template (4x4 Gaussian noise upsampled bilinearly);
    a sample is `template[y] + noise * randn`. Everything derives from `seed`, with a separate
    generator per split, so two modules with the same arguments hold identical tensors.

    Args:
        num_classes: Number of classes.
        img_size: Square image side.
        in_chans: Channels (3 or 1; also the mode predict-folder images are converted to).
        train_size: Training samples.
        val_size: Validation samples.
        test_size: Test samples.
        noise: Std of the per-pixel Gaussian noise (templates have roughly unit scale).
        seed: Seed for templates and samples.
        batch_size: See `ImageDataModule`.
        num_workers: See `ImageDataModule`.
        pin_memory: See `ImageDataModule`.
        persistent_workers: See `ImageDataModule`.
        predict_dir: See `ImageDataModule`.
    """

    def __init__(
        self,
        num_classes: int = 10,
        img_size: int = 32,
        in_chans: int = 3,
        train_size: int = 1024,
        val_size: int = 256,
        test_size: int = 256,
        noise: float = 0.5,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers, predict_dir)
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.save_hyperparameters()
        self.num_classes, self.in_chans, self.img_size = num_classes, in_chans, img_size
        self.class_names = [f"class_{i}" for i in range(num_classes)]
        # only used for predict-on-folder: maps [0, 1] pixels to [-1, 1], the templates' scale
        self.mean, self.std = (0.5,) * in_chans, (0.5,) * in_chans

    def _templates(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(4 * self.hparams.seed)
        base = torch.randn(self.num_classes, self.in_chans, 4, 4, generator=g)
        return F.interpolate(base, size=self.img_size, mode="bilinear", align_corners=False)

    def _split(self, n: int, stream: int) -> TensorDataset:
        # 4 * seed + {1, 2, 3}: disjoint streams per split, never colliding with another seed's
        g = torch.Generator().manual_seed(4 * self.hparams.seed + stream)
        y = torch.randperm(n, generator=g) % self.num_classes  # balanced, shuffled labels
        x = self._templates()[y] + self.hparams.noise * torch.randn(
            n, self.in_chans, self.img_size, self.img_size, generator=g
        )
        return TensorDataset(x, y)

    def _fit_datasets(self) -> tuple[Dataset, Dataset]:
        return self._split(self.hparams.train_size, 1), self._split(self.hparams.val_size, 2)

    def _test_dataset(self) -> Dataset:
        return self._split(self.hparams.test_size, 3)


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


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every socket operation while downloading (unless a default is already set)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if old is None else old)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


class TorchvisionDataModule(ImageDataModule):
    """A torchvision train/test dataset with a seeded train/val split and clear missing-data errors.

    Subclasses set `dataset_cls`, `dataset_name`, `train_len` and implement `_prepare_local()`
    (make the files readable without the network, if possible), `_archives()` (files a failed
    download may leave half-written) and `_fix_hint()` (what the user should do).

    Args:
        data_dir: Root directory handed to the torchvision dataset.
        download: Download when the data is not found locally.
        val_size: Training images held out for validation (seeded split).
        split_seed: Seed of the train/val split.
        batch_size: See `ImageDataModule`.
        num_workers: See `ImageDataModule`.
        pin_memory: See `ImageDataModule`.
        persistent_workers: See `ImageDataModule`.
        predict_dir: See `ImageDataModule`.
        device_pipeline: Hold the uint8 images on the training device and crop, flip and
            normalise them there in batches (`vit_lightning.resident`); the loader then only
            yields indices (num_workers is ignored). Crop and flip only: other augmentations
            must be off.
    """

    dataset_cls: type[VisionDataset]
    dataset_name: str
    train_len: int

    def __init__(
        self,
        data_dir: str = "./data",
        download: bool = True,
        val_size: int = 5000,
        split_seed: int = 0,
        batch_size: int = 128,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_dir: str | None = None,
        device_pipeline: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers, predict_dir)
        self.device_pipeline = device_pipeline
        if not 0 < val_size < self.train_len:
            raise ValueError(f"val_size must be in (0, {self.train_len}), got {val_size}")
        self.data_dir, self.download = data_dir, download
        self.val_size, self.split_seed = val_size, split_seed

    @property
    def root(self) -> Path:
        """Absolute data directory, so messages say exactly where we looked."""
        return Path(self.data_dir).expanduser().resolve()

    def _prepare_local(self) -> bool:
        raise NotImplementedError

    def _archives(self) -> list[tuple[Path, str]]:
        raise NotImplementedError

    def _fix_hint(self) -> str:
        raise NotImplementedError

    def _fix(self) -> str:
        hint = self._fix_hint()
        return hint + ("" if self.download else ", or pass --data.download=true") + "."

    def prepare_data(self) -> None:
        """Make the files available: local copy first, then torchvision's download."""
        if self._prepare_local():
            return
        name, root = self.dataset_name, self.root
        if not self.download:
            raise FileNotFoundError(f"{name} not found in {root} (download=False). {self._fix()}")
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                for train in (True, False):
                    self.dataset_cls(str(root), train=train, download=True)
        except Exception as e:  # URLError, OSError, torchvision's md5 RuntimeError, ...
            # a half-written archive must not pass for a download on the next run
            for path, md5 in self._archives():
                if path.is_file() and not check_integrity(str(path), md5):
                    path.unlink()
            raise RuntimeError(
                f"Could not download {name} into {root} ({type(e).__name__}: {e}). {self._fix()}"
            ) from e

    def _dataset(self, train: bool, transform: v2.Transform) -> VisionDataset:
        try:
            return self.dataset_cls(str(self.root), train=train, transform=transform)
        except Exception as e:  # torchvision: "Dataset not found or corrupted", or a read error
            damaged = self._damaged_files()
            what = (
                "; ".join(f"{path} ({why})" for path, why in damaged)
                if damaged
                else f"files in {self.root}"
            )
            raise RuntimeError(
                f"{self.dataset_name} {what}: missing or corrupted ({e}). "
                f"Delete the damaged files and retry. {self._fix()}"
            ) from e

    def _damaged_files(self) -> list[tuple[Path, str]]:
        """(file, reason) for each present but unreadable data file; used in error messages."""
        return []

    def _crop_flip(self) -> tuple[int, bool]:
        """(padding, flip) of the train augmentation, for the device pipeline; raises if the
        configured augmentation is more than crop and flip."""
        raise NotImplementedError

    def _resident(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's raw uint8 images (N, C, H, W) and labels, for the device pipeline."""
        ds = self._dataset(train, None)
        images = torch.as_tensor(ds.data)  # CIFAR: numpy (N, H, W, C); MNIST-style: (N, H, W)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        return images.contiguous(), torch.as_tensor(ds.targets)

    def _fit_datasets(self) -> tuple[Dataset, Dataset]:
        if self.device_pipeline:
            pad, flip = self._crop_flip()
            images, labels = self._resident(True)
            train_idx, val_idx = self.split_indices(len(images), self.val_size, self.split_seed)
            train_idx, val_idx = torch.tensor(train_idx), torch.tensor(val_idx)
            return (
                ResidentImages(images[train_idx], labels[train_idx], self.mean, self.std,
                               "train", pad, flip, self.seed),
                ResidentImages(images[val_idx], labels[val_idx], self.mean, self.std, "val"),
            )  # fmt: skip
        # two dataset objects over the same files: val must see eval transforms, not augmentations
        train, val = (
            self._dataset(True, self.train_transform()),
            self._dataset(True, self.eval_transform()),
        )
        if not 0 < self.val_size < len(train):
            raise ValueError(f"val_size must be in (0, {len(train)}), got {self.val_size}")
        train_idx, val_idx = self.split_indices(len(train), self.val_size, self.split_seed)
        return Subset(train, train_idx), Subset(val, val_idx)

    def _test_dataset(self) -> Dataset:
        if self.device_pipeline:
            return ResidentImages(*self._resident(False), self.mean, self.std, "test")
        return self._dataset(False, self.eval_transform())


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: 45k/5k seeded train/val split of the 50k training images; the 10k test set.

    Args:
        data_dir: Directory holding `cifar-10-batches-py/` or `cifar-10-python.tar.gz`.
        download: Download from the official site when neither is there.
        val_size: Training images held out for validation.
        split_seed: Seed of the train/val split.
        augment: Policy after crop+flip: "none", "autoaugment" (CIFAR-10 policy), "randaugment"
            or "trivialaugment".
        random_erasing: Probability of RandomErasing on the normalised tensor (0 disables).
        batch_size: See `ImageDataModule`.
        num_workers: See `ImageDataModule`.
        pin_memory: See `ImageDataModule`.
        persistent_workers: See `ImageDataModule`.
        predict_dir: See `ImageDataModule`.
        device_pipeline: See `TorchvisionDataModule`; needs augment=none and random_erasing=0
            (crop+flip, as in the torchvision pipeline, is kept).
    """

    dataset_cls = CIFAR10
    dataset_name = "CIFAR-10"
    train_len = 50000
    mean, std = CIFAR10_MEAN, CIFAR10_STD
    num_classes, in_chans, img_size = 10, 3, 32

    def __init__(
        self,
        data_dir: str = "./data",
        download: bool = True,
        val_size: int = 5000,
        split_seed: int = 0,
        augment: Literal["none", "autoaugment", "randaugment", "trivialaugment"] = "none",
        random_erasing: float = 0.0,
        batch_size: int = 128,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_dir: str | None = None,
        device_pipeline: bool = False,
    ) -> None:
        super().__init__(
            data_dir, download, val_size, split_seed,
            batch_size, num_workers, pin_memory, persistent_workers, predict_dir, device_pipeline,
        )  # fmt: skip
        if augment not in ("none", "autoaugment", "randaugment", "trivialaugment"):
            raise ValueError(
                f"augment must be none/autoaugment/randaugment/trivialaugment, got {augment!r}"
            )
        if not 0.0 <= random_erasing <= 1.0:
            raise ValueError(f"random_erasing must be in [0, 1], got {random_erasing}")
        self.augment, self.random_erasing = augment, random_erasing
        if device_pipeline:
            self._crop_flip()  # fail at construction, not at setup
        self.class_names = list(CIFAR10_CLASSES)
        self.save_hyperparameters()

    def _augmentations(self) -> tuple[list[v2.Transform], list[v2.Transform]]:
        policy = {
            "none": [],
            "autoaugment": [v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)],
            "randaugment": [v2.RandAugment()],
            "trivialaugment": [v2.TrivialAugmentWide()],
        }[self.augment]
        pre = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), *policy]
        post = [v2.RandomErasing(p=self.random_erasing)] if self.random_erasing > 0 else []
        return pre, post

    def _crop_flip(self) -> tuple[int, bool]:
        if self.augment != "none" or self.random_erasing > 0:
            raise ValueError(
                f"data.device_pipeline=true does random crop and flip only, but augment="
                f"{self.augment!r} and random_erasing={self.random_erasing}: set "
                "--data.augment=none --data.random_erasing=0, or --data.device_pipeline=false"
            )
        return 4, True

    def _prepare_local(self) -> bool:
        if (self.root / CIFAR10.base_folder).is_dir():
            return True  # integrity is checked by torchvision at setup
        tar = self.root / CIFAR10.filename
        if check_integrity(str(tar), CIFAR10.tgz_md5):  # a hand-placed archive needs no network
            extract_archive(str(tar), str(self.root))
            return True
        return False

    def _archives(self) -> list[tuple[Path, str]]:
        return [(self.root / CIFAR10.filename, CIFAR10.tgz_md5)]

    def _damaged_files(self) -> list[tuple[Path, str]]:
        folder = self.root / CIFAR10.base_folder
        files = [
            *CIFAR10.train_list,
            *CIFAR10.test_list,
            [CIFAR10.meta["filename"], CIFAR10.meta["md5"]],
        ]
        return [
            (folder / name, "checksum mismatch: truncated or altered")
            for name, md5 in files
            if (folder / name).is_file() and not check_integrity(str(folder / name), md5)
        ]

    def _fix_hint(self) -> str:
        return (
            f"Put {CIFAR10.filename} (from https://www.cs.toronto.edu/~kriz/cifar.html) or its "
            f"extracted {CIFAR10.base_folder}/ folder in {self.root}, or set --data.data_dir "
            "to a directory that holds them"
        )


class FashionMNISTDataModule(TorchvisionDataModule):
    """Fashion-MNIST (28x28 grayscale): seeded train/val split of the 60k training images.

    Before downloading, the four idx files are looked up in `local_dirs` (gzipped or not) and
    decompressed into `<data_dir>/FashionMNIST/raw/`, where torchvision reads them.

    Args:
        data_dir: Root directory; torchvision reads `<data_dir>/FashionMNIST/raw/`.
        download: Download when no local copy is found.
        val_size: Training images held out for validation.
        split_seed: Seed of the train/val split.
        augment: Training augmentation: "none", "flip" (horizontal) or "crop_flip"
            (RandomCrop(28, padding=2), then flip).
        local_dirs: Directories searched for the idx files; default Debian's install location.
        batch_size: See `ImageDataModule`.
        num_workers: See `ImageDataModule`.
        pin_memory: See `ImageDataModule`.
        persistent_workers: See `ImageDataModule`.
        predict_dir: See `ImageDataModule`.
        device_pipeline: See `TorchvisionDataModule`; every `augment` choice is supported.
    """

    dataset_cls = FashionMNIST
    dataset_name = "Fashion-MNIST"
    train_len = 60000
    mean, std = FASHION_MNIST_MEAN, FASHION_MNIST_STD
    num_classes, in_chans, img_size = 10, 1, 28
    files = tuple(name.removesuffix(".gz") for name, _ in FashionMNIST.resources)

    def __init__(
        self,
        data_dir: str = "./data",
        download: bool = True,
        val_size: int = 5000,
        split_seed: int = 0,
        augment: Literal["none", "flip", "crop_flip"] = "flip",
        local_dirs: list[str] | None = None,
        batch_size: int = 128,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_dir: str | None = None,
        device_pipeline: bool = False,
    ) -> None:
        super().__init__(
            data_dir, download, val_size, split_seed,
            batch_size, num_workers, pin_memory, persistent_workers, predict_dir, device_pipeline,
        )  # fmt: skip
        if augment not in ("none", "flip", "crop_flip"):
            raise ValueError(f"augment must be none/flip/crop_flip, got {augment!r}")
        self.augment = augment
        self.local_dirs = [DEBIAN_FASHION_MNIST_DIR] if local_dirs is None else list(local_dirs)
        self.class_names = list(FASHION_MNIST_CLASSES)
        self.save_hyperparameters()

    @property
    def raw_dir(self) -> Path:
        return self.root / FashionMNIST.__name__ / "raw"

    def _augmentations(self) -> tuple[list[v2.Transform], list[v2.Transform]]:
        crop = [v2.RandomCrop(28, padding=2)] if self.augment == "crop_flip" else []
        flip = [v2.RandomHorizontalFlip()] if self.augment != "none" else []
        return crop + flip, []

    def _crop_flip(self) -> tuple[int, bool]:
        return 2 if self.augment == "crop_flip" else 0, self.augment != "none"

    def _prepare_local(self) -> bool:
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
                dst, tmp = self.raw_dir / f, self.raw_dir / f"{f}.tmp{os.getpid()}"
                try:  # write-then-rename: an interrupted copy never looks like a complete file
                    with (
                        (gzip.open if src.suffix == ".gz" else open)(src, "rb") as i,
                        open(tmp, "wb") as o,
                    ):
                        shutil.copyfileobj(i, o)
                    os.replace(tmp, dst)
                finally:
                    tmp.unlink(missing_ok=True)
            return True
        return False

    def _archives(self) -> list[tuple[Path, str]]:
        return [(self.raw_dir / name, md5) for name, md5 in FashionMNIST.resources]

    def _damaged_files(self) -> list[tuple[Path, str]]:
        bad = []
        for name in self.files:
            path = self.raw_dir / name
            if path.is_file() and (why := idx_problem(path)):
                bad.append((path, why))
        return bad

    def _fix_hint(self) -> str:
        return (
            f"Searched {[str(self.raw_dir), *self.local_dirs]}. Install Debian's copy "
            "(apt-get install dataset-fashion-mnist), or put the four idx files "
            f"({', '.join(self.files)}, optionally .gz) in {self.raw_dir}/, or set "
            "--data.data_dir / --data.local_dirs"
        )
