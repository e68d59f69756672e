"""Where a run picks up after a restart: its newest checkpoint and its W&B run id."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

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
