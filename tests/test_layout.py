"""The code's layout contracts: augmentation choices come from one table per dataset, private
Lightning names stay in compat.py, and the run seed reaches the DataModule as an argument.
(Old class paths: tests/test_old_paths.py; import layers: tests/test_layers.py.)"""

import re
import typing
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, SMOKE
from torchvision.transforms import v2

import vit_lightning
from vit_lightning import data
from vit_lightning.cli import ViTLightningCLI
from vit_lightning.data import augment
from vit_lightning.data.device_augment import POLICIES
from vit_lightning.errors import ConfigError

PACKAGE = Path(vit_lightning.__file__).parent
TABLES = {
    "CIFAR10DataModule": data.CIFAR10DataModule,
    "FashionMNISTDataModule": data.FashionMNISTDataModule,
}


@pytest.mark.parametrize("name", list(TABLES))
def test_augment_choices_help_and_errors_come_from_the_table(name):
    cls = TABLES[name]
    table = cls.AUGMENT
    hint = typing.get_type_hints(cls.__init__)["augment"]
    assert typing.get_args(hint) == tuple(table)  # the Literal the CLI validates and lists
    for policy in table.values():
        assert policy.help in cls.__doc__  # what --help prints under --data.augment
    with pytest.raises(ConfigError, match=re.escape(f"augment must be {'/'.join(table)}")):
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


def test_docs_policy_table_is_generated_from_the_tables():
    page = (ROOT / "docs" / "data.md").read_text()
    expected = augment.markdown({name: cls.AUGMENT for name, cls in TABLES.items()})
    assert expected in page, (
        f"docs/data.md's augmentation table is stale; run make docs:\n{expected}"
    )


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


def test_swept_augment_values_are_policies_of_the_table():
    sweep = yaml.safe_load((ROOT / "configs" / "sweeps" / "cifar10.yaml").read_text())
    values = sweep["parameters"]["data.init_args.augment"]["values"]
    assert set(values) <= set(data.CIFAR10DataModule.AUGMENT), values
