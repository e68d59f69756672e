"""`ImageDataModule`: what every DataModule here shares.

Loaders (a resumable, seeded train order; exact eval sets under DDP), transforms built from the
dataset's augmentation table, the device pipeline's transfer hook, and predict-on-a-folder.

A dataset subclass sets `num_classes`, `in_chans`, `img_size`, `class_names`, `mean`, `std` by
`__init__`'s end (the CLI links the first three into the model), chooses `self.policy` from its
`AUGMENT` table, and implements `fit_datasets()` and `test_dataset()`.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from vit_lightning.compat import (
    UnrepeatedDistributedSampler,
    set_train_batches_done,
    train_batches_done,
)
from vit_lightning.data.augment import NO_AUGMENT, Policy
from vit_lightning.data.device_pipeline import ResidentImages, passthrough
from vit_lightning.data.folder import ImageFolderFlat
from vit_lightning.data.sampling import ResumableLoader, ResumableSampler, SeededView
from vit_lightning.errors import ConfigError


class ImageDataModule(L.LightningDataModule):
    """Yields `(x, y)`: x float32 normalised (B, C, H, W), y int64.

    Args:
        batch_size: Samples per batch (per device).
        num_workers: DataLoader worker processes.
        pin_memory: Pin host memory for faster host-to-GPU copies (only used when CUDA exists).
        persistent_workers: Keep workers alive across epochs (only when num_workers > 0).
        predict_dir: Folder of PNG/JPEG files to predict on; None predicts on the test split.
        loader_seed: Seed of the train order and of every augmentation draw (keyed by seed,
            epoch and index, so a resumed run draws the same). The CLI sets it to
            `seed_everything`; None means 0.
    """

    num_classes: int
    in_chans: int
    img_size: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    policy: Policy = NO_AUGMENT["none"]

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_dir: str | None = None,
        loader_seed: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or num_workers < 0:
            raise ConfigError.of(
                self, f"batch_size={batch_size} must be >= 1 and num_workers={num_workers} >= 0"
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.predict_dir = predict_dir
        self.seed = 0 if loader_seed is None else int(loader_seed)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.predict_set: Dataset | None = None
        self._predict_names: list[str] = []
        # every __init__ up the chain: the subclass's own arguments and those passed on here
        self.save_hyperparameters()

    # -- transforms ---------------------------------------------------------------------------

    def eval_transform(self) -> v2.Transform:
        """PIL image or uint8 array -> normalised float32 tensor, no augmentation."""
        return v2.Compose(
            [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        )

    def train_transform(self) -> v2.Transform:
        """The chosen augmentation policy on the PIL image, then `eval_transform`."""
        return v2.Compose([*self.policy.transforms(), *self.eval_transform().transforms])

    # -- datasets -----------------------------------------------------------------------------

    def fit_datasets(self) -> tuple[Dataset, Dataset]:
        """(train, val) datasets."""
        raise NotImplementedError

    def test_dataset(self) -> Dataset:
        raise NotImplementedError

    @staticmethod
    def split_indices(n: int, val_size: int, seed: int) -> tuple[list[int], list[int]]:
        """Deterministic (train, val) index split of range(n); the val part has val_size items."""
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        return sorted(perm[val_size:]), sorted(perm[:val_size])

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and self.train_set is None:
            self.train_set, self.val_set = self.fit_datasets()
        if stage == "fit" and self.trainer is not None:
            check_train_batches(self.trainer)  # here, before the CLI writes config.yaml
        if stage in ("test", None) and self.test_set is None:
            self.test_set = self.test_dataset()
        if stage in ("predict", None) and self.predict_set is None:
            if self.predict_dir is not None:
                mode = "RGB" if self.in_chans == 3 else "L"
                ds = ImageFolderFlat(self.predict_dir, mode, self.img_size, self.eval_transform())
                self._predict_names = [str(p) for p in ds.paths]
                self.predict_set = ds
            else:
                self.predict_set = self.test_set or self.test_dataset()
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
            collate_fn=passthrough if resident else None,
            worker_init_fn=loader_worker_init if workers else None,  # stop signals
        )
        if not train:
            return DataLoader(ds, sampler=self._eval_sampler(ds), **kwargs)
        t = self.trainer
        world, rank = (t.world_size, t.global_rank) if t else (1, 0)
        return ResumableLoader(
            ds if resident else SeededView(ds, self.seed),
            sampler=ResumableSampler(ds, world, rank, shuffle=True, seed=self.seed),
            drop_last=True,
            batches_done=lambda: train_batches_done(self.trainer) if self.trainer else 0,
            resumed_at=lambda done: set_train_batches_done(self.trainer, done),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Device pipeline: an index batch, now on the device, becomes the augmented `(x, y)`."""
        if isinstance(batch, dict) and "index" in batch:
            sets = (self.train_set, self.val_set, self.test_set, self.predict_set)
            ds = next(
                s for s in sets if isinstance(s, ResidentImages) and s.split == batch["split"]
            )
            return ds.batch(**{k: v for k, v in batch.items() if k != "split"})
        return batch


def check_train_batches(trainer: L.Trainer) -> None:
    """A fit with no training step (batch_size above the training set, drop_last) is an error:
    Lightning would print "No training batches" and exit 0."""
    dm = trainer.datamodule
    if dm is None or not hasattr(dm, "train_dataloader"):
        return
    loader = dm.train_dataloader()
    try:
        if len(loader) > 0:
            return
        per_device = len(loader.sampler) if loader.sampler is not None else len(loader.dataset)
    except TypeError:  # an iterable dataset: no length to check
        return
    world = trainer.world_size
    split = f"{per_device} per device over {world} devices" if world > 1 else "on 1 device"
    raise ConfigError(
        f"data.batch_size={loader.batch_size} is larger than the training set "
        f"({len(loader.dataset)} images, {split}), and the incomplete last batch is dropped: fit "
        f"would train no step. Set data.batch_size to at most {per_device}, or train on more data"
    )


def loader_worker_init(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: a stop signal meant for the whole job is the main process's.

    A scheduler signals every process of the job, and Ctrl-C the whole process group. A loader
    worker that died of it would make the main process raise mid-batch instead of stopping
    cleanly, and the main process ends its workers itself once it has stopped. A SIGTERM from the
    main process (DataLoader shutdown, interpreter exit) still ends the worker at once, as torch's
    own worker handler does; telling the two apart needs the sender, which only `sigwaitinfo` has.

    Without it (macOS) the worker ignores its first SIGTERM, the job's, and ends on the next one:
    the main process's `terminate()` when it shuts its loaders down or exits (multiprocessing
    terminates and then joins, without a time limit, any worker still alive at exit). Otherwise a
    Trainer's teardown ends workers through torch's `_shutdown_workers` (the done event and the
    None that ends their loop), and a worker whose main process died ends within 5 s (torch's
    `ManagerWatchdog`). Given up: a worker that is sent its main process's SIGTERM with no job
    SIGTERM before it survives that one signal, until the next or the watchdog.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):
        seen: list[int] = []

        def second_ends(signum: int, frame: Any) -> None:
            if seen:
                os._exit(0)
            seen.append(signum)

        signal.signal(signal.SIGTERM, second_ends)
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later inherit it

    def wait_for_parent() -> None:
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
                os._exit(0)

    threading.Thread(target=wait_for_parent, name="sigterm-from-parent", daemon=True).start()
