"""Where a run picks up after a restart: its newest checkpoint, its W&B run id, its RNG state."""

from __future__ import annotations

import os
import random
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_only

RUN_ID_FILE = "wandb-run-id"


def newest_checkpoint(root: str | Path, ckpt_dir: str | Path | None = None) -> Path | None:
    """The most recently written of a run's resumable checkpoints, or None.

    Candidates: `last*.ckpt` and `on_exception*.ckpt` in `ckpt_dir` (default
    `<root>/checkpoints`), and SLURM's `hpc_ckpt_<n>.ckpt` in `root`. Lightning's own
    `ckpt_path="last"` never considers the hpc ones, and loads those only with `ckpt_path=None`
    on SLURM, so a requeued job would miss whichever kind it does not look at.
    """
    root = Path(root)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir else root / "checkpoints"
    found = [
        *ckpt_dir.glob("last*.ckpt"),
        *ckpt_dir.glob("on_exception*.ckpt"),
        *root.glob("hpc_ckpt_*.ckpt"),
    ]
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)


def wandb_run_id(root: str | Path, resuming: bool) -> str | None:
    """The W&B run id of the run in `root`: kept when resuming, new otherwise.

    Rank 0 persists it in `<root>/wandb-run-id`, so a requeued or resumed job keeps writing to
    the same W&B run. Other ranks only read it (they log nothing) and never write it.
    """
    path = Path(root) / RUN_ID_FILE
    if resuming and path.is_file():
        return path.read_text().strip() or None
    if rank_zero_only.rank != 0:
        return None
    run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{RUN_ID_FILE}.tmp{os.getpid()}")
    tmp.write_text(run_id + "\n")
    os.replace(tmp, path)  # atomic: a reader sees the old id or the new one, never half
    return run_id


class RNGState(Callback):
    """Saves the RNG streams training draws from (torch CPU and CUDA, numpy, Python) in every
    checkpoint, and restores them on resume. Lightning saves none of them.

    With data loading keyed by (seed, epoch, index) (see `vit_lightning.loader`), these streams
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
            },  # fmt: skip
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
