"""Knowledge distillation through the CLI: a frozen teacher that sees the student's batch, stays out
of checkpoints, fails clearly when it does not fit the data, and resumes bit-exact."""

import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import smoke_args
from helpers.signal_at import signal_at
from lightning.pytorch.callbacks import Callback
from test_resume import _assert_same_run, _config, _fit

from vit_lightning.cli import main
from vit_lightning.errors import ConfigError
from vit_lightning.models.teachers import ConvNet
from vit_lightning.models.vit import VisionTransformer
from vit_lightning.module import ViTClassifier
from vit_lightning.training.distill import distillation_loss, load_teacher

QUICK = ["--trainer.max_epochs=1", "--data.train_size=128", "--data.val_size=64"]
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
TEACHER = dict(patch_size=8, embed_dim=32, depth=1, num_heads=2)  # for the smoke data: 32px, RGB


def _teacher_args(path: Path, **net) -> list[str]:
    args = ["--model.teacher=vit_lightning.VisionTransformer", f"--model.teacher_checkpoint={path}"]
    args += [f"--model.teacher.init_args.{k}={v}" for k, v in net.items()]
    return [*args, "--model.distillation=hard"]


def _save_teacher(path: Path, **net) -> dict:
    torch.manual_seed(5)
    sd = VisionTransformer(**net).state_dict()
    torch.save(sd, path)
    return sd


class Watch(Callback):
    """Records, per training batch, the student's and the teacher's inputs and the teacher's mode."""

    def __init__(self) -> None:
        self.student, self.teacher, self.teacher_training = [], [], []

    def on_train_start(self, trainer, pl_module) -> None:
        def teacher_in(module, args):
            self.teacher.append(args[0].detach().clone())
            self.teacher_training.append(module.training)

        pl_module.teacher.register_forward_pre_hook(teacher_in)

        def student_in(module, args):
            if module.training:
                self.student.append(args[0].clone())

        pl_module.net.register_forward_pre_hook(student_in)


def test_a_distillation_fit_keeps_the_teacher_frozen_and_out_of_the_checkpoint(tmp_path):
    sd = _save_teacher(tmp_path / "teacher.pth", img_size=32, num_classes=10, **TEACHER)
    args = smoke_args("fit", tmp_path, *QUICK, *QUIET, "--model.mixup_alpha=0.8")
    args += _teacher_args(tmp_path / "teacher.pth", img_size=32, num_classes=10, **TEACHER)
    cli = main([*args, "--trainer.callbacks+=test_distill.Watch"])
    (watch,) = [c for c in cli.trainer.callbacks if isinstance(c, Watch)]
    teacher = cli.model.teacher
    for k, v in teacher.state_dict().items():
        assert torch.equal(v.cpu(), sd[k]), k  # loaded, and never trained
    assert not any(p.requires_grad for p in teacher.parameters())
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any("teacher" in k for k in saved["state_dict"])
    assert set(saved["state_dict"]) == set(cli.model.state_dict())
    # the teacher saw each mixed batch the student saw (training steps; eval has no teacher)
    steps = cli.trainer.global_step
    assert len(watch.teacher) == steps and not any(watch.teacher_training)
    for s, t in zip(watch.student, watch.teacher, strict=True):
        assert torch.equal(s, t)


@pytest.mark.parametrize(
    "net,named",
    [
        (dict(img_size=32, num_classes=5), "gives (5,) logits, the data has 10 classes"),
        (dict(img_size=32, num_classes=10, in_chans=1), "cannot take the data's input (1, 3, 32, 32)"),
    ],
)  # fmt: skip
def test_a_teacher_that_does_not_fit_the_data_fails_at_startup_naming_both(
    tmp_path, capsys, net, named
):
    path = tmp_path / "teacher.pth"
    _save_teacher(path, **net, **TEACHER)
    with pytest.raises(SystemExit) as exc:
        main(smoke_args("fit", tmp_path, *QUICK, *QUIET) + _teacher_args(path, **net, **TEACHER))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and named in err and "Traceback" not in err
    assert not (tmp_path / "config.yaml").exists()


