"""Shared test setup: GPU tests skip cleanly on CPU-only machines, W&B runs never leak from one
test into the next, and fixtures for the CLI in a fresh process and for tiny data files."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import ROOT
from helpers.cli import run_cli as _run_cli
from helpers.data_files import Cifar10Files, write_cifar10, write_idx

# Under pytest-xdist each worker gets its share of the cores: torch's default (every core per
# process) makes the workers' threads, and those of the CLI processes and notebook kernels they
# start (OMP_NUM_THREADS is inherited), spin against each other.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
    torch.set_num_threads(_THREADS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _finish_wandb():
    """WandbLogger leaves its run open; the next in-process CLI call must not log into it."""
    yield
    wandb = sys.modules.get("wandb")  # never imported: no run to finish
    if wandb is not None and wandb.run is not None:
        wandb.finish()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (helpers.ROOT, for code that runs before fixtures exist)."""
    return ROOT


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """`run_cli(*args, env=None, cwd=ROOT, timeout=600)`: `python -m vit_lightning *args` in a
    fresh process (DDP launches its own workers; signals and exit codes are real)."""
    return _run_cli


@pytest.fixture
def cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cifar10Files:
    """Tiny CIFAR-10 in torchvision's format under tmp_path: 100 train and 20 test images."""
    return write_cifar10(tmp_path, monkeypatch)


@pytest.fixture
def fmnist_idx(tmp_path: Path) -> Path:
    """Tiny Fashion-MNIST idx files (30 train, 10 test images) in tmp_path / "idx"."""
    return write_idx(tmp_path / "idx")


@pytest.fixture(scope="session")
def fmnist_idx_300(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fashion-MNIST idx files with 300 train and 20 test images, written once per session.

    Read-only: datamodules copy them into their own data_dir.
    """
    return write_idx(tmp_path_factory.mktemp("fmnist") / "idx", n_train=300, n_test=20)
