"""Fashion-MNIST transfer, measured on this machine with the CLI (docs/finetuning.md).

    python -m benchmarks.transfer export      # PNG folders under data/transfer (from Debian's copy)
    python -m benchmarks.transfer run         # pretrain, then fine-tune / scratch / probe per seed
    python -m benchmarks.transfer table       # the docs/finetuning.md table from the runs' test accuracies

One network (seed 0) is pretrained on all training images of classes 0-4; each seed then runs
the three downstream variants from it. The downstream task is classes 5-9 with 100
labelled training images per class (10 of them held out for validation by the DataModule's
split) and all 5,000 test images of those classes.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from lightning.pytorch.callbacks import Callback
from PIL import Image

from benchmarks.common import ROOT

SOURCE = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
DATA, RUNS = ROOT / "data" / "transfer", ROOT / "runs" / "transfer"
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
PER_CLASS, SEEDS = 100, (0, 1)
VARIANTS = ("finetune", "scratch", "probe")


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
    x, y = _idx("train-images-idx3-ubyte"), _idx("train-labels-idx1-ubyte")
    xt, yt = _idx("t10k-images-idx3-ubyte"), _idx("t10k-labels-idx1-ubyte")
    _write(DATA / "pretrain" / "train", x, y, np.flatnonzero(y < 5))
    _write(DATA / "pretrain" / "test", xt, yt, np.flatnonzero(yt < 5))
    rng = np.random.default_rng(0)
    few = [rng.choice(np.flatnonzero(y == c), PER_CLASS, replace=False) for c in range(5, 10)]
    _write(DATA / "downstream" / "train", x, y, np.sort(np.concatenate(few)))
    _write(DATA / "downstream" / "test", xt, yt, np.flatnonzero(yt >= 5))


SAVE_TEST = "benchmarks.transfer.SaveTest"


class SaveTest(Callback):
    """Writes `test` metrics to <default_root_dir>/test.yaml for `table`."""

    def on_test_end(self, trainer, pl_module) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        Path(trainer.default_root_dir, "test.yaml").write_text(yaml.safe_dump(metrics))


def cli_run(root: Path, *args: str) -> None:
    """One CLI command; its wall time is added to <root>/seconds.yaml under the subcommand."""
    cmd = [sys.executable, "-m", "vit_lightning", *args, "--trainer.logger=false"]
    print("+", " ".join(cmd), flush=True)
    start = time.monotonic()
    subprocess.run(cmd, check=True, cwd=ROOT)
    path = root / "seconds.yaml"
    seconds = yaml.safe_load(path.read_text()) if path.exists() else {}
    seconds[args[0]] = round(time.monotonic() - start, 1)
    path.write_text(yaml.safe_dump(seconds))


def run(seeds: tuple[int, ...] = SEEDS) -> None:
    recipe, overlays = "--config=configs/fashion_mnist.yaml", "configs/overlays"
    pre = RUNS / "pretrain_s0"  # one pretrained network (seed 0) serves every downstream seed
    pretrain = f"--config={overlays}/transfer_pretrain.yaml"
    common = [recipe, pretrain, f"--trainer.default_root_dir={pre}"]
    if not (pre / "test.yaml").exists():
        cli_run(pre, "fit", *common, "--ckpt_path=last")
        cli_run(pre, "test", *common, "--ckpt_path=last", f"--trainer.callbacks+={SAVE_TEST}")
    downstream = [recipe, pretrain, f"--config={overlays}/transfer_downstream.yaml"]  # step 2
    for seed in seeds:  # the three variants per seed
        weights = [f"--model.pretrained={pre / 'checkpoints' / 'last.ckpt'}"]
        extra = {
            "finetune": [*weights, "--model.layer_decay=0.75"],
            "scratch": [],
            "probe": [*weights, f"--config={overlays}/transfer_probe.yaml"],
        }
        for variant in VARIANTS:
            out = RUNS / f"{variant}_s{seed}"
            if (out / "test.yaml").exists():
                continue
            common = [*downstream, *extra[variant],
                      f"--seed_everything={seed}", f"--trainer.default_root_dir={out}"]  # fmt: skip
            cli_run(out, "fit", *common, "--ckpt_path=last")  # resumes a killed run
            cli_run(out, "test", *common, "--ckpt_path=last", f"--trainer.callbacks+={SAVE_TEST}")


def _runs(name: str) -> tuple[list[float], list[float]]:
    """(test accuracies, fit seconds) over the seeds that have finished."""
    accs, secs = [], []
    for seed in (0,) if name == "pretrain" else SEEDS:
        root = RUNS / f"{name}_s{seed}"
        if (root / "test.yaml").exists():
            accs.append(yaml.safe_load((root / "test.yaml").read_text())["test/acc"])
            secs.append(yaml.safe_load((root / "seconds.yaml").read_text())["fit"])
    return accs, secs


def table() -> str:
    """The docs/finetuning.md table: test accuracy (mean, then per seed) and fit wall time per variant."""
    rows = [
        "| Run | Trains | Test acc (mean) | Per seed | Fit wall time (mean) |",
        "|---|---|---|---|---|",
    ]
    what = {
        "pretrain": "classes 0-4, all 30,000 training images (27,000 train / 3,000 val)",
        "finetune": "classes 5-9, 500 images, from the pretrained network, layer decay 0.75",
        "scratch": "classes 5-9, 500 images, from random weights",
        "probe": "classes 5-9, 500 images, only the head (backbone frozen), lr 1e-2",
    }
    for name, text in what.items():
        accs, secs = _runs(name)
        if accs:
            per = ", ".join(f"{a:.2%}" for a in accs)
            rows.append(
                f"| {name} | {text} | **{np.mean(accs):.2%}** | {per} | {np.mean(secs):.0f} s |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "table"
    {"export": export, "run": run, "table": lambda: print(table())}[what]()
