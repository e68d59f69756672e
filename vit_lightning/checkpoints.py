"""Checkpoint files: where they go, which one a run resumes from, and how they are written.

- `CHECKPOINT_DIR`, `LAST_CHECKPOINT`, `checkpoint_dir`: the folder and file names, defined once.
- `newest_checkpoint`, `best_checkpoint`: what `--ckpt_path=last` and `=best` load, in a local
  folder or an fsspec URL (`s3://...`).
- `AtomicCheckpointIO`: checkpoint files that are either complete or absent; `write_file` and
  `temp_path` do the same for the run's other files (config.yaml, predictions).
- `remove_stale_temp_files`: what a killed save left behind.
- `corrupt_checkpoint`, `disk_full`: the errors that name the file and the way out.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec.utils
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vit_lightning.errors import UserError
from vit_lightning.run_lock import pid_alive

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


def is_local(path: str | Path) -> bool:
    """Whether `path` is on this machine's filesystem, not an fsspec URL such as `s3://...`."""
    return fsspec.utils.get_protocol(str(path)) in ("file", "local")


def _local(path: str | Path) -> Path:
    return Path(str(path).removeprefix("file://"))


def _join(folder: str | Path, name: str) -> Path | str:
    return _local(folder) / name if is_local(folder) else f"{str(folder).rstrip('/')}/{name}"


def _find(folder: str | Path, pattern: str) -> list[Path | str]:
    """The files in `folder` named like `pattern`: Paths, or URLs spelt as `folder` is."""
    if is_local(folder):
        return list(_local(folder).glob(pattern))
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


# `.last.ckpt.tmp<pid>@<host>`: the host, because a shared filesystem shows other nodes' saves
_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)(?:@(?P<host>[\w.-]+))?$")


def _host() -> str:
    return re.sub(r"[^\w.-]", "_", socket.gethostname())


def temp_path(path: Path) -> Path:
    """Where `path` is written before `os.replace` moves it into place: a hidden file beside it
    that `remove_stale_temp_files` recognises once its process has died."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}@{_host()}")


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """Yields a file that replaces local `path` when the block ends: written to `temp_path`,
    fsynced, renamed over `path` and the rename made durable; on an error, `path` is untouched
    and the temp file removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
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


def write_file(path: str | Path, data: bytes) -> None:
    """Write `path` whole or not at all: a reader sees the old file or the new one, never half.

    A local file goes through `atomic_write`; a remote one (an fsspec URL) is one object, which
    the store writes whole.
    """
    if not is_local(path):
        get_filesystem(str(path)).pipe_file(str(path), data)
        return
    with atomic_write(_local(path)) as f:
        f.write(data)


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Deletes the temp files of saves whose process died (e.g. a kill -9 mid-save); returns them.

    A temp file is stale when it was written on this host by a process that no longer exists; a
    live process's file, and one from another host, are left alone.
    """
    removed: list[Path] = []
    if not is_local(folder):
        return removed  # remote saves are Lightning's, which writes no temp file beside them
    for p in _local(folder).glob(".*.tmp*"):
        m = _TEMP.match(p.name)
        if m and m["host"] in (None, _host()) and not pid_alive(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


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
            here = _local(recorded) if is_local(recorded) else recorded
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
