"""The CIFAR-10 train loader's throughput against what the model consumes in training.

The loaders read a full-size CIFAR-10 (50k + 10k random images) written in the real on-disk
format, through the DataModule exactly as configs/cifar10.yaml configures it. The device
pipeline runs once per policy, each with the config's random erasing. The model side is the same
config's train step (eager, and compiled), on the same device; for a GPU-sized step it is
estimated from the model's FLOPs (`estimate_gpu`).
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
from torch.utils._python_dispatch import TorchDispatchMode
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
        "device pipeline, crop + flip only": {
            **cfg,
            "augment": "none",
            "random_erasing": 0.0,
            "device_pipeline": True,
        },
    }
    for policy in ("autoaugment", "randaugment", "trivialaugment"):  # the config's is first
        mark = " (the config)" if policy == cfg["augment"] else ""
        setups[f"device pipeline, {policy} + erasing{mark}"] = {
            **cfg,
            "augment": policy,
            "device_pipeline": True,
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
    text = (
        f"Model train step (batch {batch}), {model_rows}. Loader rates are images per second "
        f"out of the DataModule's train loader; the ratio is against the fastest model step.\n\n"
        + table(["train loader", "img/s", "**loader / model**"], rows)
    )
    if device == "cpu":
        text += "\n\n" + estimate_gpu(CIFAR10DataModule(**{**cfg, "device_pipeline": True}))
    return text


# an H100 SXM's dense bf16 peak, and the fraction of it assumed for the train step
H100_BF16, ASSUMED_MFU = 989e12, 0.3


class _Ops(TorchDispatchMode):
    """Counts the aten ops a call dispatches: on a GPU, each is at most one kernel launch."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _batch(ds, n: int) -> tuple[int, float]:
    """(aten ops, median seconds) of the device pipeline's `batch` for n images on this CPU."""
    draws = ds.__getitems__([(i, 0) for i in range(n)])
    draws.pop("split")
    with _Ops() as ops:
        ds.batch(**draws)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        ds.batch(**draws)
        times.append(time.perf_counter() - t)
    return ops.n, statistics.median(times)


def estimate_gpu(dm: CIFAR10DataModule) -> str:
    """The loader / model ratio for a GPU-sized step, *estimated*.

    Model: the config's network at an assumed MFU on an H100, from its FLOPs. Device pipeline:
    on a GPU its kernels on a 32x32 batch are tiny, so it is bound by dispatching them; its host
    time per op is taken from this CPU on a 2-image batch (dispatch, almost no work) and
    multiplied by the ops a batch dispatches.
    """
    from benchmarks.gpu import forward_flops

    dm.setup("fit")
    ds = dm.train_set
    per_image = 3 * forward_flops(**cifar_net_kwargs())  # forward + backward
    model = ASSUMED_MFU * H100_BF16 / per_image
    ops, seconds = _batch(ds, 2)
    per_op = seconds / ops
    rows = []
    for batch in (dm.batch_size, 1024):
        n, _ = _batch(ds, batch)
        rate = batch / (n * per_op)
        rows.append([batch, n, rate, model, rate / model])
    return (
        f"**Estimated, not measured** (no GPU here), for the config's policy ({dm.augment}) + "
        f"erasing: the model needs {per_image / 1e9:.2f} GFLOP per training image, so an H100 at "
        f"an assumed {ASSUMED_MFU:.0%} MFU of {H100_BF16 / 1e12:.0f} TFLOP/s dense bf16 trains "
        f"{model:,.0f} img/s at any batch size. The pipeline is taken as dispatch-bound at "
        f"{per_op * 1e6:.1f} µs per op (this CPU's host time per op on a 2-image batch).\n\n"
        + table(
            [
                "batch",
                "ops per batch",
                "pipeline img/s (est.)",
                "model img/s (est.)",
                "**loader / model (est.)**",
            ],  # fmt: skip
            rows,
        )
    )
