"""Fine-tuning through the CLI: `model.pretrained`, `model.layer_decay`, `model.freeze`,
`model.grad_checkpointing`, the per-group lr log, and an exact resume of a fine-tuning run."""

import csv
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, smoke_args
from helpers.signal_at import signal_at
from safetensors.torch import save_file
from test_resume import _assert_same_run, _config, _fit

from vit_lightning import module
from vit_lightning.cli import main
from vit_lightning.errors import ConfigError
from vit_lightning.models.vit import VisionTransformer

QUICK = ["--trainer.max_epochs=1", "--data.train_size=128", "--data.val_size=64"]
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
SMOKE_NET = dict(patch_size=8, embed_dim=64, depth=2, num_heads=4)  # configs/smoke.yaml's net


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory) -> tuple[Path, dict]:
    """A .safetensors of the smoke network at another image size and class count (timm format)."""
    args = {**SMOKE_NET, "img_size": 16, "num_classes": 7, "in_chans": 3}
    torch.manual_seed(123)
    net = VisionTransformer(**args)
    path = tmp_path_factory.mktemp("weights") / "pretrained.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path, net.state_dict()


def test_pretrained_weights_are_loaded_resampled_and_summarised(
    tmp_path, timm_weights, monkeypatch
):
    path, sd = timm_weights
    logged: list[str] = []
    monkeypatch.setattr(module, "rank_zero_info", logged.append)  # ViTClassifier logs it
    args = smoke_args("validate", tmp_path, "--ckpt_path=none", *QUICK, *QUIET)
    cli = main([*args, f"--model.pretrained={path}"])
    net = cli.model.net
    assert net.num_classes != 7 and net.pos_embed.shape != sd["pos_embed"].shape
    for k, v in sd.items():
        if k.startswith("head.") or k == "pos_embed":
            continue
        assert torch.equal(net.state_dict()[k], v), k  # the rest loaded exactly
    (said,) = [m for m in logged if str(path) in m]  # one summary
    assert str(path) in said and "pos_embed" in said and "head.weight" in said


def test_a_resumed_run_keeps_its_weights_whatever_pretrained_says(tmp_path, timm_weights):
    path, sd = timm_weights
    main(smoke_args("fit", tmp_path, *QUICK, *QUIET, f"--model.pretrained={path}"))
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    cli = main(
        smoke_args("validate", tmp_path, "--ckpt_path=last", *QUICK, *QUIET)
        + [f"--model.pretrained={path}"]
    )
    for k, v in cli.model.state_dict().items():
        if k in saved:
            assert torch.equal(v, saved[k]), k
    blk = "net.blocks.0.attn.qkv.weight"
    assert not torch.equal(saved[blk], sd[blk.removeprefix("net.")])  # it trained
    # a run that restores a checkpoint never reads pretrained: a resume on a node whose copy of
    # the weights (or hub cache) is gone still works
    gone = tmp_path / "gone.safetensors"
    cli = main(
        smoke_args("validate", tmp_path, "--ckpt_path=last", *QUICK, *QUIET)
        + [f"--model.pretrained={gone}"]
    )
    assert torch.equal(cli.model.state_dict()[blk], saved[blk])


