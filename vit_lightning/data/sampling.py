"""Training data order that survives a restart: seeded per epoch, resumable mid-epoch.

Three pieces, used by every DataModule's train loader:
- `ResumableSampler`: a DistributedSampler (so Lightning keeps it under DDP) that shuffles by
  (seed, epoch), can start an epoch after its first k samples, and tags each index with its epoch.
- `SeededView`: runs the dataset's `__getitem__` (and so its random augmentations) under an RNG
  seeded by (seed, epoch, index). A sample's augmentation is then a function of those three only:
  the same with 0 or 8 workers, after a resume, or with Lightning's prefetching, and loading never
  draws from the global RNG that dropout and Mixup use.
- `ResumableLoader`: a DataLoader Lightning checkpoints (it has `state_dict`/`load_state_dict`),
  recording the epoch and how many of its batches training consumed, so a resumed run continues
  with the next unseen batch, and a checkpoint from an epoch's last batch continues with the next
  epoch rather than skipping it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler

from vit_lightning.errors import ConfigError

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, epoch, index) over 64 bits


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed unique to (seed, epoch, index) for any realistic values."""
    h = (seed * _MIX + epoch) * _MIX + index
    return (h ^ (h >> 29)) & 0x7FFF_FFFF_FFFF_FFFF


class ResumableSampler(DistributedSampler):
    """Indices shuffled by (seed, epoch), yielded as `(index, epoch)` pairs for `SeededView`.

    Without DDP use num_replicas=1, rank=0. `start` skips the first samples of the next
    iteration only (set by `ResumableLoader.load_state_dict`); `len()` stays the full epoch,
    which is what Lightning expects when it resumes.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle, seed, drop_last)
        self.start = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, self.start = self.start, 0
        epoch = self.epoch
        return ((i, epoch) for i in list(super().__iter__())[start:])


class SeededView(Dataset):
    """`dataset[index]` computed under a CPU RNG seeded by (seed, epoch, index).

    Accepts the `(index, epoch)` pairs of `ResumableSampler` (and plain indices, epoch 0). The
    caller's RNG state is restored afterwards, so loading in the main process (num_workers=0)
    leaves the training RNG stream untouched.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        rng = torch.default_generator  # CPU only: torch.manual_seed also seeds CUDA, 60x slower
        state = rng.get_state()
        rng.manual_seed(sample_seed(self.seed, epoch, index))
        try:
            return self.dataset[index]
        finally:
            rng.set_state(state)


def resumable(sampler: Sampler | None, dataset: Dataset) -> Sampler | None:
    """`sampler`'s order as a ResumableSampler.

    Lightning rebuilds the train loader with a SequentialSampler for `overfit_batches` (then a
    DistributedSampler under DDP); the same order, unshuffled, stays resumable and seeded.
    """
    if isinstance(sampler, ResumableSampler) or sampler is None:
        return sampler
    if isinstance(sampler, DistributedSampler):
        return ResumableSampler(
            dataset, sampler.num_replicas, sampler.rank, sampler.shuffle, sampler.seed,
            sampler.drop_last,
        )  # fmt: skip
    if isinstance(sampler, SequentialSampler):
        return ResumableSampler(dataset, shuffle=False)
    return sampler  # the TypeError below names it


class ResumableLoader(DataLoader):
    """A DataLoader over a `ResumableSampler` that Lightning saves in and restores from checkpoints.

    Args:
        batches_done: Returns how many batches of the current epoch training has consumed (the
            DataModule reads Lightning's progress counter; the loader itself cannot tell consumed
            batches from the one Lightning prefetches).
        *args, **kwargs: As for DataLoader; `sampler` must be a ResumableSampler.
    """

    def __init__(
        self,
        *args: Any,
        batches_done: Callable[[], int] | None = None,
        resumed_at: Callable[[int], None] | None = None,
        **kwargs: Any,
    ):
        dataset = args[0] if args else kwargs.get("dataset")
        if "sampler" in kwargs:
            kwargs["sampler"] = resumable(kwargs["sampler"], dataset)
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError(f"ResumableLoader needs a ResumableSampler, got {type(self.sampler)}")
        self.batches_done, self.resumed_at = batches_done, resumed_at

    def state_dict(self) -> dict[str, int]:
        done = self.batches_done() if self.batches_done is not None else 0
        return {
            "epoch": self.sampler.epoch,
            "batches_done": int(done),
            # what the position means: batches of this size, on this many ranks, of this set
            "batch_size": int(self.batch_size),
            "world_size": int(self.sampler.num_replicas),
            "dataset_size": len(self.sampler.dataset),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at the saved position: the next batch, or the next epoch after its last.

        A mid-epoch position is kept in images: with another batch size or rank count the epoch
        continues at the same image of the same order (every image of the epoch once), and
        `resumed_at` is told the batch count that position now is. A position that is no whole
        batch, or a training set of another size, is refused (a ConfigError naming both).
        """
        s = self.sampler
        epoch, done = state["epoch"], state["batches_done"]
        size = state.get("batch_size", self.batch_size)
        world = state.get("world_size", s.num_replicas)
        images = state.get("dataset_size", len(s.dataset))
        if done >= math.ceil(images / world) // size:  # the epoch's last batch: the next epoch
            epoch, done = epoch + 1, 0
        s.set_epoch(epoch)
        if (size, world, images) == (self.batch_size, s.num_replicas, len(s.dataset)) or not done:
            s.start = done * self.batch_size
            return
        seen = done * size * world  # the first `seen` images of the epoch's order were trained
        where = f"epoch {epoch} was saved after {seen} of its {images} training images"
        if images != len(s.dataset):
            raise ConfigError(
                f"Cannot resume mid-epoch with another training set: {where}, this run has "
                f"{len(s.dataset)}. Resume with the same data, or from a checkpoint saved at an "
                "epoch's end"
            )
        step = self.batch_size * s.num_replicas
        if seen % step:
            fits = [b for b in range(1, seen + 1) if seen % (b * s.num_replicas) == 0][-3:]
            raise ConfigError(
                f"Cannot resume mid-epoch with data.batch_size={self.batch_size} x "
                f"{s.num_replicas} devices (the checkpoint's: data.batch_size={size} x {world}): "
                f"{where}, which is no whole number of batches of {step}. Resume with "
                f"data.batch_size={size}, or one that divides {seen // s.num_replicas} (e.g. "
                f"{', '.join(map(str, fits))}), or from a checkpoint saved at an epoch's end"
            )
        s.start = seen // s.num_replicas
        rank_zero_info(
            f"Resuming at image {seen} of epoch {epoch}: batch {seen // step} of "
            f"{len(self)} at data.batch_size={self.batch_size} x {s.num_replicas} devices (the "
            f"checkpoint's: batch {done} at {size} x {world})"
        )
        if self.resumed_at is not None:
            self.resumed_at(seen // step)
