"""Timing for side-by-side benchmarks: interleaved repeats, medians, ratios, markdown tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def alternating(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median of the seconds each fn returns. Every fn runs once to warm up (and compile), then
    `repeats` rounds call them all, order alternating, so drift on a noisy machine hits all
    sides alike."""
    for fn in fns.values():
        fn()
    keys, times = list(fns), {k: [] for k in fns}
    for r in range(repeats):
        for k in keys if r % 2 == 0 else keys[::-1]:
            times[k].append(fns[k]())
    return {k: statistics.median(v) for k, v in times.items()}


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """`alternating`, with each call timed from outside (device synced before and after)."""

    def timed(fn: Callable[[], object]) -> Callable[[], float]:
        def run() -> float:
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            return time.perf_counter() - t

        return run

    return alternating({k: timed(fn) for k, fn in fns.items()}, repeats)


def table(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table; floats get 3 significant decimals or none when large."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def cifar_net_kwargs() -> dict:
    """The network of configs/cifar10.yaml, as VisionTransformer keyword arguments."""
    cfg = yaml.safe_load((ROOT / "configs" / "cifar10.yaml").read_text())
    return {**cfg["model"]["net"]["init_args"], "img_size": 32, "num_classes": 10}