def test_a_missing_pretrained_file_is_named_before_the_run_starts(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(smoke_args("fit", tmp_path, *QUICK, *QUIET, "--model.pretrained=nope/w.safetensors"))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "nope/w.safetensors" in err and "Traceback" not in err
    assert not (tmp_path / "config.yaml").exists()


def test_layer_decay_gives_timm_groups_and_each_group_its_lr(tmp_path):
    from timm.optim import param_groups_layer_decay

    csv_logger = ["--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={tmp_path}"]
    args = smoke_args("fit", tmp_path, *QUICK, *csv_logger, "--trainer.log_every_n_steps=1")
    cli = main([*args, "--model.layer_decay=0.65", "--model.lr=1e-3", "--model.warmup_epochs=0"])
    net, (opt,) = cli.model.net, cli.trainer.optimizers
    names = {id(p): n for n, p in net.named_parameters()}
    ours = {names[id(p)]: g["initial_lr"] for g in opt.param_groups for p in g["params"]}
    timm_groups = param_groups_layer_decay(
        net, 0.05, no_weight_decay_list=net.no_weight_decay(), layer_decay=0.65
    )
    want = {names[id(p)]: 1e-3 * g["lr_scale"] for g in timm_groups for p in g["params"]}
    assert ours.keys() == want.keys()
    assert all(ours[k] == pytest.approx(want[k]) for k in want)
    assert ours["head.weight"] == pytest.approx(1e-3)
    assert ours["patch_embed.proj.weight"] < ours["blocks.0.attn.qkv.weight"] < 1e-3
    # LearningRateMonitor logged every group's lr under the group's name
    groups = {f"lr/{g['name']}" for g in opt.param_groups}
    assert {"lr/layer_0_decay", "lr/layer_0_no_decay"} < groups
    (metrics,) = tmp_path.glob("*/version_*/metrics.csv")
    rows = list(csv.DictReader(metrics.read_text().splitlines()))
    assert groups | {"train/lr"} <= set(rows[0])
    first = next(r for r in rows if r["lr/layer_0_decay"])
    assert float(first["lr/layer_0_decay"]) == pytest.approx(want["patch_embed.proj.weight"])


@pytest.mark.parametrize("freeze", ["backbone", "1"])
def test_frozen_layers_do_not_change_and_stay_in_eval_mode(tmp_path, timm_weights, freeze):
    path, sd = timm_weights
    tune = [f"--model.pretrained={path}", f"--model.freeze={freeze}"]
    cli = main(smoke_args("fit", tmp_path, *QUICK, *QUIET, *tune))
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    if freeze == "backbone":
        frozen = lambda k: not k.startswith("head.")  # noqa: E731
    else:
        frozen = lambda k: k.startswith(("patch_embed.", "blocks.0.", "cls_token"))  # noqa: E731
    for k, v in sd.items():
        if k != "pos_embed" and not k.startswith("head."):  # resampled / re-initialised
            assert torch.equal(saved[f"net.{k}"], v) == frozen(k), k
    net = cli.model.net
    cli.model.train()
    assert not net.blocks[0].training and net.head.training
    assert net.blocks[-1].training == (freeze != "backbone")


def test_grad_checkpointing_switch_reaches_the_network(tmp_path):
    cli = main(smoke_args("fit", tmp_path, *QUICK, *QUIET, "--model.grad_checkpointing=true"))
    assert cli.model.net.grad_checkpointing


@pytest.mark.slow  # three fits; `pytest -m slow` runs it
def test_a_fine_tuning_run_resumes_bit_identical(tmp_path, fmnist_idx_300, run_cli):
    """Pretrained weights, layer decay and a frozen block: killed with SIGTERM mid-epoch and
    resumed, it ends exactly where the uninterrupted run does."""
    net = VisionTransformer(img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=2,
                            num_heads=2, num_classes=5)  # fmt: skip
    weights = tmp_path / "pre.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    tune = [f"--model.pretrained={weights}", "--model.layer_decay=0.75", "--model.freeze=1"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for root in (straight, resumed):
        _config(root, fmnist_idx_300)
    assert run_cli(*_fit(straight, *tune)).returncode == 0
    first = run_cli(*_fit(resumed, *tune, *signal_at(4, "SIGTERM")))
    assert first.returncode == 143, first.stderr[-3000:]
    again = run_cli(*_fit(resumed, *tune, "--ckpt_path=last"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert _assert_same_run(resumed, straight) > 0


@pytest.mark.parametrize("config", ["folder_finetune", "cifar10_finetune"])
def test_shipped_finetune_configs_offline_fail_fast_naming_the_weights(
    tmp_path, capsys, monkeypatch, cifar10, config
):
    """No network here, and no Hugging Face cache: the Hub weights are named, with how to get
    them, in seconds."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    (tmp_path / "images" / "train" / "a").mkdir(parents=True)
    (tmp_path / "images" / "train" / "b").mkdir()
    import numpy as np
    from PIL import Image

    for c in "ab":
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(
                tmp_path / "images" / "train" / c / f"{i}.png"
            )
    data = {"folder_finetune": [f"--data.root={tmp_path / 'images'}"],
            "cifar10_finetune": [f"--data.data_dir={cifar10.root}", "--data.download=false",
                                 "--data.val_size=20"]}  # fmt: skip
    configs = ["--config", str(ROOT / "configs" / "cifar10.yaml")]
    configs += ["--config", str(ROOT / "configs" / "overlays" / f"{config}.yaml")]
    args = ["fit", *configs, *data[config], *QUIET]
    args += [f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.accelerator=cpu"]
    args += ["--trainer.precision=32-true", "--data.num_workers=0", "--data.batch_size=2"]
    start = time.monotonic()
    with pytest.raises(SystemExit) as exc:
        main(args)
    took = time.monotonic() - start
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert exc.value.code == 1 and "_patch16_224.augreg_in21k_ft_in1k" in line
    assert "hf download" in line and "Traceback" not in err
    assert took < 10, took


def test_cifar10_resize_upsamples_after_the_augmentation_and_sets_the_model_size():
    from PIL import Image

    from vit_lightning.data import CIFAR10DataModule

    dm = CIFAR10DataModule(resize=48, augment="autoaugment", random_erasing=0.5)
    assert dm.img_size == 48 and CIFAR10DataModule().img_size == 32
    image = Image.fromarray(torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8).numpy())
    assert dm.train_transform()(image).shape == dm.eval_transform()(image).shape == (3, 48, 48)
    with pytest.raises(ConfigError, match="device_pipeline=false"):
        CIFAR10DataModule(resize=48, device_pipeline=True)


def test_pretrained_weights_load_once_so_test_after_fit_sees_the_trained_weights(tmp_path):
    from helpers.trainer import quiet_trainer

    from vit_lightning.data import SyntheticDataModule
    from vit_lightning.module import ViTClassifier

    net_args = dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=4)
    path = tmp_path / "w.safetensors"
    save_file(VisionTransformer(**net_args).state_dict(), str(path))
    model = ViTClassifier(VisionTransformer(**net_args), pretrained=str(path), warmup_epochs=0)
    dm = SyntheticDataModule(num_classes=4, img_size=16, train_size=64, val_size=16,
                             test_size=16, batch_size=16, num_workers=0)  # fmt: skip
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(model, dm)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.test(model, dm)
    for k, v in model.state_dict().items():
        assert torch.equal(v, trained[k]), k
