"""Checkpoint files: where they go, which one a run resumes from, and how they are written.

- `CHECKPOINT_DIR`, `LAST_CHECKPOINT`, `checkpoint_dir`: the folder and file names, defined once.
- `newest_checkpoint`, `best_checkpoint`: what `--ckpt_path=last` and `=best` load, in a local
  folder or an fsspec URL (`s3://...`).
- `resolve_ckpt_path`: what `--ckpt_path` names: `last` (the newest checkpoint), `none` (no
  weights, on purpose) or a file. Evaluating with nothing loaded, a missing file and a folder
  are errors. `check_checkpoint_file`: a Lightning checkpoint, from a Lightning version that
  can read it.
- `AtomicCheckpointIO`: checkpoint files that are either complete or absent (through
  `run/files.py`'s `atomic_write`, as the run's other files are); a killed save's temp file is
  removed on the next save.
- `corrupt_checkpoint`, `disk_full`: the errors that name the file and the way out.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from packaging.version import InvalidVersion, Version

from vit_lightning.errors import ConfigError, UserError
from vit_lightning.run.files import atomic_write, is_local, local_path, remove_stale_temp_files

CHECKPOINT_DIR = "checkpoints"  # under default_root_dir
LAST_CHECKPOINT = ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION  # last.ckpt
ON_EXCEPTION_NAME = "on_exception"  # OnExceptionCheckpoint's default filename
HPC_CHECKPOINTS = "hpc_ckpt_*.ckpt"  # what Lightning's SLURM handler writes in default_root_dir


def checkpoint_dir(default_root_dir: str | None) -> str:
    """`<default_root_dir>/checkpoints`: the best, last and preemption checkpoints."""
    return os.path.join(default_root_dir or ".", CHECKPOINT_DIR)


def newest_checkpoint(root: str | Path, ckpt_dir: str | Path | None = None) -> Path | str | None:
    """The most recently written of a run's resumable checkpoints, or None.

    Candidates: `last*.ckpt` and `on_exception*.ckpt` in `ckpt_dir` (default
    `<root>/checkpoints`), and SLURM's `hpc_ckpt_<n>.ckpt` in `root`. Lightning's own
    `ckpt_path="last"` never considers the hpc ones, and loads those only with `ckpt_path=None`
    on SLURM, so a requeued job would miss whichever kind it does not look at.

    Returns a Path in a local folder, a URL (`s3://...`) in a remote one.
    """
    ckpt_dir = ckpt_dir or checkpoint_dir(str(root))
    ext = ModelCheckpoint.FILE_EXTENSION
    found = [
        *_find(ckpt_dir, f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}*{ext}"),
        *_find(ckpt_dir, f"{ON_EXCEPTION_NAME}*{ext}"),
        *_find(root, HPC_CHECKPOINTS),
    ]
    return max(found, key=_mtime_ns, default=None)


def _join(folder: str | Path, name: str) -> Path | str:
    return local_path(folder) / name if is_local(folder) else f"{str(folder).rstrip('/')}/{name}"


def _find(folder: str | Path, pattern: str) -> list[Path | str]:
    """The files in `folder` named like `pattern`: Paths, or URLs spelt as `folder` is."""
    if is_local(folder):
        return list(local_path(folder).glob(pattern))
    fs = get_filesystem(str(folder))
    try:  # ls, not glob: a `[` or `*` in the folder's own name is no pattern
        entries = fs.ls(str(folder), detail=True)
    except FileNotFoundError:
        return []
    names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "file"]
    return [_join(folder, n) for n in names if fnmatch.fnmatchcase(n, pattern)]


def _mtime_ns(path: Path | str) -> int:
    if isinstance(path, Path):
        return path.stat().st_mtime_ns
    return int(get_filesystem(path).modified(path).timestamp() * 1e9)


def _is_file(path: Path | str) -> bool:
    if isinstance(path, Path):
        return path.is_file()
    try:  # a recorded URL may name a store this machine cannot reach (a run copied off it)
        return get_filesystem(path).isfile(path)
    except (ImportError, ValueError, OSError):
        return False


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint files that are either complete or absent, and load errors that name the file.

    Lightning writes into a temp file in the system temp dir and then moves it; across
    filesystems (local /tmp, checkpoints on NFS or Lustre) that move is a copy, so a crash can
    leave a truncated file. Here the temp file sits next to the target, is fsynced, and
    `os.replace` swaps it in: the previous checkpoint stays loadable until the new one is whole.
    Each save first removes temp files that killed saves left in its folder. Remote paths
    (`s3://`, `gs://`, any fsspec URL) are written by Lightning's own TorchCheckpointIO.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if not is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(str(path).removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path.parent)
        try:
            with atomic_write(path) as f:
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as e:  # torch's zip writer may wrap the OSError
            if _is_disk_full(e):
                raise disk_full(path) from e
            raise

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


def _is_disk_full(e: BaseException | None) -> bool:
    for _ in range(8):  # the OSError may sit under a wrapper or two
        if e is None:
            return False
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False


def disk_full(path: Path) -> UserError:
    """The error for a checkpoint save that ran out of space: where, how much is free, what to do."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there"
    except OSError:
        free = "free space unknown"
    return UserError(
        f"No space left on device: could not write checkpoint {str(path)!r} ({free}). "
        f"The previous {path.name}, if any, is unchanged. Free some space or set "
        "--trainer.default_root_dir to a disk with room, then rerun with --ckpt_path=last."
    )


