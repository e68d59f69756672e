"""Signals and checkpoint files: every signal stops a run with 128 + signal, only `fit` writes
checkpoints, a save is complete or absent (a kill -9, a full disk, a remote path), and DDP stops on
every rank."""

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
import torch
from helpers import smoke_args
from helpers.cli import cli_command, cli_env, group_gone
from helpers.signal_at import signal_at
from helpers.trainer import quiet_trainer
from lightning.pytorch.callbacks import Callback

from vit_lightning.callbacks import LastCheckpoint
from vit_lightning.cli import main
from vit_lightning.run.checkpoints import AtomicCheckpointIO

QUICK = ("--trainer.max_epochs=1", "--data.train_size=128", "--trainer.logger=false")


class SignalAtEvalBatch(Callback):
    """Sends `sig` to this process at the start of validation/test/predict batch `batch`."""

    def __init__(self, batch: int = 1, sig: str = "SIGTERM") -> None:
        self.batch, self.sig, self.sent = batch, sig, False

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == self.batch and not self.sent:
            self.sent = True
            os.kill(os.getpid(), getattr(signal, self.sig))

    on_validation_batch_start = on_predict_batch_start = on_test_batch_start


def _exit_code(args: list[str]) -> int | str | None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder after one short `fit`: checkpoints/last.ckpt and a best checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    main(smoke_args("fit", root, *QUICK))
    return root


@pytest.fixture
def run_dir(trained: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize(
    "subcommand,sig",
    [("validate", "SIGTERM"), ("test", "SIGTERM"), ("predict", "SIGTERM"), ("test", "SIGINT")],
)
def test_a_signal_during_evaluation_stops_it_and_leaves_the_checkpoints_untouched(
    run_dir, subcommand, sig
):
    before = _files(run_dir / "checkpoints")
    stop = [
        "--trainer.callbacks+=test_signals.SignalAtEvalBatch",
        f"--trainer.callbacks.sig={sig}",
    ]
    code = _exit_code(smoke_args(subcommand, run_dir, "--ckpt_path=last", *QUICK[1:], *stop))
    assert code == 128 + getattr(signal, sig)
    assert _files(run_dir / "checkpoints") == before  # same names, same bytes
    # Lightning put back the handlers it found: Ctrl-C in this process raises again
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigint_saves_after_the_current_batch_and_exits_130(tmp_path, run_cli):
    proc = run_cli(*smoke_args("fit", tmp_path, *QUICK, *signal_at(0, "SIGINT")))
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "SIGINT received" in proc.stderr and "--ckpt_path=last" in proc.stderr
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 1  # the batch in flight finished, then saved
    assert saved["optimizer_states"]


_KILLED_MID_SAVE = """
import os, signal, sys, torch
from vit_lightning.callbacks import LastCheckpoint
from vit_lightning.run.checkpoints import AtomicCheckpointIO

def dies_halfway(obj, f):
    f.write(b"PK half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = dies_halfway
AtomicCheckpointIO().save_checkpoint({"step": 2}, sys.argv[1])
"""


def test_a_kill_during_a_save_leaves_no_temp_file_after_the_next_save_or_fit(tmp_path):
    io, last = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, last)
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_SAVE, str(last)], env=cli_env())
    assert killed.returncode == -signal.SIGKILL
    (stale,) = tmp_path.glob(".last.ckpt.tmp*")  # what the killed save left
    assert io.load_checkpoint(last) == {"step": 1}  # the previous checkpoint is intact
    # a save in progress in a live process (this one) keeps its temp file
    live = tmp_path / f".best.ckpt.tmp{os.getpid()}@{socket.gethostname()}"
    live.write_bytes(b"in progress")

    io.save_checkpoint({"step": 3}, last)
    assert not stale.exists() and live.exists()
    assert io.load_checkpoint(last) == {"step": 3}

    # a fit clears them from its checkpoint folder before its first save
    other = tmp_path / "other"
    other.mkdir()
    (other / stale.name).write_bytes(b"PK half")
    (other / live.name).write_bytes(b"in progress")
    LastCheckpoint(dirpath=str(other)).setup(quiet_trainer(), None, "fit")
    assert [p.name for p in other.iterdir()] == [live.name]


