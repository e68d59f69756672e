"""`python -m vit_lightning` end to end on the smoke config: fit, validate, test, predict, W&B offline."""

import csv
import glob
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, SMOKE, smoke_args
from PIL import Image

from vit_lightning.analysis.runs import read_offline_run
from vit_lightning.cli import ViTLightningCLI, main


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """One real 2-epoch fit on the smoke config; later tests reuse its checkpoints and W&B files."""
    root = tmp_path_factory.mktemp("smoke")
    main(smoke_args("fit", root))
    import wandb

    wandb.finish()
    return root


def test_fit_writes_last_and_best_checkpoints_and_config(smoke_run):
    ckpts = smoke_run / "checkpoints"
    assert (ckpts / "last.ckpt").is_file()
    assert len(list(ckpts.glob("best-epoch*-acc*.ckpt"))) == 1
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 1 and last["global_step"] == 2 * (1024 // 64)  # current, not stale
    assert (smoke_run / "config.yaml").is_file()


@pytest.mark.parametrize("subcommand,metric", [("validate", "val/acc"), ("test", "test/acc")])
def test_validate_and_test_run_from_the_checkpoint(smoke_run, subcommand, metric):
    cli = main(smoke_args(subcommand, smoke_run, "--ckpt_path=last", "--trainer.logger=false"))
    # far above the 10% chance of 10 classes: the weights were loaded
    assert cli.trainer.callback_metrics[metric] > 0.5


def test_predict_on_a_folder_of_images_writes_a_csv(smoke_run, tmp_path):
    rng = np.random.default_rng(0)
    for name in ["b.png", "a.jpg", "c.PNG"]:
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    out = tmp_path / "preds.csv"
    args = [f"--data.predict_dir={tmp_path}", f"--prediction_writer.output_file={out}"]
    main(smoke_args("predict", smoke_run, "--ckpt_path=last", "--trainer.logger=false", *args))
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["file"]).name for r in rows] == ["a.jpg", "b.png", "c.PNG"]
    for r in rows:
        assert r["class"] == f"class_{r['class_index']}" and 0.1 <= float(r["probability"]) <= 1.0


def test_predict_on_the_test_split(smoke_run, tmp_path):
    out = tmp_path / "test_preds.csv"
    write = f"--prediction_writer.output_file={out}"
    main(smoke_args("predict", smoke_run, "--ckpt_path=last", "--trainer.logger=false", write))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 256 and rows[0]["file"] == "test/0"


def test_offline_wandb_run_holds_full_config_and_metrics(smoke_run):
    runs = glob.glob(str(smoke_run / "wandb" / "offline-run-*"))
    assert len(runs) == 1  # under default_root_dir, not the cwd
    rec = read_offline_run(runs[0])
    cfg = rec["config"]
    for section in ("model", "data", "trainer", "seed_everything"):
        assert section in cfg, section
    assert cfg["model"]["net"]["init_args"]["embed_dim"] == 64
    assert cfg["model"]["net"]["init_args"]["num_classes"] == 10  # linked from the data
    assert cfg["data"]["class_path"] == "vit_lightning.data.SyntheticDataModule"
    assert cfg["model"]["lr"] == 1e-3  # the optimiser settings
    keys = set().union(*rec["history"])
    for key in ("train/loss_step", "train/lr", "val/loss", "val/acc", "val/acc_best", "train/acc"):
        assert key in keys, key


def test_data_settings_are_linked_into_the_network():
    data = ["--data.num_classes=7", "--data.in_chans=1", "--data.img_size=16"]
    cli = ViTLightningCLI(args=["--config", SMOKE, *data, "--trainer.logger=false"], run=False)
    net = cli.model.net
    assert (net.num_classes, net.in_chans, net.patch_embed.img_size) == (7, 1, (16, 16))


def test_timm_vision_transformer_plugs_in_unchanged():
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    net = "--model.net.class_path=timm.models.vision_transformer.VisionTransformer"
    cli = ViTLightningCLI(args=["--config", SMOKE, net, "--trainer.logger=false"], run=False)
    assert isinstance(cli.model.net, TimmViT) and cli.model.net.num_classes == 10


CONFIGS = sorted(glob.glob(str(ROOT / "configs" / "*.yaml")))  # the overlays: test_configs.py


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config, "--print_config"])
    assert exit_info.value.code == 0
    net = re.search(r"\n  net:\n    class_path: (\S+)\n", capsys.readouterr().out)
    assert net and net[1] == "vit_lightning.VisionTransformer"


def test_unknown_config_key_is_named(tmp_path, run_cli):
    proc = run_cli("fit", "--config", SMOKE, "--model.bogus_lr=1", cwd=tmp_path)
    assert proc.returncode == 2
    assert "model.bogus_lr" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  net_typo: 3\n")
    proc = run_cli("fit", "--config", SMOKE, "--config", str(bad), cwd=tmp_path)
    assert proc.returncode == 2 and "net_typo" in proc.stderr


def test_a_requeued_run_writes_into_the_same_directory_and_resumes(tmp_path):
    data = ["--data.train_size=128", "--data.val_size=64"]
    args = smoke_args("fit", tmp_path, "--trainer.logger=false", *data)
    main([*args, "--trainer.max_epochs=1"])
    # config.yaml exists: no crash
    cli = main([*args, "--trainer.max_epochs=2", "--ckpt_path=last"])
    assert cli.trainer.current_epoch == 2 and cli.trainer.global_step == 2 * (128 // 64)


def test_missing_dataset_fails_fast_naming_the_fix(tmp_path, capsys):
    config = str(ROOT / "configs" / "cifar10.yaml")
    args = [f"--data.data_dir={tmp_path}", "--data.download=false", "--trainer.logger=false"]
    with pytest.raises(SystemExit) as exit_info:  # one line, not a traceback (issue 13)
        main(["fit", "--config", config, *args, f"--trainer.default_root_dir={tmp_path}"])
    assert exit_info.value.code == 1
    assert "cifar-10-python.tar.gz" in capsys.readouterr().err


def test_ema_weights_via_lightnings_callback(tmp_path):
    data = ["--data.train_size=256", "--data.val_size=64"]
    args = smoke_args("fit", tmp_path, "--trainer.logger=false", "--trainer.max_epochs=1", *data)
    callback = "--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging"
    cli = main([*args, callback, "--trainer.callbacks.decay=0.9"])
    from lightning.pytorch.callbacks import EMAWeightAveraging

    ema = next(c for c in cli.trainer.callbacks if isinstance(c, EMAWeightAveraging))
    averaged = ema._average_model.module.state_dict()
    assert ema._average_model.n_averaged.item() > 1  # updated every step, not just initialised
    # at the end of fit Lightning copies the averaged weights into the model that gets saved
    for k, v in cli.model.state_dict().items():
        torch.testing.assert_close(v, averaged[k].to(v.dtype), msg=k)


def test_a_cli_checkpoint_loads_without_a_config(smoke_run):
    from vit_lightning.module import ViTClassifier

    model = ViTClassifier.load_from_checkpoint(smoke_run / "checkpoints" / "last.ckpt").eval()
    assert model.net.num_classes == 10 and model.net.embed_dim == 64  # rebuilt from hparams
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
