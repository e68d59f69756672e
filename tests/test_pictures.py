"""ValPictures: predictions, confusion matrix and attention maps logged at the end of validation."""

import glob
from pathlib import Path

import pytest
import torch
from PIL import Image

from vit_lightning import VisionTransformer
from vit_lightning.cli import main
from vit_lightning.viz import attention_rollout, cls_attention

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
NAMES = ("predictions", "confusion_matrix", "attention")


@pytest.fixture(autouse=True)
def _finish_wandb():
    yield
    import wandb

    if wandb.run is not None:
        wandb.finish()


def _fit(root: Path, *extra: str):
    return main(["fit", "--config", SMOKE, f"--trainer.default_root_dir={root}", "--trainer.max_epochs=2",
                 "--data.train_size=256", "--data.val_size=64", *extra])  # fmt: skip


def test_pictures_land_in_the_offline_wandb_run(tmp_path):
    cli = _fit(tmp_path)
    (run,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    for name in NAMES:
        files = glob.glob(f"{run}/files/media/images/val/{name}_*.png")
        assert len(files) == 2, name  # one per validation epoch
        with Image.open(files[0]) as im:
            assert im.size[0] > 200 and im.size[1] > 100  # a real figure, not an empty canvas
    # the confusion matrix counts each validation image once
    assert cli.model.val_confmat.compute().sum() == 64


def test_pictures_go_to_csv_logs_and_can_be_switched_off(tmp_path):
    csv = [
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path}",
    ]
    _fit(tmp_path / "on", *csv)
    pngs = sorted(
        Path(p).name for p in glob.glob(str(tmp_path / "**" / "pictures" / "*.png"), recursive=True)
    )
    assert pngs == sorted(f"val_{n}-epoch{e:03d}.png" for n in NAMES for e in (0, 1))
    for p in glob.glob(str(tmp_path / "**" / "pictures"), recursive=True):
        for f in Path(p).iterdir():
            f.unlink()
    _fit(tmp_path / "off", *csv, "--val_pictures.enabled=false")
    assert not glob.glob(str(tmp_path / "**" / "pictures" / "*.png"), recursive=True)


def test_every_n_epochs(tmp_path):
    csv = [
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path}",
    ]
    _fit(tmp_path, *csv, "--val_pictures.every_n_epochs=2")
    pngs = {
        Path(p).name for p in glob.glob(str(tmp_path / "**" / "pictures" / "*.png"), recursive=True)
    }
    assert pngs == {f"val_{n}-epoch001.png" for n in NAMES}


def test_attention_rollout_and_cls_attention():
    net = VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32,
                            depth=3, num_heads=4).eval()  # fmt: skip
    x = torch.randn(2, 1, 28, 28)
    heads = cls_attention(net, x)
    assert heads.shape == (2, 4, 4, 4)
    # [CLS]'s attention over patches plus itself sums to 1; over patches alone, a bit less
    assert (heads.sum(dim=(-2, -1)) <= 1 + 1e-6).all() and (heads > 0).all()
    rollout = attention_rollout(net, x)
    torch.testing.assert_close(rollout.sum(dim=(-2, -1)), torch.ones(2))
    # with one block, rollout is the head-averaged attention mixed half with the identity
    net1 = VisionTransformer(img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=1,
                             num_heads=4).eval()  # fmt: skip
    a = net1.attention_maps(x)[0].mean(1)[:, 0, 1:] * 0.5  # the identity adds nothing off [CLS]
    torch.testing.assert_close(attention_rollout(net1, x).flatten(1), a / a.sum(-1, keepdim=True))
