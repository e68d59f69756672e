"""Every shipped combination of a base recipe and its overlays, through the CLI's `--print_config`.

Each combination is pinned as the exact set of printed leaves that differ from its base recipe's
print_config: a leaf an overlay forgets to set, or one that jsonargparse carries over from the
base when an overlay switches a class (shared init_args are kept), fails here. Everything not
listed must print as the base prints it, so the base's lr, augmentation and loader stay underneath.
The expected changes are the print_config of the one-file configs these overlays replaced,
diffed against the same base.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from helpers import ROOT

from vit_lightning.cli import main

CONFIGS, OVERLAYS = ROOT / "configs", ROOT / "configs" / "overlays"
CIFAR10, FMNIST = "cifar10", "fashion_mnist"

FAST = {"trainer.precision": "bf16-mixed", "model.compile": True,
        "data.init_args.device_pipeline": True}  # fmt: skip
CIFAR10_DEIT = {
    "trainer.default_root_dir": "runs/cifar10_deit",
    "trainer.logger.init_args.name": "cifar10-deit",
    "model.net.class_path": "vit_lightning.VisionTransformerDistilled",
    "model.teacher.class_path": "vit_lightning.models.teachers.ResNet",
    "model.teacher.init_args.num_classes": 10,
    "model.teacher.init_args.in_chans": 3,
    "model.teacher.init_args.img_size": 32,
    "model.teacher.init_args.depth": 18,
    "model.teacher_checkpoint": "runs/cifar10_teacher/checkpoints/last.ckpt",
    "model.distillation": "hard",
}
FMNIST_FOLDERS = {  # both transfer steps: Fashion-MNIST as PNG folders, Lightning's logger
    "trainer.logger": None,
    "data.class_path": "vit_lightning.data.ImageFolderDataModule",
    "data.init_args.img_size": 28,
    "data.init_args.in_chans": 1,
    "data.init_args.val_fraction": 0.1,
    "data.init_args.split_seed": None,
    "data.init_args.mean": [0.286],
    "data.init_args.std": [0.353],
}
TRANSFER_DOWNSTREAM = {
    **FMNIST_FOLDERS,
    "trainer.max_epochs": 50,
    "trainer.check_val_every_n_epoch": 5,
    "trainer.log_every_n_steps": 10,
    "trainer.default_root_dir": "runs/transfer/scratch_s0",
    "model.warmup_epochs": 5.0,
    "data.init_args.root": "data/transfer/downstream",
    "data.init_args.batch_size": 32,
}

# (base recipe, overlays in merge order) -> the print_config leaves that differ from the base's
COMBINATIONS: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {
    (CIFAR10, ("fast",)): FAST,
    (FMNIST, ("fast",)): FAST,
    (CIFAR10, ("cifar10_teacher",)): {
        "trainer.default_root_dir": "runs/cifar10_teacher",
        "trainer.logger.init_args.name": "cifar10-teacher",
        "model.net.class_path": "vit_lightning.models.teachers.ResNet",
        "model.net.init_args.depth": 18,
        "model.lr": 0.002,
        "model.warmup_epochs": 5.0,
        "model.mixup_alpha": 0.0,
        "model.cutmix_alpha": 0.0,
        "data.init_args.random_erasing": 0.0,
    },
    (CIFAR10, ("cifar10_deit",)): CIFAR10_DEIT,
    (CIFAR10, ("cifar10_deit", "fast")): {**CIFAR10_DEIT, **FAST},
    (CIFAR10, ("cifar10_finetune",)): {
        "seed_everything": 0,
        "trainer.precision": "bf16-mixed",
        "trainer.max_epochs": 10,
        "trainer.default_root_dir": "runs/cifar10_finetune",
        "trainer.logger.init_args.name": "cifar10-finetune",
        "model.net.init_args.patch_size": 16,
        "model.net.init_args.embed_dim": 384,
        "model.net.init_args.depth": 12,
        "model.net.init_args.num_heads": 6,
        "model.net.init_args.mlp_ratio": 4.0,
        "model.pretrained": "vit_small_patch16_224.augreg_in21k_ft_in1k",
        "model.layer_decay": 0.65,
        "model.lr": 0.0001,
        "model.warmup_epochs": 1.0,
        "model.min_lr": 1e-06,
        "model.mixup_alpha": 0.0,
        "model.cutmix_alpha": 0.0,
        "data.init_args.resize": 224,
        "data.init_args.augment": "randaugment",
        "data.init_args.random_erasing": 0.0,
        "data.init_args.num_workers": 8,
    },
    (CIFAR10, ("cifar10_cct",)): {
        "trainer.max_epochs": 200,
        "trainer.default_root_dir": "runs/cifar10_cct",
        "trainer.logger.init_args.name": "cifar10-cct",
        "model.net.init_args.embed_layer": "conv",
        "model.net.init_args.class_token": False,
        "model.net.init_args.global_pool": "seq",
        "model.net.init_args.embed_dim": 256,
        "model.net.init_args.depth": 7,
        "model.net.init_args.num_heads": 4,
        "model.lr": 0.00055,
        "model.weight_decay": 0.03,
    },
    (CIFAR10, ("cifar10_spt_lsa",)): {
        "trainer.default_root_dir": "runs/cifar10_spt_lsa",
        "trainer.logger.init_args.name": "cifar10-spt-lsa",
        "model.net.init_args.embed_layer": "spt",
        "model.net.init_args.attn_layer": "lsa",
    },
    (CIFAR10, ("folder_finetune",)): {
        "seed_everything": 0,
        "trainer.max_epochs": 50,
        "trainer.log_every_n_steps": 10,
        "trainer.default_root_dir": "runs/folder_finetune",
        "trainer.logger.init_args.name": "folder-finetune",
        "model.net.init_args.patch_size": 16,
        "model.net.init_args.depth": 12,
        "model.net.init_args.num_heads": 3,
        "model.net.init_args.mlp_ratio": 4.0,
        "model.pretrained": "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
        "model.layer_decay": 0.75,
        "model.lr": 0.0002,
        "model.warmup_epochs": 5.0,
        "model.min_lr": 1e-06,
        "model.mixup_alpha": 0.0,
        "model.cutmix_alpha": 0.0,
        "data.class_path": "vit_lightning.data.ImageFolderDataModule",
        "data.init_args.root": "data/my_images",
        "data.init_args.img_size": 224,
        "data.init_args.in_chans": 3,
        "data.init_args.val_fraction": 0.1,
        "data.init_args.split_seed": None,
        "data.init_args.augment": "crop_flip",
        "data.init_args.mean": None,
        "data.init_args.std": None,
        "data.init_args.batch_size": 64,
    },
    (FMNIST, ("fashion_mnist_teacher",)): {
        "trainer.max_epochs": 10,
        "trainer.default_root_dir": "runs/fashion_mnist_teacher",
        "trainer.logger.init_args.name": "fashion-mnist-teacher",
        "model.net.class_path": "vit_lightning.models.teachers.ConvNet",
        "model.net.init_args.widths": [32, 64, 128],
        "model.lr": 0.002,
    },
    (FMNIST, ("fashion_mnist_deit",)): {
        "trainer.default_root_dir": "runs/fashion_mnist_deit",
        "trainer.logger.init_args.name": "fashion-mnist-deit",
        "model.teacher.class_path": "vit_lightning.models.teachers.ConvNet",
        "model.teacher.init_args.num_classes": 10,
        "model.teacher.init_args.in_chans": 1,
        "model.teacher.init_args.img_size": 28,
        "model.teacher.init_args.widths": [32, 64, 128],
        "model.teacher_checkpoint": "runs/fashion_mnist_teacher/checkpoints/last.ckpt",
        "model.distillation": "hard",
    },
    (FMNIST, ("transfer_pretrain",)): {
        **FMNIST_FOLDERS,
        "trainer.max_epochs": 10,
        "trainer.default_root_dir": "runs/transfer/pretrain_s0",
        "data.init_args.root": "data/transfer/pretrain",
    },
    (FMNIST, ("transfer_pretrain", "transfer_downstream")): TRANSFER_DOWNSTREAM,
    (FMNIST, ("transfer_pretrain", "transfer_downstream", "transfer_probe")): {
        **TRANSFER_DOWNSTREAM,
        "model.freeze": "backbone",
        "model.lr": 0.01,
        "model.weight_decay": 0.0,
    },
}


def _ids(combination: tuple[str, tuple[str, ...]]) -> str:
    return "+".join((combination[0], *combination[1]))


def print_config(base: str, *overlays: str, capsys: pytest.CaptureFixture) -> dict[str, Any]:
    """The CLI's `fit --print_config` for configs/<base>.yaml then configs/overlays/<o>.yaml..."""
    args = ["fit", "--config", str(CONFIGS / f"{base}.yaml")]
    for overlay in overlays:
        args += ["--config", str(OVERLAYS / f"{overlay}.yaml")]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    return yaml.safe_load(out)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model.net.init_args.depth": 9, ...}: one dotted key per leaf (an empty dict is a leaf)."""
    leaves: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            leaves.update(flatten(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


@pytest.fixture(scope="module")
def bases() -> dict[str, dict[str, Any]]:
    """The base recipes' print_config, flattened (filled by the first test that needs one)."""
    return {}


@pytest.mark.parametrize("combination", COMBINATIONS, ids=_ids)
def test_a_combination_changes_exactly_its_variant_keys(combination, bases, capsys):
    base, overlays = combination
    if base not in bases:
        bases[base] = flatten(print_config(base, capsys=capsys))
    before, after = bases[base], flatten(print_config(base, *overlays, capsys=capsys))
    expected = COMBINATIONS[combination]

    changed = {k: v for k, v in after.items() if before.get(k, ...) != v}
    assert changed == expected

    # a base leaf may only vanish where the overlay replaced its subtree: a switched class's
    # init_args (those the new class lacks), a value set to null, or a null given a value
    replaced = [
        k.removesuffix("class_path") + "init_args." for k in expected if k.endswith("class_path")
    ]
    replaced += [f"{k}." for k, v in expected.items() if v is None]
    for gone in set(before) - set(after):
        assert gone.startswith(tuple(replaced)) or any(
            k.startswith(f"{gone}.") for k in expected
        ), gone


def test_the_deit_overlay_keeps_the_recipe_underneath(capsys):
    """The issue's walk: model.lr and data.init_args.augment come from cifar10.yaml, the
    distillation from overlays/cifar10_deit.yaml, whose net class takes the recipe's sizes."""
    cfg = print_config(CIFAR10, "cifar10_deit", capsys=capsys)
    recipe = yaml.safe_load((CONFIGS / "cifar10.yaml").read_text())
    overlay = yaml.safe_load((OVERLAYS / "cifar10_deit.yaml").read_text())
    assert "lr" not in overlay["model"] and "data" not in overlay
    assert cfg["model"]["lr"] == recipe["model"]["lr"] == 1e-3
    assert cfg["data"]["init_args"]["augment"] == recipe["data"]["init_args"]["augment"]
    assert cfg["model"]["distillation"] == overlay["model"]["distillation"] == "hard"
    net = cfg["model"]["net"]
    assert net["class_path"] == "vit_lightning.VisionTransformerDistilled"
    assert {k: net["init_args"][k] for k in recipe["model"]["net"]["init_args"]} == recipe["model"][
        "net"
    ]["init_args"]


def test_every_overlay_is_pinned_and_its_header_says_how_to_use_it():
    used = {o for _, overlays in COMBINATIONS for o in overlays}
    shipped = {p.stem for p in OVERLAYS.glob("*.yaml")}
    assert shipped == used, f"add a COMBINATIONS entry for {sorted(shipped - used)}"
    for name in shipped:
        lines = (OVERLAYS / f"{name}.yaml").read_text().splitlines()
        header = "\n".join(
            ln for ln in lines[: lines.index(next(ln for ln in lines if not ln.startswith("#")))]
        )
        assert "fit --config configs/" in header, f"{name}: the header shows no command line"
        assert f"--config configs/overlays/{name}.yaml" in header, f"{name}: its own path"
