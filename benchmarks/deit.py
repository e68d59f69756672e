"""Distillation on Fashion-MNIST, measured on this machine with the CLI (docs/distillation.md).

    python -m benchmarks.deit run      # the teacher, then per seed the ViT with and without it
    python -m benchmarks.deit table    # the table in docs/distillation.md

The same schedule for both students, shortened to EPOCHS for a 2-core CPU; the data is Debian's
Fashion-MNIST (`apt-get install dataset-fashion-mnist`), 55k train / 5k val / 10k test.
"""

from __future__ import annotations

import sys

import numpy as np
import yaml

from benchmarks.common import ROOT
from benchmarks.transfer import SAVE_TEST, cli_run

RUNS = ROOT / "runs" / "deit"
EPOCHS, TEACHER_EPOCHS, SEEDS = 5, 5, (0, 1)


def _fit_and_test(root, overlay: str | None, *args: str) -> None:
    """fit then test configs/fashion_mnist.yaml, with configs/overlays/<overlay>.yaml if given."""
    if (root / "test.yaml").exists():
        return
    configs = ["--config=configs/fashion_mnist.yaml"]
    configs += [f"--config=configs/overlays/{overlay}.yaml"] if overlay else []
    common = [*configs, f"--trainer.default_root_dir={root}", *args]
    cli_run(root, "fit", *common, "--ckpt_path=last")  # resumes a killed run
    cli_run(root, "test", *common, "--ckpt_path=last", f"--trainer.callbacks+={SAVE_TEST}")


def run() -> None:
    teacher = RUNS / "teacher"
    _fit_and_test(teacher, "fashion_mnist_teacher", f"--trainer.max_epochs={TEACHER_EPOCHS}")
    weights = f"--model.teacher_checkpoint={teacher / 'checkpoints' / 'last.ckpt'}"
    for seed in SEEDS:
        args = [f"--trainer.max_epochs={EPOCHS}", f"--seed_everything={seed}"]
        _fit_and_test(RUNS / f"vit_s{seed}", None, *args)
        _fit_and_test(RUNS / f"distilled_s{seed}", "fashion_mnist_deit", *args, weights)


def table() -> str:
    rows = [
        "| Run | Config | Test acc (mean) | Per seed | Wall time per epoch (fit / epochs) |",
        "|---|---|---|---|---|",
    ]
    recipe = "`configs/fashion_mnist.yaml`"
    runs = {
        "teacher": (
            f"{recipe} + `overlays/fashion_mnist_teacher.yaml` (ConvNet)",
            [RUNS / "teacher"],
            TEACHER_EPOCHS,
        ),
        "ViT": (recipe, [RUNS / f"vit_s{s}" for s in SEEDS], EPOCHS),
        "ViT + hard distillation": (
            f"{recipe} + `overlays/fashion_mnist_deit.yaml`",
            [RUNS / f"distilled_s{s}" for s in SEEDS],
            EPOCHS,
        ),
    }
    for name, (config, roots, epochs) in runs.items():
        done = [r for r in roots if (r / "test.yaml").exists()]
        if not done:
            continue
        accs = [yaml.safe_load((r / "test.yaml").read_text())["test/acc"] for r in done]
        secs = [yaml.safe_load((r / "seconds.yaml").read_text())["fit"] / epochs for r in done]
        per = ", ".join(f"{a:.2%}" for a in accs)
        rows.append(
            f"| {name} | {config} | **{np.mean(accs):.2%}** | {per} | {np.mean(secs):.0f} s |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "table"
    {"run": run, "table": lambda: print(table())}[what]()
