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
# An experiment is a baseline and its variants, each over several seeds. `python -m
# vit_lightning multirun` runs one (a fit and a test per variant and seed, each in its own
# folder); `python -m vit_lightning compare` says whether a difference is real: n, mean, sd and a
# 95% interval per variant, and the difference from a baseline with its interval and Welch's
# p-value. This notebook uses the same code (`vit_lightning.experiments.compare`), then draws each
# run's learning curves from its logged history.
#
# Where the runs come from, in order:
#
# 1. **W&B online**: with `WANDB_API_KEY` and `RUNS_PATH="entity/project"` set, through
#    `wandb.Api()` (optionally `RUNS_GROUP`, a W&B group, or `RUNS_JOB_TYPE`: multirun sets the
#    job type to the experiment's name);
# 2. **local folders**: `RUNS_DIR`, a multirun experiment folder, or a folder of run folders
#    (`default_root_dir`s with their `config.yaml` and `results.json`);
# 3. **a demo**: neither set, it runs a multirun of the smoke config on synthetic data: two
#    learning rates x two seeds, 3 epochs each, about a minute in all.

# %%
# %matplotlib inline
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Image, Markdown, display
from matplotlib.ticker import MaxNLocator

from vit_lightning.analysis.runs import api_records, local_runs, series
from vit_lightning.analysis.tutorial import REPO
from vit_lightning.experiments import compare

RUNS_PATH = os.environ.get("RUNS_PATH")  # "entity/project" on W&B
RUNS_DIR = os.environ.get("RUNS_DIR")  # an experiment folder, or a folder of run folders
ONLINE = bool(os.environ.get("WANDB_API_KEY") and RUNS_PATH)
print("source:", "W&B " + RUNS_PATH if ONLINE else RUNS_DIR or "demo experiment")

# %% [markdown]
# ## The demo experiment (only when no runs were given)
#
# The command you would type in a shell: a grid of one key (`model.lr`), two seeds, and fit
# overrides after `--` that shorten the runs. Running it again would skip every finished run.

# %%
if not ONLINE and not RUNS_DIR:
    RUNS_DIR = str(Path(tempfile.mkdtemp(prefix="vit-runs-")) / "lr-demo")
    cmd = [sys.executable, "-m", "vit_lightning", "multirun"]
    cmd += ["--config", str(REPO / "configs" / "smoke.yaml"), "--grid", "model.lr=3e-4,3e-3"]
    cmd += ["--seeds", "0,1", "--root", RUNS_DIR, "--"]
    cmd += ["--trainer.max_epochs=3", "--data.init_args.noise=2.0"]
    cmd += ["--data.init_args.train_size=512", "--trainer.enable_progress_bar=false"]
    print("python", *cmd[1:])
    env = {**os.environ, "WANDB_MODE": "offline"}  # demo runs never upload
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"multirun failed:\n{done.stderr[-3000:]}")
    print(done.stderr.strip())

# %% [markdown]
# ## The comparison table
#
# Runs group by the settings that differ between them (for an experiment folder: by its
# variants). A run that failed, stopped early, was never tested, or comes from another base
# config is listed under "Left out", never averaged in. With two seeds the 95% intervals are wide:
# the t quantile for n = 2 is 12.7; three seeds or more make a claim.

# %%
if ONLINE:
    group = os.environ.get("RUNS_GROUP")
    found = api_records(RUNS_PATH, [group] if group else None, os.environ.get("RUNS_JOB_TYPE"))
    records, by = compare.read_wandb(found, tested=True), []
else:
    records, by = compare.read_paths([RUNS_DIR], tested=True)
variants = all(r.variant for r in records)
table = compare.compare(records, by or None, list(compare.DEFAULT_METRICS), variants=variants)
display(Markdown(compare.markdown(table)))

# %% [markdown]
# ## The pictures `compare` writes
#
# `curves.png`: validation accuracy per epoch, the mean of each group with a band of one sd over
# its seeds. `dots.png`: every run's final value per metric, with the group's mean and 95%
# interval.

# %%
out = Path(tempfile.mkdtemp(prefix="vit-compare-"))
for png in compare.plot(table, out):
    display(Image(filename=png))

# %% [markdown]
# ## Each run's learning curves
#
# From the runs' logged history (offline W&B runs under each run folder, or CSVLogger logs).
# Validation metrics are logged once per epoch, training loss and learning rate every few steps
# (`trainer.log_every_n_steps`); the learning-rate panel checks that warmup and cosine decay did
# what the config asked.

# %%
if not ONLINE:
    runs = [r for r in local_runs(RUNS_DIR) if series(r, "val/acc", "epoch")[0]]  # fits only
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
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    plt.show()
