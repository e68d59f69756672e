"""Class paths that configs and checkpoints in the wild name keep working after the package was
grouped into rooms (issue 22): a run written by the code before that change validates through
today's CLI with the metrics it had, and each kept path resolves to today's class."""

import importlib
import json
import shutil

import lightning as L
import pytest
import torch
from helpers import SMOKE, TESTS

import vit_lightning.callbacks
import vit_lightning.data
from vit_lightning.cli import main
from vit_lightning.models import VisionTransformer, VisionTransformerDistilled, teachers
from vit_lightning.run.wandb_logger import WandbLogger

PRE22 = TESTS / "data" / "pre22"  # written at commit c966c41; see its README.md


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_a_run_written_before_the_restructure_validates_with_its_own_metrics(tmp_path):
    for name in ("config.yaml", "last.ckpt"):
        shutil.copy(PRE22 / name, tmp_path / name)
    ckpt = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert (
        ckpt["hyper_parameters"]["net"]["class_path"] == "vit_lightning.VisionTransformerDistilled"
    )
    assert ckpt["hyper_parameters"]["teacher"]["class_path"] == "vit_lightning.teachers.ConvNet"
    assert "vit_lightning.wandb_runs.WandbLogger" in (tmp_path / "config.yaml").read_text()

    cli = main(
        [
            "validate",
            "--config",
            str(tmp_path / "config.yaml"),
            f"--ckpt_path={tmp_path / 'last.ckpt'}",
            f"--trainer.default_root_dir={tmp_path / 'now'}",
        ]
    )
    assert type(cli.model.net) is VisionTransformerDistilled
    assert type(cli.model.teacher) is teachers.ConvNet
    assert type(cli.datamodule) is vit_lightning.data.SyntheticDataModule
    assert [type(lg) for lg in cli.trainer.loggers] == [WandbLogger]
    expected = json.loads((PRE22 / "expected.json").read_text())  # what the old code reported
    metrics = {k: cli.trainer.callback_metrics[k].item() for k in expected}
    assert metrics == pytest.approx(expected, abs=1e-6)


KEPT = {
    "vit_lightning.VisionTransformer": VisionTransformer,
    "vit_lightning.VisionTransformerDistilled": VisionTransformerDistilled,
    "vit_lightning.teachers.ResNet": teachers.ResNet,
    "vit_lightning.teachers.ConvNet": teachers.ConvNet,
    "vit_lightning.wandb_runs.WandbLogger": WandbLogger,
    **{
        f"vit_lightning.data.{n}": getattr(vit_lightning.data, n)
        for n in vit_lightning.data.__all__
    },
    **{
        f"vit_lightning.callbacks.{n}": getattr(vit_lightning.callbacks, n)
        for n in vit_lightning.callbacks.__all__
    },
}


@pytest.mark.parametrize("path", list(KEPT))
def test_a_kept_class_path_resolves_to_todays_class(path):
    assert _import(path) is KEPT[path]


# What the code before the data package split wrote into a checkpoint for the smoke config's data:
# the DataModule by its `vit_lightning.data.X` path, every argument of the time, no loader_seed.
OLD_SYNTHETIC_HPARAMS = {
    "num_classes": 10,
    "img_size": 32,
    "in_chans": 3,
    "train_size": 1024,
    "val_size": 256,
    "test_size": 256,
    "noise": 0.5,
    "seed": 0,
    "batch_size": 64,
    "num_workers": 0,
    "pin_memory": True,
    "persistent_workers": True,
    "predict_dir": None,
    "_class_path": "vit_lightning.data.SyntheticDataModule",
    "_instantiator": "lightning.pytorch.cli.instantiate_module",
}


def test_a_checkpoint_naming_the_old_data_path_loads(tmp_path):
    cli = main(
        [
            "fit",
            "--config",
            SMOKE,
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
            "--trainer.max_epochs=1",
            "--data.train_size=128",
        ]
    )
    path = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, weights_only=False)
    assert (
        ckpt["datamodule_hyper_parameters"]["_class_path"] == OLD_SYNTHETIC_HPARAMS["_class_path"]
    )
    ckpt["datamodule_hyper_parameters"] = dict(OLD_SYNTHETIC_HPARAMS)
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)

    dm = _import(OLD_SYNTHETIC_HPARAMS["_class_path"]).load_from_checkpoint(old)
    assert (
        isinstance(dm, vit_lightning.data.SyntheticDataModule)
        and dm.seed == 0
        and dm.batch_size == 64
    )
    # and through the CLI, which reads the checkpoint's hyperparameters into the config
    again = main(
        [
            "validate",
            "--config",
            SMOKE,
            f"--trainer.default_root_dir={tmp_path}",
            f"--ckpt_path={old}",
            "--trainer.logger=false",
        ]
    )
    assert isinstance(again.datamodule, vit_lightning.data.SyntheticDataModule)
    assert again.trainer.callback_metrics["val/acc"] == pytest.approx(
        cli.trainer.callback_metrics["val/acc"].item()
    )


@pytest.mark.parametrize("name", ["CIFAR10DataModule", "FashionMNISTDataModule"])
def test_old_class_paths_with_every_argument_of_the_time_load(name, tmp_path):
    old = {"data_dir": str(tmp_path), "download": False, "val_size": 10, "split_seed": 0,
           "batch_size": 8, "num_workers": 0, "pin_memory": True, "persistent_workers": True,
           "predict_dir": None, "device_pipeline": False,
           "_class_path": f"vit_lightning.data.{name}",
           "_instantiator": "lightning.pytorch.cli.instantiate_module"}  # fmt: skip
    ckpt = {"pytorch-lightning_version": L.__version__, "datamodule_hyper_parameters": old}
    torch.save(ckpt, tmp_path / "dm.ckpt")
    dm = _import(old["_class_path"]).load_from_checkpoint(tmp_path / "dm.ckpt")
    assert (
        type(dm) is getattr(vit_lightning.data, name) and dm.val_size == 10 and dm.batch_size == 8
    )
