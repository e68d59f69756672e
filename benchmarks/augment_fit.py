"""Fashion-MNIST with TrivialAugment: the device pipeline against the torchvision path.

    python -m benchmarks.augment_fit run [seeds...]   # fit + test per path and seed
    python -m benchmarks.augment_fit table            # the table in docs/performance.md

Same config, epochs and seed on both paths; only `data.device_pipeline` differs. The torchvision
path applies flip + TrivialAugmentWide to PIL images in the loader; the device pipeline draws the
same distribution per image and applies it in batches (`vit_lightning/data/device_augment.py`).
"""

from __future__ import annotations

import sys

import numpy as np
import yaml

from benchmarks.common import ROOT
from benchmarks.transfer import SAVE_TEST, cli_run

RUNS = ROOT / "runs" / "augment_fit"
EPOCHS, SEEDS = 5, (0, 1, 2)
PATHS = {"torchvision": "false", "device": "true"}


def run(seeds: tuple[int, ...] = SEEDS, paths: tuple[str, ...] = tuple(PATHS)) -> None:
    for seed in seeds:
        for path in paths:
            out = RUNS / f"{path}_s{seed}"
            if (out / "test.yaml").exists():
                continue
            common = ["--config=configs/fashion_mnist.yaml", "--data.augment=trivialaugment",
                      f"--data.device_pipeline={PATHS[path]}", f"--trainer.max_epochs={EPOCHS}",
                      f"--seed_everything={seed}", f"--trainer.default_root_dir={out}"]  # fmt: skip
            cli_run(out, "fit", *common, "--ckpt_path=last")  # resumes a killed run
            cli_run(out, "test", *common, "--ckpt_path=last", f"--trainer.callbacks+={SAVE_TEST}")


def table() -> str:
    rows = ["| Path | Test acc (mean) | Per seed | Fit wall time (mean) |", "|---|---|---|---|"]
    for path in PATHS:
        done = [
            RUNS / f"{path}_s{s}" for s in SEEDS if (RUNS / f"{path}_s{s}" / "test.yaml").exists()
        ]
        if not done:
            continue
        accs = [yaml.safe_load((d / "test.yaml").read_text())["test/acc"] for d in done]
        secs = [yaml.safe_load((d / "seconds.yaml").read_text())["fit"] for d in done]
        per = ", ".join(f"{a:.2%}" for a in accs)
        rows.append(f"| {path} | **{np.mean(accs):.2%}** | {per} | {np.mean(secs):.0f} s |")
    return "\n".join(rows)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "table"
    if what == "run":
        paths = tuple(a for a in sys.argv[2:] if a in PATHS) or tuple(PATHS)
        seeds = tuple(int(a) for a in sys.argv[2:] if a.isdigit()) or SEEDS
        run(seeds, paths)
    else:
        print(table())
