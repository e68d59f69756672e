"""The code's layout contracts: old config paths keep loading, augmentation choices come from one
table per dataset, private Lightning names stay in compat.py, and modules stay small."""

import importlib
import re
import typing
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from helpers import ROOT, SMOKE
from torchvision.transforms import v2

import vit_lightning
from vit_lightning import data
from vit_lightning.cli import ViTLightningCLI, main
from vit_lightning.data import augment
from vit_lightning.data.device_augment import POLICIES

PACKAGE = Path(vit_lightning.__file__).parent
TABLES = {
    "CIFAR10DataModule": data.CIFAR10DataModule,
    "FashionMNISTDataModule": data.FashionMNISTDataModule,
}

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


def _import(class_path: str) -> type:
    """What a config or checkpoint's `class_path` resolves to."""
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


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
    assert isinstance(dm, data.SyntheticDataModule) and dm.seed == 0 and dm.batch_size == 64
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
    assert isinstance(again.datamodule, data.SyntheticDataModule)
    assert again.trainer.callback_metrics["val/acc"] == pytest.approx(
        cli.trainer.callback_metrics["val/acc"].item()
    )


@pytest.mark.parametrize("name", list(TABLES))
def test_old_class_paths_with_every_argument_of_the_time_load(name, tmp_path):
    old = {"data_dir": str(tmp_path), "download": False, "val_size": 10, "split_seed": 0,
           "batch_size": 8, "num_workers": 0, "pin_memory": True, "persistent_workers": True,
           "predict_dir": None, "device_pipeline": False,
           "_class_path": f"vit_lightning.data.{name}",
           "_instantiator": "lightning.pytorch.cli.instantiate_module"}  # fmt: skip
    ckpt = {"pytorch-lightning_version": L.__version__, "datamodule_hyper_parameters": old}
    torch.save(ckpt, tmp_path / "dm.ckpt")
    dm = _import(old["_class_path"]).load_from_checkpoint(tmp_path / "dm.ckpt")
    assert type(dm) is TABLES[name] and dm.val_size == 10 and dm.batch_size == 8


@pytest.mark.parametrize("name", list(TABLES))
def test_augment_choices_help_and_errors_come_from_the_table(name):
    cls = TABLES[name]
    table = cls.AUGMENT
    hint = typing.get_type_hints(cls.__init__)["augment"]
    assert typing.get_args(hint) == tuple(table)  # the Literal the CLI validates and lists
    for policy in table.values():
        assert policy.help in cls.__doc__  # what --help prints under --data.augment
    with pytest.raises(ValueError, match=re.escape(f"augment must be {'/'.join(table)}")):
        cls(augment="no_such_policy")
    for name_, policy in table.items():  # each policy builds, and runs on the device pipeline
        transforms = policy.transforms()
        assert all(callable(t) for t in transforms)
        dm = cls(augment=name_, random_erasing=0.25, device_pipeline=True)
        pad, flip, recipe = dm.device_augment()
        assert (pad > 0, flip) == (
            any(isinstance(t, v2.RandomCrop) for t in transforms),
            any(isinstance(t, v2.RandomHorizontalFlip) for t in transforms),
        )
        assert (recipe.policy is None) == (not any(isinstance(t, POLICIES) for t in transforms))


def test_readme_policy_table_is_generated_from_the_tables():
    readme = (ROOT / "README.md").read_text()
    expected = augment.markdown({name: cls.AUGMENT for name, cls in TABLES.items()})
    assert expected in readme, f"README.md's augmentation table is stale; paste:\n{expected}"


PRIVATE = re.compile(
    r"trainer\._[a-z]|lightning[\w.]*\._[a-z]|_given_hyperparameters|_parse_ckpt_path"
    r"|_signal_connector|_accelerator_connector|batch_progress|overrides\.distributed"
)


def test_private_lightning_names_live_in_compat_only():
    users = sorted(
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if PRIVATE.search(p.read_text())
    )
    assert users == ["compat.py"], f"private Lightning names outside compat.py: {users}"


@pytest.mark.parametrize("args,expected", [([], 0), (["--seed_everything=5"], 5),
                                           (["--seed_everything=5", "--data.loader_seed=3"], 3)])  # fmt: skip
def test_the_run_seed_reaches_the_datamodule_as_an_argument(args, expected, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "99")  # no longer read: the seed is a config value
    cli = ViTLightningCLI(args=["--config", SMOKE, "--trainer.logger=false", *args], run=False)
    assert cli.datamodule.seed == expected == cli.datamodule.hparams.loader_seed
    assert data.SyntheticDataModule().seed == 0  # built by hand: 0 unless given
    assert data.SyntheticDataModule(loader_seed=4).seed == 4


def test_preemption_state_lives_on_the_callback():
    from vit_lightning.callbacks import preemption

    assert not [n for n in vars(preemption) if n.startswith("_preempted")]  # no module global
    assert preemption.Preemption().preempted_by is None


def test_swept_augment_values_are_policies_of_the_table():
    sweep = yaml.safe_load((ROOT / "configs" / "sweeps" / "cifar10.yaml").read_text())
    values = sweep["parameters"]["data.init_args.augment"]["values"]
    assert set(values) <= set(data.CIFAR10DataModule.AUGMENT), values


def test_the_readme_map_names_every_module():
    readme = (ROOT / "README.md").read_text()
    missing = [
        str(p.relative_to(ROOT))
        for p in sorted(PACKAGE.rglob("*.py"))
        if f"| `{p.relative_to(ROOT)}` |" not in readme
    ]
    assert not missing, f"add these to README.md's 'What is where': {missing}"
