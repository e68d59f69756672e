"""A data set held on the training device as uint8, augmented there in batches (airbench-style).

For 32x32 images a DataLoader spends longer per image (PIL, per-sample transforms, collate,
host-to-device copy) than a GPU spends training on it. Here the loader yields only indices and
the augmentation's draws, a few bytes per image drawn batched on the CPU; the images live on the
device, one gather does pad + crop + flip for the whole batch, `device_augment.Recipe` runs the
policy (AutoAugment, RandAugment, TrivialAugmentWide) on the uint8 batch, one elementwise pass
normalises it, and random erasing zeroes each image's box.

The crop is torchvision's `RandomCrop(size, padding=pad)` (zero fill) followed by
`RandomHorizontalFlip()`: offsets uniform in [0, 2 * pad] and a fair coin per image, the same
distribution, and for the same parameters the same float32 tensor, bit for bit; the policies
and erasing keep torchvision's distributions and kernels (see `device_augment.py`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from vit_lightning.data.device_augment import Recipe
from vit_lightning.data.device_augment import erase as erase_boxes
from vit_lightning.data.sampling import sample_seed
from vit_lightning.errors import ConfigError

__all__ = ["ResidentImages", "passthrough"]


def passthrough(batch: Any) -> Any:
    """collate_fn for `ResidentImages`: `__getitems__` already returns the batch."""
    return batch


class ResidentImages(Dataset):
    """uint8 images (N, C, H, W) and labels, batched and augmented on whatever device asks.

    A DataLoader over this set (collate_fn=`passthrough`) yields dicts `{"split", "index"}`, plus
    `"shift"` (B, 2) (top, left) and `"flip"` (B,) when `pad > 0` or `flip`, and the recipe's
    draws (`Recipe.draw`) when it has a policy or erasing. After the transfer,
    `batch(**that)` turns one into `(x, y)` on the index's device: x float32 normalised like
    torchvision's `ToDtype(scale=True)` + `Normalize(mean, std)`, y int64. `dataset[i]` is the
    un-augmented `(x, y)` on the CPU, as for any other data set here.

    Args:
        images: uint8 (N, C, H, W).
        labels: (N,) class indices.
        mean: Per-channel mean, in [0, 1] units.
        std: Per-channel std.
        split: Name carried in each batch ("train", "val", "test") so the DataModule can find
            this set again after the transfer.
        pad: Zero padding before the random crop back to (H, W); 0 disables cropping.
        flip: Random horizontal flips.
        seed: The run's seed. A batch's draws are seeded by (seed, epoch, its first and last
            index), so they are the same with any number of workers and after a resume.
        recipe: The policy and random erasing after crop and flip; None for neither.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        split: str,
        pad: int = 0,
        flip: bool = False,
        seed: int = 0,
        recipe: Recipe | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ConfigError.of(
                self,
                f"images must be uint8 (N, C, H, W) with one label each; got {images.dtype} "
                f"{tuple(images.shape)} and {len(labels)} labels",
            )
        if pad < 0:
            raise ConfigError.of(self, f"pad={pad} must be >= 0")
        self.images, self.labels = images.contiguous(), labels.long()
        self.mean, self.std = list(mean), list(std)
        self.split, self.pad, self.flip, self.seed = split, pad, flip, seed
        self.recipe = recipe if recipe else None
        self._device_copy: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.normalize(self.images[i]), int(self.labels[i])

    def __getitems__(self, keys: list[int | tuple[int, int]]) -> dict[str, Any]:
        """One batch of indices (or `ResumableSampler`'s (index, epoch) pairs) and its draws."""
        pairs = [k if isinstance(k, tuple) else (k, 0) for k in keys]
        index = torch.tensor([i for i, _ in pairs])
        out: dict[str, Any] = {"split": self.split, "index": index}
        if not (self.pad or self.flip or self.recipe):
            return out
        (first, epoch), last = pairs[0], pairs[-1][0]
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, first * len(self) + last))
        if self.pad or self.flip:
            out["shift"] = torch.randint(0, 2 * self.pad + 1, (len(keys), 2), generator=g)
            out["flip"] = torch.randint(0, 2, (len(keys),), generator=g).bool() & self.flip
        if self.recipe:
            out.update(self.recipe.draw(len(keys), g))
        return out

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float32 in [0, 1] -> (x - mean) / std, with torchvision's own kernels."""
        return TF.normalize(TF.to_dtype(x, torch.float32, scale=True), self.mean, self.std)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(padded images, labels) on `device`, copied once."""
        if self._device_copy is None or self._device_copy[0].device != device:
            padded = F.pad(self.images, [self.pad] * 4) if self.pad else self.images
            self._device_copy = (padded.to(device), self.labels.to(device))
        return self._device_copy

    def batch(
        self,
        index: torch.Tensor,
        shift: torch.Tensor | None = None,
        flip: torch.Tensor | None = None,
        actions: torch.Tensor | None = None,
        order: torch.Tensor | None = None,
        counts: list[list[int]] | None = None,
        erase: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) for a batch of indices on their device, with the draws of `__getitems__`
        (without them the images are taken as they are, as for eval)."""
        images, labels = self._on(index.device)
        if shift is None:
            x = images[index]
        else:
            _, c, h, w = self.images.shape
            dev = index.device
            rows = shift[:, 0, None] + torch.arange(h, device=dev)  # (B, H)
            cols = torch.arange(w, device=dev)
            cols = shift[:, 1, None] + torch.where(flip[:, None], w - 1 - cols, cols)  # (B, W)
            # one gather for crop and flip: out[b, c, i, j] = images[index[b], c, rows[b, i], cols[b, j]]
            x = images[
                index[:, None, None, None],
                torch.arange(c, device=dev)[None, :, None, None],
                rows[:, None, :, None],
                cols[:, None, None, :],
            ]
        if actions is not None and self.recipe is not None:
            x = self.recipe.apply(x, actions, order, counts)
        x = self.normalize(x)
        if erase is not None:
            x = erase_boxes(x, erase)
        return x, labels[index]
