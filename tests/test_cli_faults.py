"""The CLI and the run as a whole under wrong input: nothing evaluated without weights, a
checkpoint that contradicts the command line, two fits in one folder, a fit with no step, and
startup errors that name the file or key. Exit 2 for configuration, 1 for runtime."""

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, smoke_args
from helpers.cli import cli_command, cli_env

from vit_lightning.cli import main
from vit_lightning.errors import UserError
from vit_lightning.run import run_dir

QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
SMALL = ["--data.train_size=128", "--data.val_size=64", "--data.test_size=64"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 1-epoch smoke fit (depth 2, lr 1e-3, 10 classes); tests copy it or only read it."""
    root = tmp_path_factory.mktemp("trained")
    main(smoke_args("fit", root, *QUIET, *SMALL, "--trainer.max_epochs=1"))
    return root


def _fails(capsys, *args: str) -> tuple[int, str]:
    """Run the CLI in-process on arguments that must stop it; (exit code, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return exit_info.value.code, err


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


# --- evaluation and predict need weights ---


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluating_with_no_checkpoint_to_load_is_an_error(subcommand, tmp_path, trained, capsys):
    out = f"--prediction_writer.output_file={tmp_path / 'preds.csv'}"
    code, err = _fails(capsys, *smoke_args(subcommand, tmp_path, "--ckpt_path=last", *QUIET, out))
    assert code == 2 and str(tmp_path / "checkpoints") in err and "--ckpt_path=none" in err
    assert not (tmp_path / "preds.csv").exists()
    # without --ckpt_path, in a folder that has one: says how to use it
    code, err = _fails(capsys, *smoke_args(subcommand, trained, *QUIET, out))
    assert code == 2 and str(trained / "checkpoints" / "last.ckpt") in err
    assert "--ckpt_path=last" in err and "--ckpt_path=none" in err


def test_untrained_weights_on_purpose_with_ckpt_path_none(tmp_path):
    cli = main(smoke_args("validate", tmp_path, "--ckpt_path=none", *QUIET, *SMALL))
    assert 0.0 <= cli.trainer.callback_metrics["val/acc"] <= 0.3  # chance level: 10 classes


# --- the checkpoint's settings against the user's ---


@pytest.mark.parametrize("named", [False, True], ids=["explicit_file", "last"])
def test_checkpoint_settings_that_contradict_the_users_are_named(named, trained, tmp_path, capsys):
    root = tmp_path / "run"
    shutil.copytree(trained, root)
    ckpt = root / "checkpoints" / "last.ckpt"
    before = _files(root)
    override = tmp_path / "override.yaml"
    override.write_text("model:\n  weight_decay: 0.1\n")
    args = smoke_args("fit", root, "--config", str(override), *QUIET, *SMALL)
    args += ["--model.net.init_args.depth=3", "--model.lr=5e-4"]
    code, err = _fails(capsys, *args, f"--ckpt_path={'last' if named else ckpt}")
    assert code == 2
    assert "model.net.init_args.depth: checkpoint 2, command line 3" in err
    assert "model.lr: checkpoint 0.001, command line 0.0005" in err
    assert f"model.weight_decay: checkpoint 0.05, {override} 0.1" in err
    assert "model.net.init_args.embed_dim" not in err  # the same in both: not a conflict
    assert "Leave these out" in err and str(root / "config.yaml") in err
    assert _files(root) == before  # nothing trained, nothing rewritten


def test_model_compile_is_the_users_not_the_checkpoints(trained, tmp_path):
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)
    ckpt["hyper_parameters"]["compile"] = True  # trained compiled, e.g. on a GPU
    path = tmp_path / "compiled.ckpt"
    torch.save(ckpt, path)
    args = smoke_args("validate", tmp_path, f"--ckpt_path={path}", *QUIET, *SMALL)
    cli = main([*args, "--model.compile=false"])  # how it runs, not what it is: no conflict
    assert cli.model.hparams.compile is False
    assert torch.equal(cli.model.net.head.weight, ckpt["state_dict"]["net.head.weight"])


# --- one fit per folder ---


HOLD_LOCK = """
import sys, time
from vit_lightning.run.run_dir import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_held_folder_refuses_a_second_fit_and_a_killed_holder_does_not_block(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        args = smoke_args("fit", tmp_path, *QUIET, *SMALL, "--trainer.max_epochs=1")
        code, err = _fails(capsys, *args)
        assert code == 1 and f"another fit is running in {tmp_path} (PID {holder.pid} " in err
        assert sorted(p.name for p in tmp_path.iterdir()) == [run_dir.LOCK_FILE]  # untouched
    finally:
        holder.kill()  # SIGKILL: its lock file stays behind, naming a dead process
        holder.wait()
    cli = main([*args, "--ckpt_path=last"])
    assert cli.trainer.current_epoch == 1
    assert not (tmp_path / run_dir.LOCK_FILE).exists()  # released at the end of the fit


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.slow
def test_two_real_fits_in_one_folder_and_a_resume_after_kill_9(tmp_path, run_cli):
    args = smoke_args("fit", tmp_path, *QUIET, *SMALL)
    first = subprocess.Popen(
        cli_command(*args, "--trainer.max_epochs=1000"),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(tmp_path / run_dir.LOCK_FILE, first)
        second = run_cli(*args, "--trainer.max_epochs=1")
        assert second.returncode == 1, second.stderr[-2000:]
        assert f"another fit is running in {tmp_path} (PID {first.pid} " in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)  # no cleanup at all: the lock file stays behind
        first.communicate()
    assert (tmp_path / run_dir.LOCK_FILE).exists()
    last = tmp_path / "checkpoints" / "last.ckpt"
    epochs = torch.load(last, weights_only=False)["epoch"] + 2 if last.exists() else 1
    resumed = run_cli(*args, f"--trainer.max_epochs={epochs}", "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (tmp_path / run_dir.LOCK_FILE).exists()  # released at the end


def test_without_file_locks_a_live_pid_holds_the_folder_and_a_dead_one_does_not(
    tmp_path, monkeypatch
):
    def no_flock(fd, op):  # e.g. Lustre mounted without flock
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_dir.fcntl, "flock", no_flock)
    path, host = tmp_path / run_dir.LOCK_FILE, socket.gethostname()
    path.write_text(f'{{"pid": {os.getppid()}, "host": "{host}"}}')  # alive, on this host
    with pytest.raises(UserError, match=f"PID {os.getppid()} on {host}.*delete {path}"):
        run_dir.RunLock(tmp_path).acquire()
    dead = subprocess.Popen(["true"])
    dead.wait()
    path.write_text(f'{{"pid": {dead.pid}, "host": "{host}"}}')
    lock = run_dir.RunLock(tmp_path).acquire()  # a killed run's lock: taken over
    assert f'"pid": {os.getpid()}' in path.read_text()
    lock.release()
    assert not path.exists()


# --- a fit with no training step ---


def test_a_batch_larger_than_the_training_set_fails_at_startup_naming_both(tmp_path, capsys):
    data = ["--data.train_size=40", "--data.val_size=16", "--data.batch_size=64"]
    # the smoke config's offline W&B logger stays on: no run id may be saved for this
    code, err = _fails(
        capsys, *smoke_args("fit", tmp_path, "--trainer.enable_progress_bar=false", *data)
    )
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert code == 2 and "data.batch_size=64" in line and "40 images" in line
    assert "at most 40" in line
    for name in ("checkpoints", "config.yaml", "wandb-run-id"):
        assert not (tmp_path / name).exists(), name


def test_a_missing_data_set_leaves_no_run_files(tmp_path, capsys):
    config = str(ROOT / "configs" / "cifar10.yaml")
    data = [f"--data.data_dir={tmp_path / 'data'}", "--data.download=false"]
    root = tmp_path / "run"
    args = ["fit", "--config", config, *data, f"--trainer.default_root_dir={root}"]
    code, err = _fails(capsys, *args, "--trainer.logger.init_args.offline=true")
    assert code == 1 and "cifar-10-python.tar.gz" in err
    for name in ("config.yaml", "wandb", "wandb-run-id", "checkpoints"):
        assert not (root / name).exists(), name


# --- startup errors ---


def test_a_yaml_syntax_error_and_an_empty_config_are_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  lr: [0.1, 0.2\n  weight_decay: 0.1\n")
    code, err = _fails(capsys, *smoke_args("fit", tmp_path, "--config", str(bad)))
    assert code == 2 and f"config file {bad} is not valid YAML (line " in err
    for text in ("", "# nothing but a comment\n"):
        empty = tmp_path / "empty.yaml"
        empty.write_text(text)
        code, err = _fails(capsys, *smoke_args("fit", tmp_path, f"--config={empty}"))
        assert code == 2 and f"config file {empty} is empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "empty.yaml"]


def test_a_ckpt_path_that_is_a_folder_or_missing_is_named(trained, tmp_path, capsys):
    folder = trained / "checkpoints"
    code, err = _fails(capsys, *smoke_args("test", tmp_path, f"--ckpt_path={folder}", *QUIET))
    assert code == 2 and f"--ckpt_path={folder} is a folder" in err and "last.ckpt" in err
    assert "corrupt" not in err
    missing = trained / "checkpoints" / "lats.ckpt"
    code, err = _fails(capsys, *smoke_args("fit", tmp_path, f"--ckpt_path={missing}", *QUIET))
    assert code == 2 and f"--ckpt_path={missing}: no such file" in err


@pytest.mark.parametrize(
    "edit,named",
    [
        (lambda c: c.pop("pytorch-lightning_version"), "pytorch-lightning_version=None"),
        (lambda c: c.update({"pytorch-lightning_version": "v-next"}), "'v-next'"),
        (lambda c: c.pop("state_dict"), "no 'state_dict'"),
    ],
    ids=["no_version", "unknown_version", "not_lightning"],
)
def test_a_checkpoint_lightning_cannot_read_is_named(trained, tmp_path, capsys, edit, named):
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)
    edit(ckpt)
    path = tmp_path / "odd.ckpt"
    torch.save(ckpt, path)
    code, err = _fails(capsys, *smoke_args("validate", tmp_path, f"--ckpt_path={path}", *QUIET))
    assert code == 2 and str(path) in err and named in err


def test_a_checkpoint_of_another_class_count_or_architecture_is_named(trained, tmp_path, capsys):
    last = trained / "checkpoints" / "last.ckpt"
    args = smoke_args("validate", tmp_path, f"--ckpt_path={last}", *QUIET, *SMALL)
    code, err = _fails(capsys, *args, "--data.num_classes=7")
    assert code == 2 and "net.head.weight: checkpoint (10, 64), model (7, 64)" in err
    assert str(last) in err and "data.num_classes" in err
    # a checkpoint without hyperparameters (a net built in Python) of another depth
    ckpt = torch.load(last, weights_only=False)
    del ckpt["hyper_parameters"]
    bare = tmp_path / "bare.ckpt"
    torch.save(ckpt, bare)
    args = smoke_args("validate", tmp_path, f"--ckpt_path={bare}", *QUIET, *SMALL)
    code, err = _fails(capsys, *args, "--model.net.init_args.depth=3")
    assert code == 2 and "missing in the checkpoint: net.blocks.2." in err


def test_bad_betas_fail_before_any_run_files_exist(tmp_path, run_cli):
    proc = run_cli(*smoke_args("fit", tmp_path, "--model.betas=[0.9, 1.5]"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model.betas=[0.9, 1.5] must be two numbers in [0, 1)" in proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("config.yaml", "wandb", "wandb-run-id", "checkpoints", run_dir.LOCK_FILE):
        assert not (tmp_path / name).exists(), name


@pytest.mark.parametrize("where", ["a-file", "under-a-file", "not-writable"])
def test_a_run_folder_that_cannot_be_written_is_named_before_anything_runs(tmp_path, capsys, where):
    (tmp_path / "f").write_text("a file, not a folder")
    root = {"a-file": tmp_path / "f", "under-a-file": tmp_path / "f" / "run",
            "not-writable": Path("/sys/vit-lightning-run")}[where]  # fmt: skip
    # /sys refuses new entries even to root, who ignores permission bits
    code, err = _fails(capsys, *smoke_args("fit", root, *QUIET, *SMALL))
    assert code == 2 and f"trainer.default_root_dir={root}" in err, err
    assert "--trainer.default_root_dir" in err and "Traceback" not in err
    assert (tmp_path / "f").read_text() == "a file, not a folder"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_accelerator_gpu_without_a_gpu_is_one_line(tmp_path, capsys):
    code, err = _fails(capsys, *smoke_args("fit", tmp_path, "--trainer.accelerator=gpu", *QUIET))
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and "trainer.accelerator=gpu" in lines[0]
    assert "--trainer.accelerator=cpu" in lines[0]


@pytest.mark.parametrize(
    "override,line",
    [
        ("--data.batch_size=-4", "SyntheticDataModule: batch_size=-4 must be >= 1"),
        ("--data.in_chans=2", "SyntheticDataModule: in_chans must be 1 or 3, got 2"),
        ("--model.net.init_args.num_heads=5", "VisionTransformer: embed_dim=64 must be divisible"),
    ],
)
def test_a_constructor_error_is_one_line_naming_the_class(tmp_path, capsys, override, line):
    code, err = _fails(capsys, *smoke_args("fit", tmp_path, *QUIET, override))
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 2 and len(errors) == 1 and line in errors[0], err
    assert "Given value" not in err and "Union subtypes" not in err
