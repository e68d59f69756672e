"""Train-step throughput of our VisionTransformer against timm's, same config, interleaved.

`python benchmarks/vit_vs_timm.py [--repeats 7] [--device cpu]`. Each repeat times a few steps of
ours, then of timm's (order alternating), and the table reports medians and the ratio, so a noisy
machine shifts both sides alike. Work in progress towards `make bench` (issue 7).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer as TimmViT

from vit_lightning import VisionTransformer

CONFIGS = {
    "cifar (patch 4, D192, depth 9)": dict(img_size=32, patch_size=4, embed_dim=192, depth=9,
                                           num_heads=12, mlp_ratio=2.0, num_classes=10),
    "ViT-Ti/16 at 224": dict(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3,
                             num_classes=1000),
}  # fmt: skip


def steps_per_s(model, opt, x, y, steps: int) -> float:
    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    if x.is_cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    rows = []
    for name, cfg in CONFIGS.items():
        torch.manual_seed(0)
        ours, theirs = VisionTransformer(**cfg).to(args.device), TimmViT(**cfg).to(args.device)
        theirs.load_state_dict(ours.state_dict())  # same weights: same work
        opts = {m: torch.optim.AdamW(m.parameters()) for m in (ours, theirs)}
        x = torch.randn(args.batch, 3, cfg["img_size"], cfg["img_size"], device=args.device)
        y = torch.randint(0, cfg["num_classes"], (args.batch,), device=args.device)
        times = {ours: [], theirs: []}
        for r in range(args.repeats):
            order = (ours, theirs) if r % 2 == 0 else (theirs, ours)
            for m in order:
                times[m].append(steps_per_s(m, opts[m], x, y, args.steps) * args.batch)
        a, b = statistics.median(times[ours]), statistics.median(times[theirs])
        rows.append((name, a, b, a / b))
    print(
        f"| config | ours img/s | timm img/s | ours / timm |  ({args.device}, batch {args.batch})"
    )
    print("|---|---|---|---|")
    for name, a, b, r in rows:
        print(f"| {name} | {a:.0f} | {b:.0f} | {r:.3f} |")


if __name__ == "__main__":
    main()
