"""`model.tta`: test-time augmentation of test and predict (airbench's flip averaging)."""

import pytest
import torch
from helpers import smoke_args
from helpers.trainer import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vit_lightning.cli import main
from vit_lightning.errors import ConfigError
from vit_lightning.module import ViTClassifier


class MirrorSensitive(nn.Module):
    """A linear classifier on raw pixels: its logits change when the image is mirrored."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _data() -> tuple[MirrorSensitive, torch.Tensor, torch.Tensor, DataLoader]:
    torch.manual_seed(0)
    net, x, y = MirrorSensitive(), torch.randn(96, 1, 4, 4), torch.randint(0, 3, (96,))
    return net, x, y, DataLoader(TensorDataset(x, y), batch_size=32)


@torch.no_grad()
def test_flip_tta_averages_each_image_with_its_mirror():
    net, x, y, loader = _data()
    plain, mirrored = net(x), net(x.flip(-1))
    acc_plain = (plain.argmax(1) == y).float().mean().item()
    acc_tta = ((plain + mirrored).argmax(1) == y).float().mean().item()
    assert acc_plain != acc_tta  # the test can tell the two apart
    model = ViTClassifier(net, tta="flip")
    trainer = quiet_trainer()
    out = trainer.test(model, loader, verbose=False)[0]
    assert out["test/acc"] == pytest.approx(acc_tta)
    assert out["test/acc_no_tta"] == pytest.approx(acc_plain)
    probs = torch.cat(trainer.predict(model, loader))
    torch.testing.assert_close(probs, ((plain + mirrored) / 2).softmax(-1))
    # validation stays plain: the val curve and checkpoint choice do not depend on tta
    val = trainer.validate(model, loader, verbose=False)[0]
    assert val["val/acc"] == pytest.approx(acc_plain)


@torch.no_grad()
def test_no_tta_is_the_plain_prediction():
    net, x, y, loader = _data()
    out = quiet_trainer().test(ViTClassifier(net), loader, verbose=False)[0]
    assert out["test/acc"] == pytest.approx((net(x).argmax(1) == y).float().mean().item())
    assert "test/acc_no_tta" not in out


def test_an_unknown_tta_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"model.tta='rotate' must be none or flip"):
        ViTClassifier(MirrorSensitive(), tta="rotate")


def test_tta_is_a_test_time_override_of_a_trained_run(tmp_path):
    """`test --model.tta=flip --ckpt_path=...` evaluates an existing checkpoint with TTA."""
    data = ["--data.train_size=64", "--data.val_size=32", "--trainer.logger=false"]
    main([*smoke_args("fit", tmp_path, *data), "--trainer.max_epochs=1"])
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    cli = main([*smoke_args("test", tmp_path, *data), "--model.tta=flip", f"--ckpt_path={ckpt}"])
    logged = cli.trainer.callback_metrics
    assert {"test/acc", "test/acc_no_tta"} <= set(logged)
