"""What the tutorial notebooks share: data, a tiny trained ViT, and reading runs back.

The notebooks live in `notebooks/` as jupytext percent sources (`01_vit_from_scratch.py`, ...),
each paired with its `.ipynb`. `python -m vit_lightning.tutorial notebooks/*.py` (or
`make notebooks`) writes the `.ipynb` files: no outputs, cell ids `<number>-<index>`, so the same
sources always give byte-identical files. W&B runs are read by `vit_lightning.wandb_runs`.
"""

from __future__ import annotations

import argparse
import csv
import glob
import importlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from vit_lightning.data import FashionMNISTDataModule, SyntheticDataModule
from vit_lightning.module import ViTClassifier
from vit_lightning.vit import VisionTransformer
from vit_lightning.wandb_runs import offline_runs

Run = dict[str, Any]  # {"name", "config": nested dict, "history": [logged rows], "summary"}

REPO = Path(__file__).resolve().parents[1]  # the checkout, wherever a notebook runs
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


def from_csv(metrics_csv: str | Path) -> Run:
    """A CSVLogger folder: metrics.csv, and hparams.yaml with the config (the CLI logs it)."""
    folder = Path(metrics_csv).parent
    with open(metrics_csv, newline="") as f:
        history = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    for row in history:
        if "step" in row:
            row["trainer/global_step"] = row.pop("step")  # the name W&B uses
    hparams = folder / "hparams.yaml"
    config = (yaml.safe_load(hparams.read_text()) if hparams.is_file() else None) or {}
    summary = {k: v for row in history for k, v in row.items()}  # last value of each key
    summary.update(config.get("run") or {})  # params, device, ... (RunSummary)
    name = "/".join(folder.parts[-3:])  # <save_dir>/<name>/version_<n>
    return {"name": name, "config": config, "history": history, "summary": summary}


def local_runs(runs_dir: str) -> list[Run]:
    """Offline W&B runs and CSVLogger logs anywhere under `runs_dir` (a folder or a glob)."""
    roots = sorted(glob.glob(os.path.expanduser(runs_dir))) or [runs_dir]

    def find(pattern: str) -> list[str]:
        hits = (glob.glob(os.path.join(root, "**", pattern), recursive=True) for root in roots)
        return sorted({path for paths in hits for path in paths})

    offline = [d for d in find("offline-run-*") if os.path.isdir(d)]
    return offline_runs(offline) + [from_csv(f) for f in find("metrics.csv")]


def series(run: Run, key: str, x: str) -> tuple[list[Any], list[Any]]:
    """The (x, key) points of a run's history, sorted by x; rows missing either are skipped."""
    points = sorted(
        (row[x], row[key])
        for row in run["history"]
        if row.get(key) is not None and row.get(x) is not None
    )
    return [p[0] for p in points], [p[1] for p in points]


def get(d: Any, dotted: str) -> Any:
    """`d["a"]["b"]` for "a.b", or None where a part is missing."""
    for part in dotted.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return None
        d = d[part]
    return d


def best(run: Run, key: str = "val/acc") -> Any:
    """The summary's `<key>_best`, else the largest value of `key` in the history (or None)."""
    values = [row[key] for row in run["history"] if row.get(key) is not None]
    return run["summary"].get(key + "_best", max(values, default=None))


def fmt(v: Any) -> str:
    """A table cell: "-" for None, 4 significant digits (whole numbers from 100), 1,234 for ints."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.0f}" if v >= 100 else f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def table(runs: Sequence[Run], columns: Mapping[str, Callable[[Run], Any]]) -> str:
    """A text table of `columns` (header: value of a run), one row per run, best val/acc first."""
    rows = [
        [fmt(value(run)) for value in columns.values()]
        for run in sorted(runs, key=lambda r: best(r) or 0, reverse=True)
    ]
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(columns)]
    lines = [list(columns), ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


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
