"""Checkpoint files: where they go, which one a run resumes from, and how they are written.

- `CHECKPOINT_DIR`, `LAST_CHECKPOINT`, `checkpoint_dir`: the folder and file names, defined once.
- `newest_checkpoint`: what `--ckpt_path=last` resumes from.
- `AtomicCheckpointIO`: checkpoint files that are either complete or absent.
- `corrupt_checkpoint`: the error that names a damaged checkpoint file and the way out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vit_lightning.errors import UserError

CHECKPOINT_DIR = "checkpoints"  # under default_root_dir
LAST_CHECKPOINT = ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION  # last.ckpt
ON_EXCEPTION_NAME = "on_exception"  # OnExceptionCheckpoint's default filename
HPC_CHECKPOINTS = "hpc_ckpt_*.ckpt"  # what Lightning's SLURM handler writes in default_root_dir


def checkpoint_dir(default_root_dir: str | None) -> str:
    """`<default_root_dir>/checkpoints`: the best, last and preemption checkpoints."""
    return os.path.join(default_root_dir or ".", CHECKPOINT_DIR)


def newest_checkpoint(root: str | Path, ckpt_dir: str | Path | None = None) -> Path | None:
    """The most recently written of a run's resumable checkpoints, or None.

    Candidates: `last*.ckpt` and `on_exception*.ckpt` in `ckpt_dir` (default
    `<root>/checkpoints`), and SLURM's `hpc_ckpt_<n>.ckpt` in `root`. Lightning's own
    `ckpt_path="last"` never considers the hpc ones, and loads those only with `ckpt_path=None`
    on SLURM, so a requeued job would miss whichever kind it does not look at.
    """
    root = Path(root)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir else Path(checkpoint_dir(str(root)))
    ext = ModelCheckpoint.FILE_EXTENSION
    found = [
        *ckpt_dir.glob(f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}*{ext}"),
        *ckpt_dir.glob(f"{ON_EXCEPTION_NAME}*{ext}"),
        *root.glob(HPC_CHECKPOINTS),
    ]
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint files that are either complete or absent, and load errors that name the file.

    Lightning writes into a temp file in the system temp dir and then moves it; across
    filesystems (local /tmp, checkpoints on NFS or Lustre) that move is a copy, so a crash can
    leave a truncated file. Here the temp file sits next to the target, is fsynced, and
    `os.replace` swaps it in: the previous checkpoint stays loadable until the new one is whole.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        try:  # make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass  # some filesystems cannot fsync a directory

    def load_checkpoint(self, path: str | Path, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, *args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as e:  # zip reader, unpickling, EOF: all mean a damaged file
            raise corrupt_checkpoint(path, e) from e


def corrupt_checkpoint(path: str | Path, e: BaseException) -> UserError:
    """The error for a checkpoint that fails to load: names the file, the cause and the way out."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return UserError(
        f"Checkpoint {str(path)!r} is corrupt or truncated and cannot be loaded "
        f"({type(e).__name__}: {first}). Delete or move it and resume from another one "
        "(e.g. --ckpt_path=<dir>/best-....ckpt), or start afresh without --ckpt_path."
    )
