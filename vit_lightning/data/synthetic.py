"""`SyntheticDataModule`: file-free, learnable images for smoke tests and demos."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from vit_lightning.data.base import ImageDataModule
from vit_lightning.errors import ConfigError


class SyntheticDataModule(ImageDataModule):
    """A smooth per-class template plus noise.

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
        seed: Seed for templates and samples (the data itself; `loader_seed` orders it).
        batch_size: Samples per batch (per device).
        num_workers: DataLoader worker processes.
        **kwargs: `ImageDataModule`'s other arguments (pin_memory, predict_dir, ...).
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
        **kwargs: Any,
    ) -> None:
        if in_chans not in (1, 3):
            raise ConfigError.of(self, f"in_chans must be 1 or 3, got {in_chans}")
        if num_classes < 2:
            raise ConfigError.of(self, f"num_classes must be >= 2, got {num_classes}")
        super().__init__(batch_size=batch_size, num_workers=num_workers, **kwargs)
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

    def fit_datasets(self) -> tuple[Dataset, Dataset]:
        return self._split(self.hparams.train_size, 1), self._split(self.hparams.val_size, 2)

    def test_dataset(self) -> Dataset:
        return self._split(self.hparams.test_size, 3)
