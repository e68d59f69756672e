"""ValPictures: predictions, confusion matrix and attention maps logged at the end of validation."""

import glob
from pathlib import Path

import pytest
import torch
from helpers import smoke_args
from PIL import Image

from vit_lightning import VisionTransformer
from vit_lightning.analysis.viz import attention_rollout, cls_attention
from vit_lightning.cli import main

NAMES = ("predictions", "confusion_matrix", "attention")


def _fit(root: Path, *extra: str):
    data = ["--data.train_size=256", "--data.val_size=64"]
    return main(smoke_args("fit", root, "--trainer.max_epochs=2", *data, *extra))


def _csv_logger(save_dir: Path) -> list[str]:
    csv_logger = "--trainer.logger=lightning.pytorch.loggers.CSVLogger"
    return [csv_logger, f"--trainer.logger.save_dir={save_dir}"]


def _pngs(save_dir: Path) -> list[str]:
    """The names of the pictures that CSV loggers under save_dir wrote, sorted."""
    paths = glob.glob(str(save_dir / "**" / "pictures" / "*.png"), recursive=True)
    return sorted(Path(p).name for p in paths)


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
    csv = _csv_logger(tmp_path)
    _fit(tmp_path / "on", *csv)
    assert _pngs(tmp_path) == sorted(f"val_{n}-epoch{e:03d}.png" for n in NAMES for e in (0, 1))
    for p in glob.glob(str(tmp_path / "**" / "pictures"), recursive=True):
        for f in Path(p).iterdir():
            f.unlink()
    _fit(tmp_path / "off", *csv, "--val_pictures.enabled=false")
    assert not _pngs(tmp_path)


def test_every_n_epochs(tmp_path):
    _fit(tmp_path, *_csv_logger(tmp_path), "--val_pictures.every_n_epochs=2")
    assert set(_pngs(tmp_path)) == {f"val_{n}-epoch001.png" for n in NAMES}


def test_attention_rollout_and_cls_attention():
    mnist = dict(img_size=28, patch_size=7, in_chans=1, embed_dim=32, num_heads=4)
    net = VisionTransformer(**mnist, num_classes=10, depth=3).eval()
    x = torch.randn(2, 1, 28, 28)
    heads = cls_attention(net, x)
    assert heads.shape == (2, 4, 4, 4)
    # [CLS]'s attention over patches plus itself sums to 1; over patches alone, a bit less
    assert (heads.sum(dim=(-2, -1)) <= 1 + 1e-6).all() and (heads > 0).all()
    rollout = attention_rollout(net, x)
    torch.testing.assert_close(rollout.sum(dim=(-2, -1)), torch.ones(2))
    # with one block, rollout is the head-averaged attention mixed half with the identity
    net1 = VisionTransformer(**mnist, depth=1).eval()
    a = net1.attention_maps(x)[0].mean(1)[:, 0, 1:] * 0.5  # the identity adds nothing off [CLS]
    torch.testing.assert_close(attention_rollout(net1, x).flatten(1), a / a.sum(-1, keepdim=True))


def test_a_picture_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A save that dies while the PNG is written leaves no half file beside metrics.csv."""
    from types import SimpleNamespace

    import matplotlib.pyplot as plt
    from lightning.pytorch.loggers import CSVLogger
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from vit_lightning.callbacks.val_pictures import log_figure

    def dies_half_way(self, out, **kwargs):
        out.write(b"\x89PNG half")
        raise OSError("killed")

    monkeypatch.setattr(FigureCanvasAgg, "print_png", dies_half_way)
    logger = CSVLogger(tmp_path)
    trainer = SimpleNamespace(loggers=[logger], global_step=3, current_epoch=0)
    fig = plt.figure()
    try:
        with pytest.raises(OSError, match="killed"):
            log_figure(trainer, "val/attention", fig)
    finally:
        plt.close(fig)
    assert list(tmp_path.rglob("*.png")) == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no temp file either