def test_atomic_checkpoint_io_writes_fsspec_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a URL taken for a local path would appear here as ./memory:
    io, url = AtomicCheckpointIO(), "memory://bucket/run/checkpoints/last.ckpt"
    io.save_checkpoint({"step": 7, "w": torch.ones(3)}, url)
    assert fsspec.filesystem("memory").exists("/bucket/run/checkpoints/last.ckpt")
    loaded = io.load_checkpoint(url)
    assert loaded["step"] == 7 and torch.equal(loaded["w"], torch.ones(3))
    io.remove_checkpoint(url)
    assert not fsspec.filesystem("memory").exists("/bucket/run/checkpoints/last.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_names_the_checkpoint_and_keeps_the_previous_one(run_dir, capsys, monkeypatch):
    before = _files(run_dir / "checkpoints")

    def disk_full(obj, f):
        f.write(b"PK partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    args = smoke_args("fit", run_dir, "--ckpt_path=last", *QUICK[1:], "--trainer.max_epochs=2")
    assert _exit_code(args) == 1
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "No space left on device" in line and f"{run_dir / 'checkpoints'}{os.sep}" in line
    assert "Traceback" not in err
    assert _files(run_dir / "checkpoints") == before  # no temp file, nothing replaced


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal"
    time.sleep(0.3)  # somewhere in a later batch


def _sigterm_from_outside(root: Path, args: list[str], to_group: bool) -> str:
    """Starts `fit` in its own session, sends SIGTERM once it has saved, to the main process or
    to every process of the group (what a scheduler does); asserts that all of them end with 143
    within seconds. Returns stderr."""
    every = "--last_checkpoint.every_n_train_steps=1"
    proc = subprocess.Popen(
        cli_command(*smoke_args("fit", root, *args, every, "--trainer.enable_progress_bar=false")),
        env=cli_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(root / "checkpoints" / "last.ckpt", proc)
        if to_group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err[-3000:]
        assert group_gone(proc.pid, timeout=10), "a rank or a loader worker outlived the run"
    finally:
        if not group_gone(proc.pid, 0):
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in err
    return err


def _assert_loadable(root: Path) -> None:
    saved = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] > 0 and saved["optimizer_states"]


def test_sigterm_to_the_process_group_with_loader_workers_saves_and_exits_143(tmp_path):
    # the workers get the signal too; dying of it would make the main process raise mid-batch
    args = ["--trainer.logger=false", "--trainer.max_epochs=3", "--data.num_workers=2"]
    err = _sigterm_from_outside(tmp_path, args, to_group=True)
    assert "SIGTERM received: saved" in err
    _assert_loadable(tmp_path)


DDP = ("--trainer.strategy=ddp", "--trainer.devices=2")


@pytest.mark.slow
@pytest.mark.parametrize("to_group", [False, True], ids=["main process", "process group"])
def test_sigterm_under_ddp_stops_every_rank_with_143(tmp_path, to_group):
    """Lightning starts rank 1; the signal goes to rank 0 alone, or to every process (both ranks
    and their loader workers) as a scheduler does."""
    args = ["--trainer.logger=false", "--trainer.max_epochs=3", *DDP]
    _sigterm_from_outside(tmp_path, [*args, f"--data.num_workers={int(to_group)}"], to_group)
    _assert_loadable(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("ddp", [False, True], ids=["one process", "ddp"])
def test_a_signal_in_the_final_validation_exits_143_with_the_finished_checkpoint(
    tmp_path, run_cli, ddp
):
    """After the last training batch there is nothing left to save: the validation runs to its
    end and the run ends as it would have, on every rank, but with the signal's exit status."""
    stop = ["--trainer.callbacks+=helpers.signal_at.SignalInFinalValidation"]
    args = smoke_args("fit", tmp_path, *QUICK, *stop, *(DDP if ddp else ()))
    proc = run_cli(*args, "--trainer.enable_progress_bar=false", timeout=120)
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "SIGTERM received after the last training batch" in proc.stderr
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    progress = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert saved["epoch"] == 0 and progress["is_last_batch"] and saved["optimizer_states"]


@pytest.mark.slow
def test_sigterm_to_one_externally_launched_ddp_rank_stops_both_with_143(tmp_path):
    """torchrun/SLURM style: the ranks are separate processes; only rank 0 gets the signal."""
    every = "--last_checkpoint.every_n_train_steps=1"
    ranks = _external_ddp(tmp_path, "--trainer.logger=false", "--trainer.max_epochs=3", every)
    try:
        _wait_for(tmp_path / "checkpoints" / "last.ckpt", ranks[0])
        ranks[0].terminate()
        errs = [p.communicate(timeout=30)[1] for p in ranks]
        assert [p.returncode for p in ranks] == [143, 143], errs[0][-2000:] + errs[1][-2000:]
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    _assert_loadable(tmp_path)


def _external_ddp(root: Path, *args: str) -> list[subprocess.Popen]:
    """Two ranks started as separate processes (torchrun/srun style), stderr piped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
        "NODE_RANK": "0",
    }
    return [
        subprocess.Popen(
            cli_command(*smoke_args("fit", root, *DDP, *args)),
            env=cli_env({**env, "RANK": str(r), "LOCAL_RANK": str(r)}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]


@pytest.mark.slow
def test_a_full_disk_under_externally_launched_ddp_stops_every_rank_at_once(tmp_path):
    """Rank 0's save fails; rank 1 used to wait in the save's barrier until the process group's
    30-minute timeout."""
    args = [
        "--trainer.logger=false",
        "--trainer.max_epochs=3",
        "--last_checkpoint.every_n_train_steps=1",
        "--trainer.callbacks+=helpers.disk_full.DiskFullAt",
        "--trainer.enable_progress_bar=false",
    ]
    ranks = _external_ddp(tmp_path, *args)
    try:
        errs = [p.communicate(timeout=60)[1] for p in ranks]
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in ranks] == [1, 1], errs[0][-2000:] + errs[1][-2000:]
    assert "error: No space left on device: could not write checkpoint" in errs[0]
    assert "rank 0 could not write it" in errs[1]
    assert not any("Traceback" in e for e in errs)
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 2  # the last save that had room, intact


_WITHOUT_SIGWAITINFO = (
    "import signal; del signal.sigwaitinfo; from vit_lightning.cli import main; main()"
)


def test_sigterm_to_the_process_group_without_sigwaitinfo_saves_and_exits_143(
    tmp_path, monkeypatch
):
    """macOS has no `signal.sigwaitinfo`: the loader workers (forked, so they lack it too) cannot
    tell who sent a SIGTERM, and must not die of the scheduler's."""
    command = lambda *args: [sys.executable, "-c", _WITHOUT_SIGWAITINFO, *args]  # noqa: E731
    monkeypatch.setitem(globals(), "cli_command", command)  # what _sigterm_from_outside starts
    args = ["--trainer.logger=false", "--trainer.max_epochs=3", "--data.num_workers=2"]
    err = _sigterm_from_outside(tmp_path, args, to_group=True)
    assert "SIGTERM received: saved" in err
    _assert_loadable(tmp_path)
