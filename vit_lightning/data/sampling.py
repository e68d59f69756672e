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

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

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


class ResumableLoader(DataLoader):
    """A DataLoader over a `ResumableSampler` that Lightning saves in and restores from checkpoints.

    Args:
        batches_done: Returns how many batches of the current epoch training has consumed (the
            DataModule reads Lightning's progress counter; the loader itself cannot tell consumed
            batches from the one Lightning prefetches).
        *args, **kwargs: As for DataLoader; `sampler` must be a ResumableSampler.
    """

    def __init__(self, *args: Any, batches_done: Callable[[], int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError(f"ResumableLoader needs a ResumableSampler, got {type(self.sampler)}")
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        done = self.batches_done() if self.batches_done is not None else 0
        return {"epoch": self.sampler.epoch, "batches_done": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, done = state["epoch"], state["batches_done"]
        if done >= len(self):  # saved after the epoch's last batch: the next epoch, from its start
            epoch, done = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self.sampler.start = done * self.batch_size
