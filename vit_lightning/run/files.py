"""A run's files: local or remote (an fsspec URL), written whole or not at all, and the temp
files a killed process leaves behind.

- `is_local`, `local_path`: a path on this machine, or a URL such as `s3://...`.
- `atomic_write`, `write_file`, `temp_path`: a reader sees the old file or the new one, never
  half (checkpoints, config.yaml, predictions, pictures).
- `remove_stale_temp_files`: the temp files of writes whose process died (`pid_alive`).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import fsspec.utils
from lightning.fabric.utilities.cloud_io import get_filesystem


def is_local(path: str | Path) -> bool:
    """Whether `path` is on this machine's filesystem, not an fsspec URL such as `s3://...`."""
    return fsspec.utils.get_protocol(str(path)) in ("file", "local")


def local_path(path: str | Path) -> Path:
    return Path(str(path).removeprefix("file://"))


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
    with atomic_write(local_path(path)) as f:
        f.write(data)


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Deletes the temp files of saves whose process died (e.g. a kill -9 mid-save); returns them.

    A temp file is stale when it was written on this host by a process that no longer exists; a
    live process's file, and one from another host, are left alone.
    """
    removed: list[Path] = []
    if not is_local(folder):
        return removed  # remote saves are Lightning's, which writes no temp file beside them
    for p in local_path(folder).glob(".*.tmp*"):
        m = _TEMP.match(p.name)
        if m and m["host"] in (None, _host()) and not pid_alive(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