def best_checkpoint(root: str | Path, ckpt_dir: str | Path | None = None) -> Path | str | None:
    """What `--ckpt_path=best` loads: the run's best checkpoint by the metric it monitors, or None.

    A ModelCheckpoint with a `monitor` records its best file in its callback state, and the
    newest resumable checkpoint (`newest_checkpoint`) holds the latest record; a recorded path that
    is gone (a run folder copied off the cluster) is looked for by name in `ckpt_dir`. Without a
    record, the files in `ckpt_dir` that such a callback saved are compared by the score each one
    recorded when it was written, in the callback's mode (max or min).

    Returns a Path in a local folder, a URL (`s3://...`) in a remote one.
    """
    ckpt_dir = ckpt_dir or checkpoint_dir(str(root))
    newest = newest_checkpoint(root, ckpt_dir)
    for state, _ in _monitoring_states(newest) if newest else []:
        recorded = state.get("best_model_path") or ""
        if name := _name(recorded):
            here = local_path(recorded) if is_local(recorded) else recorded
            for path in (here, _join(ckpt_dir, name)):
                if _is_file(path):
                    return path
    scored = []
    for path in _find(ckpt_dir, f"*{ModelCheckpoint.FILE_EXTENSION}"):
        for state, sign in _monitoring_states(path):
            scores = {_name(p): s for p, s in (state.get("best_k_models") or {}).items()}
            if _name(path) in scores:  # saved by this callback as one of its top k
                scored.append((sign * float(scores[_name(path)]), str(path), path))
    return max(scored)[2] if scored else None


def _name(path: str | Path) -> str:
    return Path(path).name if is_local(path) else str(path).rstrip("/").rsplit("/", 1)[-1]


