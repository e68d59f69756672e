"""What a run writes, and what it leaves alone: a run never changes an earlier run's files (its
config.yaml, checkpoints, predictions, exports), whether it succeeds or fails; the run's own
config.yaml is accepted by every subcommand; every logger gets the same layout; a logger whose
package is missing and a W&B folder that cannot be written are one line each."""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import smoke_args
from lightning.pytorch.callbacks import Callback

from vit_lightning.cli import main
from vit_lightning.errors import UserError

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.logger=false"]
SMALL = ["--data.train_size=128", "--data.val_size=64", "--data.test_size=64"]


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root` (W&B's own folder aside) with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "wandb" not in p.relative_to(root).parts
    }


def _fails(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """Run the CLI in-process on arguments that must stop it: (exit code, stderr), no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    return exit_info.value.code, err


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch smoke fit monitoring val/loss (the issue's settings), logging to a CSVLogger
    and to W&B offline at once; tests only read it, or copy it."""
    root = tmp_path_factory.mktemp("fitted")
    loggers = root.parent / f"{root.name}-loggers.yaml"
    loggers.write_text(
        "trainer:\n  logger:\n"
        "    - class_path: lightning.pytorch.loggers.CSVLogger\n"
        f"      init_args: {{save_dir: {root}}}\n"
        "    - class_path: vit_lightning.run.wandb_logger.WandbLogger\n"
        "      init_args: {project: vit-lightning, offline: true}\n"
    )
    monitor = ["--checkpoint.monitor=val/loss", "--checkpoint.mode=min"]
    args = ["--config", str(loggers), "--trainer.enable_progress_bar=false", *SMALL, *monitor]
    main(smoke_args("fit", root, *args, "--trainer.max_epochs=1"))
    return root


# --- config.yaml: one place, written by a fit that has started, accepted by every subcommand ---


def test_config_yaml_is_in_the_run_folder_whatever_the_logger(fitted):
    saved = yaml.safe_load((fitted / "config.yaml").read_text())
    assert saved["checkpoint"]["monitor"] == "val/loss" and saved["trainer"]["max_epochs"] == 1
    assert list(fitted.rglob("config.yaml")) == [fitted / "config.yaml"]  # not in CSV's version_0
    # the settings as given: not this run's W&B id, nor the loader seed filled in from the seed
    wandb_args = saved["trainer"]["logger"][1]["init_args"]
    assert wandb_args["id"] is None and wandb_args["save_dir"] in (None, ".")
    assert saved["data"]["init_args"]["loader_seed"] is None
    assert (fitted / "wandb-run-id").read_text().strip()  # the id is kept there instead


def test_the_runs_config_is_accepted_by_every_subcommand_and_left_unchanged(fitted, tmp_path):
    config = ["--config", str(fitted / "config.yaml")]
    before = _files(fitted)
    main(["test", *config, "--ckpt_path=best", *QUIET])  # the case: it rewrote the file
    after = _files(fitted)
    results, fit_results = json.loads(after.pop("results.json")), before.pop("results.json")
    assert after == before  # config.yaml, checkpoints, metrics: as the fit left them
    assert results["fit"] == json.loads(fit_results)["fit"]  # the test adds only its own record
    assert 0.0 <= results["test"]["test/acc"] <= 1.0
    assert sorted(p.name for p in fitted.glob("config*")) == ["config.yaml"]
    for sub in ("fit", "validate", "test", "predict", "export"):
        with pytest.raises(SystemExit) as exit_info:  # parses it, then stops
            main([sub, *config, "--print_config"])
        assert exit_info.value.code in (0, None), sub
    # and the resume the settings-conflict error suggests, in a copy of the run
    run = tmp_path / "run"
    shutil.copytree(fitted, run, ignore=shutil.ignore_patterns("wandb"))
    args = ["--config", str(run / "config.yaml"), f"--trainer.default_root_dir={run}"]
    cli = main(["fit", *args, "--ckpt_path=last", "--trainer.max_epochs=2", *QUIET])
    assert cli.trainer.current_epoch == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_epochs"] == 2


def test_a_failed_start_leaves_the_runs_files_as_they_were(fitted, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fitted, run, ignore=shutil.ignore_patterns("wandb"))
    before = _files(run)
    # a resume whose checkpoint does not fit the data's class count: found once it loads
    args = smoke_args("fit", run, *QUIET, *SMALL, "--ckpt_path=last", "--data.num_classes=7")
    code, err = _fails(capsys, *args)
    assert code == 2 and "does not fit the configured model" in err
    assert _files(run) == before
    # a fresh run whose pretrained weights do not fit: no config.yaml, no W&B run id
    fresh = tmp_path / "fresh"
    weights = tmp_path / "other.pth"
    torch.save({"blocks.0.norm1.weight": torch.ones(3)}, weights)
    args = smoke_args("fit", fresh, *SMALL, "--trainer.enable_progress_bar=false")
    code, err = _fails(capsys, *args, f"--model.pretrained={weights}")
    assert code == 2 and str(weights) in err  # a file a setting names: a setting
    assert not (fresh / "config.yaml").exists() and not (fresh / "wandb-run-id").exists()


def test_a_fresh_fit_never_overwrites_an_earlier_run(fitted, capsys):
    before = _files(fitted)
    code, err = _fails(capsys, *smoke_args("fit", fitted, *QUIET, *SMALL))  # no --ckpt_path
    assert code == 2 and f"trainer.default_root_dir={fitted} holds an earlier run" in err
    assert str(fitted / "config.yaml") in err and "--ckpt_path=last" in err
    assert _files(fitted) == before


# --- predictions and exports: complete or absent, never over an earlier file ---


class FailAtPredictBatch(Callback):
    """Stops predict with an error at batch `batch`, after earlier batches wrote their rows."""

    def __init__(self, batch: int = 2) -> None:
        self.batch = batch

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        if batch_idx == self.batch:
            raise UserError(f"stopped at predict batch {batch_idx}")


def test_predict_never_replaces_an_earlier_csv_and_a_failed_one_leaves_none(
    fitted, tmp_path, capsys
):
    out = tmp_path / "preds.csv"
    last = f"--ckpt_path={fitted / 'checkpoints' / 'last.ckpt'}"
    predict = smoke_args("predict", tmp_path / "run", last, *SMALL, *QUIET, "--data.batch_size=16")
    predict += [f"--prediction_writer.output_file={out}"]
    fail = [f"--trainer.callbacks+={__name__}.FailAtPredictBatch"]
    code, err = _fails(capsys, *predict, *fail)
    assert code == 1 and "stopped at predict batch 2" in err
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no half-written CSV, no temp file
    out.write_text("an earlier predict's rows\n")
    code, err = _fails(capsys, *predict)
    assert code == 1 and f"Prediction file {out} exists" in err
    assert "--prediction_writer.output_file" in err
    assert out.read_text() == "an earlier predict's rows\n"


def test_export_never_replaces_an_earlier_file(fitted, tmp_path, capsys):
    out = tmp_path / "model.pt2"
    out.write_bytes(b"an earlier export")
    last = f"--ckpt_path={fitted / 'checkpoints' / 'last.ckpt'}"
    args = smoke_args("export", tmp_path, last, "--format=torch.export", f"--output={out}")
    code, err = _fails(capsys, *args)
    assert code == 2 and f"--output={out} exists" in err
    assert out.read_bytes() == b"an earlier export"


# --- loggers and W&B: a missing package or an unwritable folder is one line ---


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")),
    reason="needs a machine without tensorboard and tensorboardX",
)
def test_a_logger_whose_package_is_missing_is_named_with_the_install_command(tmp_path, capsys):
    extra = tmp_path / "loggers.yaml"
    extra.write_text(
        "trainer:\n  logger:\n    - class_path: CSVLogger\n      init_args: {save_dir: .}\n"
        "    - class_path: lightning.pytorch.loggers.TensorBoardLogger\n"
    )
    for how in ("--trainer.logger=TensorBoardLogger", f"--config={extra}"):
        code, err = _fails(capsys, *smoke_args("fit", tmp_path / "run", how))
        lines = [x for x in err.splitlines() if x.strip()]
        assert code == 2 and len(lines) == 1, err
        assert "TensorBoardLogger needs tensorboard (or tensorboardX)" in lines[0]
        assert "pip install tensorboard" in lines[0]
    # a logger class from a package that is not installed at all
    code, err = _fails(capsys, *smoke_args("fit", tmp_path, "--trainer.logger=no_such_pkg.Logger"))
    assert code == 2 and "needs no_such_pkg, which is not installed: pip install no_such_pkg" in err


def _unwritable_folder(path: Path) -> None:
    """A folder nobody may write in: root ignores permission bits, but not sysfs's refusal."""
    if os.geteuid() == 0:
        path.symlink_to("/sys/kernel")
    else:
        path.mkdir()
        path.chmod(0o555)


@pytest.mark.parametrize("subcommand", ["fit", "test"])  # the check is the same for every one
def test_a_wandb_folder_that_cannot_be_written_is_one_line(subcommand, fitted, tmp_path, capsys):
    root = tmp_path / "run"
    root.mkdir()
    _unwritable_folder(root / "wandb")
    ckpt = [] if subcommand == "fit" else [f"--ckpt_path={fitted / 'checkpoints' / 'last.ckpt'}"]
    # the smoke config's offline W&B logger
    code, err = _fails(capsys, *smoke_args(subcommand, root, *SMALL, *ckpt))
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert f"W&B cannot write its files in {root / 'wandb'}" in lines[0]
    assert "--trainer.logger.init_args.save_dir" in lines[0]
    # `wandb` a file, not a folder
    (root / "wandb").unlink()
    (root / "wandb").write_text("not a folder")
    code, err = _fails(capsys, *smoke_args(subcommand, root, *SMALL, *ckpt))
    assert code == 2 and f"{root / 'wandb'} is not a folder" in err
