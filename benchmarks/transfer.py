"""Data preparation for the Fashion-MNIST transfer experiment (configs/experiments/transfer.yaml).

    python -m benchmarks.transfer export      # PNG folders under data/transfer (from Debian's copy)

Writes the two datasets that configs/overlays/transfer_pretrain.yaml and transfer_downstream.yaml
read through ImageFolderDataModule: `pretrain/` holds every training and test image of classes
0-4; `downstream/` holds 100 training images per class of classes 5-9 (drawn with seed 0; the
DataModule's split holds 10 of them out for validation) and all 5,000 test images of those
classes. The experiment itself is a multirun:

    python -m vit_lightning multirun --spec configs/experiments/transfer.yaml
    python -m vit_lightning compare runs/experiments/transfer --baseline scratch
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import ROOT

SOURCE = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
DATA = ROOT / "data" / "transfer"
NAMES = [
    "tshirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "boot",
]
PER_CLASS = 100


def _idx(name: str) -> np.ndarray:
    with gzip.open(SOURCE / f"{name}.gz") as f:
        raw = f.read()
    if name.endswith("labels-idx1-ubyte"):
        return np.frombuffer(raw, np.uint8, offset=8)
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)


def _write(folder: Path, images: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> None:
    for i in keep:
        out = folder / f"{labels[i]}_{NAMES[labels[i]]}" / f"{i:05d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(out)


def export() -> None:
    """Both datasets' PNG folders under DATA, from Debian's idx files in SOURCE."""
    if not SOURCE.is_dir():
        raise SystemExit(
            f"error: {SOURCE} is missing; install it with `apt-get install dataset-fashion-mnist`"
        )
    x, y = _idx("train-images-idx3-ubyte"), _idx("train-labels-idx1-ubyte")
    xt, yt = _idx("t10k-images-idx3-ubyte"), _idx("t10k-labels-idx1-ubyte")
    _write(DATA / "pretrain" / "train", x, y, np.flatnonzero(y < 5))
    _write(DATA / "pretrain" / "test", xt, yt, np.flatnonzero(yt < 5))
    rng = np.random.default_rng(0)
    few = [rng.choice(np.flatnonzero(y == c), PER_CLASS, replace=False) for c in range(5, 10)]
    _write(DATA / "downstream" / "train", x, y, np.sort(np.concatenate(few)))
    _write(DATA / "downstream" / "test", xt, yt, np.flatnonzero(yt >= 5))


if __name__ == "__main__":
    if sys.argv[1:] != ["export"]:
        print(
            "usage: python -m benchmarks.transfer export   (the runs: configs/experiments/transfer.yaml)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    export()