def _monitoring_states(path: Path | str) -> list[tuple[dict, int]]:
    """(state, +1 for mode max or -1 for min) of each ModelCheckpoint with a monitor in `path`."""
    try:  # mmap: the tensors stay on disk, only the small callback states are read
        if isinstance(path, Path):
            checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        else:  # remote: read whole, as Lightning's own loading would
            with get_filesystem(path).open(path, "rb") as f:
                checkpoint = torch.load(f, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: not a candidate; loading it would name the damage
        return []
    return [
        (state, -1 if "'mode': 'min'" in key else 1)  # the state key holds ModelCheckpoint's mode
        for key, state in (checkpoint.get("callbacks") or {}).items()
        if isinstance(state, dict) and state.get("monitor") and "best_model_path" in state
    ]


EVAL_SUBCOMMANDS = ("validate", "test", "predict")  # the subcommands that need weights
UNTRAINED = "none"  # --ckpt_path=none: evaluate or predict the untrained model, on purpose

VERSION_KEY = "pytorch-lightning_version"  # in every checkpoint Lightning writes


def resolve_ckpt_path(
    subcommand: str,
    value: Any,
    root: str,
    ckpt_dir: str,
    named: Mapping[str, Callable[[], Path | None]],
) -> str | None:
    """The checkpoint file `--ckpt_path=value` means, or None for no checkpoint.

    `named` maps names such as `last` to a function that finds that checkpoint of the run in
    `root` (None when there is none). A fit that finds none starts afresh (a first run under a
    requeue script); evaluation and predict need weights unless `--ckpt_path=none` says not.
    """
    if value is None:
        if subcommand in EVAL_SUBCOMMANDS:
            newest = named["last"]() if "last" in named else None
            here = f"it found {newest}" if newest else f"{ckpt_dir} has no checkpoint yet"
            raise ConfigError(
                f"{subcommand} without --ckpt_path would use the untrained model's random "
                f"weights. Pass --ckpt_path=last (the newest checkpoint of the run in {root}: "
                f"{here}), --ckpt_path=<file>, or --ckpt_path={UNTRAINED} to {subcommand} the "
                "untrained model on purpose"
            )
        return None
    value = str(value)
    if value.lower() == UNTRAINED:
        return None
    if value in named:
        found = named[value]()
        if found is not None:
            verb = "resuming from" if subcommand == "fit" else "loading"
            rank_zero_info(f"ckpt_path={value}: {verb} {found} (the {value} checkpoint)")
            return str(found)
        searched = f"no {value} checkpoint in {ckpt_dir} (the run folder is {root})"
        if subcommand == "fit":
            rank_zero_info(f"ckpt_path={value}: {searched}; starting a new run")
            return None
        raise ConfigError(
            f"--ckpt_path={value}: {searched}. Point --trainer.default_root_dir at the run that "
            f"holds the weights, pass --ckpt_path=<file>, or --ckpt_path={UNTRAINED} to "
            f"{subcommand} the untrained model on purpose"
        )
    if not is_local(value):
        return value  # s3://, gs://: Lightning's own IO reads those
    path = Path(value.removeprefix("file://"))
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.ckpt"))[:5]
        raise ConfigError(
            f"--ckpt_path={value} is a folder; pass one checkpoint file in it"
            + (f" ({', '.join(inside)})" if inside else " (it holds no *.ckpt file)")
            + ", or --ckpt_path=last with --trainer.default_root_dir set to the run's folder"
        )
    if not path.exists():
        raise ConfigError(
            f"--ckpt_path={value}: no such file. Check the path, or pass --ckpt_path=last to "
            f"take the newest checkpoint of the run in {root}"
        )
    return value


def check_checkpoint_file(path: str) -> None:
    """A file that is not a Lightning checkpoint, or whose Lightning version cannot be read.

    Memory-mapped, so only the small parts read here leave the disk.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # truncated zip, garbage, unpicklable: the corrupt-file message
        raise corrupt_checkpoint(path, e) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        held = ", ".join(map(str, list(ckpt)[:4])) if isinstance(ckpt, dict) else type(ckpt)
        raise ConfigError(
            f"--ckpt_path={path} is not a Lightning checkpoint: it has no 'state_dict' (it "
            f"holds {held}). Bare weights (e.g. timm's) load into the network with "
            "load_state_dict, not through --ckpt_path"
        )
    version = ckpt.get(VERSION_KEY)
    try:
        Version(str(version))
    except InvalidVersion:
        raise ConfigError(
            f"--ckpt_path={path} does not say which Lightning version wrote it "
            f"({VERSION_KEY}={version!r}; this is Lightning {L.__version__}), so Lightning cannot "
            f"upgrade and load it. If you know the version, set checkpoint[{VERSION_KEY!r}] to "
            "it; otherwise load its state_dict into the model by hand"
        ) from None
