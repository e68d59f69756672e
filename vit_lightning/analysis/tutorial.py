"""What the tutorial notebooks share: data, a tiny trained ViT, and the notebooks themselves.

The notebooks live in `notebooks/` as jupytext percent sources (`01_vit_from_scratch.py`, ...),
each paired with its `.ipynb`. `python -m vit_lightning.analysis.tutorial notebooks/*.py` (or
`make notebooks`) writes the `.ipynb` files: no outputs, cell ids `<number>-<index>`, so the same
sources always give byte-identical files. Runs are read back by `vit_lightning.analysis.runs`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from vit_lightning.data import FashionMNISTDataModule, SyntheticDataModule
from vit_lightning.models.vit import VisionTransformer
from vit_lightning.module import ViTClassifier

REPO = Path(__file__).resolve().parents[2]  # the checkout, wherever a notebook runs
# The notebooks' tiny ViT: on 28x28 images, a 7x7 grid of 49 patch tokens of dimension 64.
ARCH = dict(patch_size=4, embed_dim=64, depth=3, num_heads=4, mlp_ratio=2.0)
STEPS = 300  # optimizer steps when a notebook trains its own model: about 15 s on 2 CPU cores


def data_dir() -> Path:
    """`$VIT_DATA_DIR`, else the CLI configs' `./data` in the checkout."""
    return Path(os.environ.get("VIT_DATA_DIR", REPO / "data"))


def checkpoint_path(path: str | Path) -> Path:
    """A checkpoint path as given, or relative to the repository (e.g. runs/.../last.ckpt)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() or path.exists() else REPO / path


def checkpoint_from_env() -> Path | None:
    """`$VIT_CHECKPOINT` through `checkpoint_path`, or None when it is unset or empty."""
    path = os.environ.get("VIT_CHECKPOINT")
    return checkpoint_path(path) if path else None


def quiet_lightning() -> None:
    """Silence the Trainer's info messages (devices found, model summary hints)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def load_data(
    augment: str = "none", batch_size: int = 128, root: str | Path | None = None
) -> L.LightningDataModule:
    """Fashion-MNIST (28x28 grayscale) when its files can be found, else look-alike synthetic data.

    Args:
        augment: Fashion-MNIST's training augmentation ("none", "flip", "crop_flip").
        batch_size: Batch size of the loaders.
        root: Data folder; default `data_dir()`.
    """
    root = data_dir() if root is None else Path(root)
    dm = FashionMNISTDataModule(
        str(root), download=False, augment=augment, batch_size=batch_size, num_workers=0
    )
    try:
        dm.prepare_data()  # finds Debian's /usr/share/datasets/fashion-mnist, no network needed
        dm.setup("fit")
    except (FileNotFoundError, RuntimeError) as e:
        print(f"Fashion-MNIST not found ({type(e).__name__}): using synthetic 28x28 images.")
        dm = SyntheticDataModule(
            num_classes=10,
            img_size=28,
            in_chans=1,
            train_size=8192,
            val_size=512,
            batch_size=batch_size,
            num_workers=0,
        )
        dm.setup("fit")
    return dm


def datamodule_from_checkpoint(path: str | Path) -> L.LightningDataModule:
    """Rebuild the DataModule a CLI run trained on from the hyperparameters in its checkpoint.

    Loaders run in the notebook's process (`num_workers=0`) on the validation split, and a
    relative `data_dir` is taken from the repository, where the CLI is run from.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    hp = ckpt["datamodule_hyper_parameters"]
    module, _, name = hp["_class_path"].rpartition(".")
    args = {k: v for k, v in hp.items() if not k.startswith("_")}  # drops _class_path, ...
    args.update(num_workers=0, predict_dir=None)
    if "data_dir" in args:
        args.update(data_dir=str(REPO / args["data_dir"]), download=False)
    dm = getattr(importlib.import_module(module), name)(**args)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def train_tiny_vit(dm: L.LightningDataModule, steps: int = STEPS) -> VisionTransformer:
    """An `ARCH` ViT trained for `steps` optimizer steps with the project's LightningModule."""
    L.seed_everything(0, verbose=False)
    net = VisionTransformer(
        img_size=dm.img_size, in_chans=dm.in_chans, num_classes=dm.num_classes, **ARCH
    )
    # warmup_epochs counts epochs of the planned run; with max_steps (and no max_epochs) the
    # whole run is one "epoch", so 0.1 warms up over the first 10% of the steps.
    model = ViTClassifier(net, lr=2e-3, warmup_epochs=0.1, label_smoothing=0.0)
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    print(f"trained {steps} steps in {time.perf_counter() - start:.0f} s")
    return net.eval()


@torch.no_grad()
def accuracy(net: torch.nn.Module, dataset: Dataset, n: int = 1000) -> float:
    """Top-1 accuracy on the first n images (or all, if fewer)."""
    x, y = next(iter(DataLoader(dataset, batch_size=n)))
    return (net(x).argmax(dim=-1) == y).float().mean().item()


def notebook_text(source: str | Path) -> str:
    """The `.ipynb` of a jupytext percent source: no outputs, cell ids `<number>-<index>`."""
    import jupytext  # a dev dependency, like the notebooks' tooling

    source = Path(source)
    nb = jupytext.read(source)
    prefix = source.stem.split("_")[0]  # "01" for 01_vit_from_scratch.py
    for i, cell in enumerate(nb.cells):
        cell.id = f"{prefix}-{i:02d}"  # nbformat's ids are random: fixed ones keep diffs clean
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return jupytext.writes(nb, fmt="ipynb") + "\n"  # the newline `jupytext --sync` ends with


def write_notebooks(sources: Sequence[str | Path]) -> list[Path]:
    """Write each source's `.ipynb` beside it; return their paths."""
    paths = []
    for source in map(Path, sources):
        path = source.with_suffix(".ipynb")
        path.write_text(notebook_text(source))
        paths.append(path)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write notebooks/*.ipynb from their .py sources.")
    parser.add_argument("sources", nargs="+", type=Path, help="jupytext percent files")
    for path in write_notebooks(parser.parse_args().sources):
        print("wrote", path)
