"""The CIFAR-10 train loader's throughput against what the model consumes in training.

The loaders read a full-size CIFAR-10 (50k + 10k random images) written in the real on-disk
format, through the DataModule exactly as configs/cifar10.yaml configures it. The model side is
the same config's train step (eager, and compiled), on the same device.
"""

from __future__ import annotations

import hashlib
import pickle
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torchvision.datasets import CIFAR10

from benchmarks.common import ROOT, cifar_net_kwargs, interleaved, sync, table
from benchmarks.model import train_steps, variants
from vit_lightning.data import CIFAR10DataModule


def write_cifar10(root: Path) -> None:
    """Random images in `cifar-10-batches-py/`; torchvision's md5 lists are pointed at them."""
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    rng, sums = np.random.default_rng(0), {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        blob = pickle.dumps(
            {
                "data": rng.integers(0, 256, (10000, 3072), dtype=np.uint8),
                "labels": rng.integers(0, 10, 10000).tolist(),
            }
        )
        (folder / name).write_bytes(blob)
        sums[name] = hashlib.md5(blob).hexdigest()
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("abcdefghij")}))
    CIFAR10.train_list = [[n, sums[n]] for n, _ in CIFAR10.train_list]
    CIFAR10.test_list = [[n, sums[n]] for n, _ in CIFAR10.test_list]
    CIFAR10.meta = {
        **CIFAR10.meta,
        "md5": hashlib.md5((folder / "batches.meta").read_bytes()).hexdigest(),
    }


def loader_rate(dm: CIFAR10DataModule, device: str, batches: int) -> float:
    """Images per second out of the train loader, after its workers have started; the device
    pipeline's batches are also moved and augmented on `device`, as in training."""
    it = iter(dm.train_dataloader())
    for _ in range(3):
        next(it)  # worker start-up is paid once per fit (persistent workers)
    sync(device)
    t, n = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(it)
        if isinstance(batch, dict):
            batch = dm.on_after_batch_transfer(
                {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}, 0
            )
        n += len(batch[0])
    sync(device)
    return n / (time.perf_counter() - t)


def run(device: str, repeats: int, data_dir: Path, compiled: bool) -> str:
    write_cifar10(data_dir)
    cfg = yaml.safe_load((ROOT / "configs" / "cifar10.yaml").read_text())["data"]["init_args"]
    cfg = {**cfg, "data_dir": str(data_dir), "download": False}
    batch, workers = cfg["batch_size"], cfg["num_workers"]
    setups = {
        f"torchvision, {cfg['augment']} + erasing, {workers} workers (the config)": cfg,
        f"torchvision, {cfg['augment']} + erasing, 1 worker": {**cfg, "num_workers": 1},
        "torchvision, crop + flip only, 1 worker": {
            **cfg,
            "num_workers": 1,
            "augment": "none",
            "random_erasing": 0.0,
        },
        "device pipeline (crop + flip on the device)": {
            **cfg,
            "augment": "none",
            "random_erasing": 0.0,
            "device_pipeline": True,
        },
    }
    rates = {}
    for name, kw in setups.items():
        dm = CIFAR10DataModule(**kw)
        dm.setup("fit")
        rates[name] = statistics.median(loader_rate(dm, device, 40) for _ in range(repeats))
        del dm
    # what the model eats: the same config's train step at the same batch size
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    models = {
        k: v for k, v in variants(cifar_net_kwargs(), compiled, device).items() if "timm" not in k
    }
    t = interleaved({k: train_steps(m, x, y, 2, None) for k, m in models.items()}, repeats, device)
    consume = {k: 2 * batch / v for k, v in t.items()}
    need = max(consume.values())
    rows = [[name, r, r / need] for name, r in rates.items()]
    model_rows = ", ".join(f"{k}: {v:,.0f} img/s" for k, v in consume.items())
    return (
        f"Model train step (batch {batch}), {model_rows}. Loader rates are images per second "
        f"out of the DataModule's train loader; the ratio is against the fastest model step.\n\n"
        + table(["train loader", "img/s", "**loader / model**"], rows)
    )
