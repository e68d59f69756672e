"""`RNGState`: the RNG streams training draws from, saved in and restored from checkpoints."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class RNGState(Callback):
    """Saves the RNG streams training draws from (torch CPU and CUDA, numpy, Python) in every
    checkpoint, and restores them on resume. Lightning saves none of them.

    With data loading keyed by (seed, epoch, index) (see `vit_lightning.data.sampling`), these streams
    feed only the model's randomness: dropout, DropPath and timm's Mixup (numpy). Under DDP every
    rank is seeded alike by `seed_everything`, so rank 0's state is every rank's state. Stored as
    tensors and ints, so checkpoints still load with `weights_only=True`.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
            "python": list(random.getstate()[1]),
            "python_gauss": random.getstate()[2],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))
        random.setstate((3, tuple(state["python"]), state["python_gauss"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
