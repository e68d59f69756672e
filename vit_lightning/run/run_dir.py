"""The run folder (`default_root_dir`): writable (`check_run_dir`), never overwritten by a fresh
fit (`check_new_run_dir`), and held by one live `fit` at a time (`RunLock`): a lock file that names
the run holding it.

Two fits writing into one folder would mix their checkpoints, config.yaml and W&B run id. The
lock is an advisory `flock` on `<default_root_dir>/fit.lock`, which the kernel drops when its
process ends, however it ends: a killed run never blocks its own resume. The file holds the
holder's PID and host for the message. Where the filesystem has no flock (some Lustre mounts), a
lock whose PID is dead on this host is taken over, and one from another host is taken over with
a warning, since its process cannot be checked from here.

Only the launching process takes it: DDP workers run the CLI again, with a rank in their
environment, and must not lock each other out.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from vit_lightning.errors import ConfigError, UserError
from vit_lightning.run.checkpoints import HPC_CHECKPOINTS
from vit_lightning.run.files import is_local, pid_alive

try:
    import fcntl
except ImportError:  # not POSIX: the PID check alone
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "fit.lock"  # in default_root_dir
# ranks as Lightning's launcher, torchrun, SLURM or LSF set them: all unset or 0 in the first process
RANK_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "SLURM_PROCID",
    "JSM_NAMESPACE_RANK",
)
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_held: set[int] = set()  # this process's lock file descriptors


def _close_in_child() -> None:
    """A forked child (a DataLoader worker) shares the flock; it must not outlive the run's own
    process holding it, or a resume right after a kill -9 would find the folder still locked."""
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def is_launching_process() -> bool:
    """Whether this is global rank 0: no rank variable, or all of them 0."""
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


class RunLock:
    """`RunLock(root).acquire()` or a `UserError` that names the folder and the live run."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            while self.fd is None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    self._take(fd)
                except BaseException:
                    os.close(fd)
                    raise
        except OSError as e:
            raise ConfigError(
                f"cannot write into --trainer.default_root_dir={self.root} ({e.strerror}: "
                f"{e.filename or self.path}); choose a folder this user can write to"
            ) from None
        return self

    def _take(self, fd: int) -> None:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flock = True
            except BlockingIOError:
                raise self._refusal(self._holder(fd), stale_hint=False) from None
            except OSError as e:
                if e.errno not in _NO_FLOCK:
                    raise
                flock = False
        if fcntl is None or not flock:
            holder = self._holder(fd)
            pid, host = holder.get("pid"), holder.get("host")
            if host == socket.gethostname() and pid not in (None, os.getpid()) and pid_alive(pid):
                raise self._refusal(holder, stale_hint=True)
            if host not in (None, socket.gethostname()):
                rank_zero_warn(
                    f"{self.path} names a run on {host} (PID {pid}) that cannot be checked from "
                    "here (no file locks on this filesystem); taking it over"
                )
        if os.fstat(fd).st_ino != self._inode():
            os.close(fd)  # the previous holder removed the file as we opened it: open anew
            return
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%c")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self.fd = fd
        _held.add(fd)

    def _inode(self) -> int | None:
        try:
            return self.path.stat().st_ino
        except FileNotFoundError:
            return None

    def _holder(self, fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            return {}

    def _refusal(self, holder: dict, stale_hint: bool) -> UserError:
        who = f"PID {holder.get('pid', '?')} on {holder.get('host', '?')}"
        since = f", since {holder['since']}" if holder.get("since") else ""
        return UserError(
            f"another fit is running in {self.root} ({who}{since}); two runs in one folder "
            "would mix their checkpoints, config.yaml and W&B run. Wait for it to end or stop "
            "it, or give this run its own --trainer.default_root_dir"
            + (f". If that process is not a fit, delete {self.path}" if stale_hint else "")
        )

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.fstat(self.fd).st_ino == self._inode():
                self.path.unlink(missing_ok=True)  # while still locked: see _take's inode check
        finally:
            _held.discard(self.fd)
            os.close(self.fd)
            self.fd = None


def check_run_dir(root: str) -> None:
    """`trainer.default_root_dir` must be a folder this process can write, checked before the run
    writes anything there (lock, config.yaml, W&B files, checkpoints). A remote root (an fsspec
    URL) is the store's to check: Lightning writes there through fsspec."""
    if not is_local(root):
        return
    path = Path(root).expanduser()
    fix = "choose another --trainer.default_root_dir"
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(
            f"trainer.default_root_dir={root}: {existing} is a file, not a folder; {fix}"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"trainer.default_root_dir={root} is not writable ({e.strerror}: {e.filename}); {fix}"
        ) from e


def check_new_run_dir(root: str, ckpt_dir: str) -> None:
    """A fit that starts afresh where an earlier run left its checkpoints or config.yaml would
    overwrite them (`last.ckpt`, `config.yaml`): it must resume that run or use another folder.

    `--ckpt_path=last` that finds nothing to resume is not checked: a requeued job's first start.
    SLURM's `hpc_ckpt_*.ckpt` are left to Lightning, which resumes from them on its own there.
    """
    if not is_local(root) or any(Path(root).glob(HPC_CHECKPOINTS)):
        return
    earlier = sorted(Path(ckpt_dir).glob(f"*{ModelCheckpoint.FILE_EXTENSION}"))
    earlier += [p for p in [Path(root) / "config.yaml"] if p.is_file()]
    if earlier:
        listed = ", ".join(str(p) for p in earlier[:3]) + (" ..." if len(earlier) > 3 else "")
        raise ConfigError(
            f"trainer.default_root_dir={root} holds an earlier run ({listed}), which a new fit "
            "would overwrite. Resume it with --ckpt_path=last, or start the new run in another "
            "--trainer.default_root_dir (or move the old files away first)"
        )
