"""Training compute of a network, machine-independent: FLOPs per image of one training step
(forward and backward, counted by `torch.utils.flop_counter`), times the images a run sees."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def train_flops_per_image(net: nn.Module, input_shape: tuple[int, ...], batch: int = 2) -> int:
    """FLOPs of a training step's forward and backward, per image of shape (C, H, W).

    Counted on a copy in train mode under a forked RNG, so the network, its gradients and the
    random streams (DropPath draws) are as they were. Matmuls and convolutions only, as
    `FlopCounterMode` counts them: the usual convention, about 3x the forward's FLOPs.
    """
    model = copy.deepcopy(net).train()
    x = torch.zeros(batch, *input_shape, device=next(model.parameters()).device)
    with torch.random.fork_rng(devices=[]), FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    return counter.get_total_flops() // batch


def format_flops(n: float) -> str:
    """1.23e15 -> '1.23 PFLOP'."""
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}FLOP"
    return f"{n:.3g} FLOP"
