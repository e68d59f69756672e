# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Comparing training runs
#
# Every `python -m vit_lightning fit` run logs its full resolved config (model, data, trainer),
# its metrics, and a summary (parameter count, throughput, best validation accuracy). This
# notebook puts several runs side by side: learning curves and a table of configs and results.
#
# Where the runs come from, in order:
#
# 1. **W&B online**: with `WANDB_API_KEY` and `RUNS_PATH="entity/project"` set, through
#    `wandb.Api()`;
# 2. **local folders**: `RUNS_DIR` (a folder or a glob such as `runs/*`) is searched for
#    offline W&B runs (`wandb/offline-run-*`, read without a server by
#    `vit_lightning.run.wandb_logger.offline_runs`) and for CSVLogger logs (`metrics.csv`);
# 3. **a demo**: neither set, it trains three tiny models on synthetic data (the smoke config,
#    3 epochs, noisier images) that differ only in learning rate, about 10 s each.

# %%
# %matplotlib inline
import os
import subprocess
import sys
import tempfile

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from vit_lightning.analysis.runs import api_runs, best, get, local_runs, series, table
from vit_lightning.analysis.tutorial import REPO

RUNS_PATH = os.environ.get("RUNS_PATH")  # "entity/project" on W&B
RUNS_DIR = os.environ.get("RUNS_DIR")  # folder or glob of run folders
ONLINE = bool(os.environ.get("WANDB_API_KEY") and RUNS_PATH)
print("source:", "W&B " + RUNS_PATH if ONLINE else RUNS_DIR or "demo runs")

# %% [markdown]
# ## Demo runs (only when no runs were given)
#
# The same command you would type in a shell, once per learning rate. Each run writes
# checkpoints and an offline W&B run under its `default_root_dir`.

# %%
if not ONLINE and not RUNS_DIR:
    RUNS_DIR = tempfile.mkdtemp(prefix="vit-runs-")
    for lr in [3e-4, 1e-3, 3e-3]:
        cmd = [
            sys.executable,
            "-m",
            "vit_lightning",
            "fit",
            "--config",
            str(REPO / "configs" / "smoke.yaml"),
            f"--trainer.default_root_dir={RUNS_DIR}/lr{lr:g}",
            f"--model.lr={lr}",
            "--trainer.max_epochs=3",
            "--data.init_args.noise=2.0",
            "--trainer.enable_progress_bar=false",
        ]
        print("python", *cmd[1:])
        env = {**os.environ, "WANDB_MODE": "offline"}  # demo runs never upload
        done = subprocess.run(cmd, cwd=RUNS_DIR, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"fit failed:\n{done.stderr[-3000:]}")
    print("runs in", RUNS_DIR)

# %% [markdown]
# ## Load the runs
#
# Each source becomes the same dict: `name`, nested `config`, `history` (a list of logged
# rows, e.g. `{"epoch": 1, "trainer/global_step": 31, "val/acc": 0.8}`) and `summary`.
# A run resumed from a checkpoint keeps its W&B id but writes a new offline folder; those
# pieces are joined back into one run.

# %%
runs = api_runs(RUNS_PATH) if ONLINE else local_runs(RUNS_DIR)
assert runs, f"no runs found in {RUNS_PATH if ONLINE else RUNS_DIR}"
for run in runs:
    print(f"{run['name']}: {len(run['history'])} history rows")

# %% [markdown]
# ## Learning curves
#
# Validation metrics are logged once per epoch, training loss and learning rate every few
# steps (`trainer.log_every_n_steps`). The learning-rate panel is a quick check that warmup and
# cosine decay did what the config asked.

# %%
panels = [
    ("val/acc", "epoch"),
    ("val/loss", "epoch"),
    ("train/loss_step", "trainer/global_step"),
    ("train/lr", "trainer/global_step"),
]
fig, axes = plt.subplots(2, 2, figsize=(11, 7))
for ax, (key, x) in zip(axes.flat, panels, strict=True):
    for run in runs:
        xs, ys = series(run, key, x)
        ax.plot(xs, ys, marker="o" if x == "epoch" else None, ms=3, label=run["name"])
    ax.set(title=key, xlabel=x.split("/")[-1])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
axes[0, 0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Configs and results
#
# The config values come from the logged config (`model.lr`, `model.net.init_args.depth`,
# ...). `val/acc_best` is the best validation accuracy seen, `params` and `train/throughput`
# (training images per second) come from the run summary.

# %%
columns = {  # header: value of a run
    "run": lambda r: r["name"],
    "lr": lambda r: get(r["config"], "model.lr"),
    "wd": lambda r: get(r["config"], "model.weight_decay"),
    "dim": lambda r: get(r["config"], "model.net.init_args.embed_dim"),
    "depth": lambda r: get(r["config"], "model.net.init_args.depth"),
    "heads": lambda r: get(r["config"], "model.net.init_args.num_heads"),
    "patch": lambda r: get(r["config"], "model.net.init_args.patch_size"),
    "epochs": lambda r: get(r["config"], "trainer.max_epochs"),
    "best val/acc": best,
    "val/loss": lambda r: r["summary"].get("val/loss"),
    "params": lambda r: r["summary"].get("params") or get(r["config"], "run.params"),
    "img/s": lambda r: r["summary"].get("train/throughput"),
}

print(table(runs, columns))
