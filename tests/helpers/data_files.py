"""Tiny CIFAR-10 and Fashion-MNIST files in the real on-disk formats, for torchvision to read."""

import gzip
import hashlib
import pickle
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from torchvision.datasets import CIFAR10

PER_BATCH = 20  # images per CIFAR batch file: 5 train batches -> 100 training images


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class Cifar10Files(NamedTuple):
    root: Path  # the data_dir that holds cifar-10-batches-py/
    rows: np.ndarray  # the 100 training images as CIFAR stores them: (N, 3072) uint8
    labels: list[int]


def write_cifar10(root: Path, monkeypatch: pytest.MonkeyPatch) -> Cifar10Files:
    """Write `cifar-10-batches-py/` under root, pointing torchvision's md5 lists at its files."""
    folder = root / CIFAR10.base_folder
    folder.mkdir()
    rng = np.random.default_rng(0)
    train_rows, train_labels, sums = [], [], {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, PER_BATCH).tolist()
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels}))
        sums[name] = md5(folder / name)
        if name != "test_batch":
            train_rows.append(data)
            train_labels += labels
    meta = folder / "batches.meta"
    meta.write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    # torchvision's own integrity check stays in the path; only the expected md5s change
    monkeypatch.setattr(CIFAR10, "train_list", [[n, sums[n]] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", sums["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(meta)})
    return Cifar10Files(root, np.concatenate(train_rows), train_labels)


def write_idx(folder: Path, n_train: int = 30, n_test: int = 10) -> Path:
    """The four Fashion-MNIST files, gzipped, with real idx headers (2051 images, 2049 labels)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = (
            struct.pack(">IIII", 2051, n, 28, 28)
            + rng.integers(0, 256, n * 784).astype(np.uint8).tobytes()
        )
        labels = struct.pack(">II", 2049, n) + (np.arange(n) % 10).astype(np.uint8).tobytes()
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return folder