def test_distillation_needs_a_teacher_and_a_teacher_needs_distillation(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(smoke_args("fit", tmp_path, *QUICK, *QUIET, "--model.distillation=soft"))
    assert exc.value.code == 2 and "needs model.teacher" in capsys.readouterr().err


def test_the_distillation_losses_are_deits():
    torch.manual_seed(0)
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    assert torch.equal(distillation_loss("hard", s, t, 1.0), F.cross_entropy(s, t.argmax(1)))
    tau = 3.0
    p, q = F.softmax(t / tau, 1), F.log_softmax(s / tau, 1)
    kl = (p * (p.log() - q)).sum() * tau**2 / s.numel()
    assert math.isclose(distillation_loss("soft", s, t, tau), kl, rel_tol=1e-5)


@pytest.mark.slow  # three fits; `pytest -m slow` runs it
def test_a_distillation_run_resumes_bit_identical(tmp_path, fmnist_idx_300, run_cli):
    net = dict(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=1,
               num_heads=2)  # fmt: skip
    _save_teacher(tmp_path / "teacher.pth", **net)
    teach = _teacher_args(tmp_path / "teacher.pth", **net)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for root in (straight, resumed):
        _config(root, fmnist_idx_300)
    assert run_cli(*_fit(straight, *teach)).returncode == 0
    first = run_cli(*_fit(resumed, *teach, *signal_at(4, "SIGTERM")))
    assert first.returncode == 143, first.stderr[-3000:]
    again = run_cli(*_fit(resumed, *teach, "--ckpt_path=last"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert _assert_same_run(resumed, straight) > 0


class HeadDist(Callback):
    """Records the distillation head's outputs in training."""

    def __init__(self) -> None:
        self.outputs = []

    def on_train_start(self, trainer, pl_module) -> None:
        def keep(module, args, out):
            if module.training:
                self.outputs.append(out.detach().clone())

        pl_module.net.head_dist.register_forward_hook(keep)


def test_a_distilled_student_takes_the_distillation_loss_on_its_distillation_head(
    tmp_path, monkeypatch
):
    import vit_lightning.module as module

    seen = []

    def recording(kind, student, teacher, tau):
        seen.append(student.detach().clone())
        return distillation_loss(kind, student, teacher, tau)

    monkeypatch.setattr(module, "distillation_loss", recording)
    path = tmp_path / "teacher.pth"
    _save_teacher(path, img_size=32, num_classes=10, **TEACHER)
    student = [
        "--model.net=vit_lightning.VisionTransformerDistilled",
        "--trainer.callbacks+=test_distill.HeadDist",
    ]
    args = smoke_args("fit", tmp_path, *QUICK, *QUIET, *student)
    cli = main(args + _teacher_args(path, img_size=32, num_classes=10, **TEACHER))
    (head,) = [c for c in cli.trainer.callbacks if isinstance(c, HeadDist)]
    assert cli.model.net.distilled_training and len(seen) == cli.trainer.global_step > 0
    for kd, out in zip(seen, head.outputs, strict=True):
        assert torch.equal(kd, out)
    x = torch.randn(2, 3, 32, 32)
    net = cli.model.net.eval()
    logits = net(x)  # eval: the mean of the two heads, as timm's
    feats = net.forward_features(x)
    assert torch.allclose(logits, (net.head(feats[:, 0]) + net.head_dist(feats[:, 1])) / 2)


def test_attention_pictures_skip_every_prefix_token():
    from vit_lightning import VisionTransformerDistilled
    from vit_lightning.analysis.viz import attention_rollout, cls_attention

    net = VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=32, depth=2,
                                     num_heads=2, num_classes=10, reg_tokens=2)  # fmt: skip
    x = torch.randn(3, 3, 32, 32)
    assert net.attention_maps(x)[0].shape == (3, 2, 16 + 4, 16 + 4)
    heads = cls_attention(net, x)
    assert heads.shape == (3, 2, 4, 4) and (heads.sum(dim=(-2, -1)) <= 1 + 1e-6).all()
    assert attention_rollout(net, x).shape == (3, 4, 4)


@pytest.mark.slow
def test_distillation_under_ddp(tmp_path, run_cli):
    path = tmp_path / "teacher.pth"
    _save_teacher(path, img_size=32, num_classes=10, **TEACHER)
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    args = smoke_args("fit", tmp_path, *QUICK, *QUIET, *ddp)
    proc = run_cli(*args, *_teacher_args(path, img_size=32, num_classes=10, **TEACHER))
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] > 0 and not any("teacher" in k for k in saved["state_dict"])


def test_a_teacher_without_weights_is_refused_before_anything_is_written(tmp_path, capsys):
    teacher = ["--model.teacher=vit_lightning.models.teachers.ConvNet", "--model.distillation=hard"]
    teacher.append("--model.teacher.init_args.in_chans=3")
    with pytest.raises(SystemExit) as exc:  # W&B on (smoke.yaml's logger): no run may be left
        main(smoke_args("fit", tmp_path, *QUICK, *teacher))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    line = [ln for ln in err.splitlines() if "model.teacher_checkpoint" in ln]
    assert len(line) == 1 and "model.teacher (ConvNet)" in line[0], err
    assert "model.teacher_checkpoint=none" in line[0]  # how to opt in to a random teacher
    assert os.listdir(tmp_path) == []  # no config.yaml, no wandb/, no checkpoints/


class OwnWeights(ConvNet):
    has_weights = True  # e.g. loads a pretrained file in its constructor


def test_a_random_teacher_is_an_explicit_choice_and_a_teacher_may_bring_its_own_weights():
    net = VisionTransformer(img_size=32, num_classes=10, **TEACHER)
    for teacher, checkpoint in ((ConvNet(in_chans=3), "none"), (OwnWeights(in_chans=3), None)):
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        ViTClassifier(net, teacher=teacher, teacher_checkpoint=checkpoint, distillation="soft")
        assert load_teacher(teacher, checkpoint) is teacher  # no file named "none" is read
        assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    for checkpoint in (None, ""):
        with pytest.raises(ConfigError, match="model.teacher_checkpoint=none"):
            ViTClassifier(net, teacher=ConvNet(in_chans=3), teacher_checkpoint=checkpoint,
                          distillation="hard")  # fmt: skip
