"""`export` and `--ckpt_path=best`: a checkpoint's network as ONNX or torch.export, equal to the
checkpoint's model at other batch and image sizes than the traced ones; the best checkpoint found
from the run's files the way `last` is."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import smoke_args

from vit_lightning import VisionTransformer
from vit_lightning.cli import main
from vit_lightning.errors import ConfigError, UserError
from vit_lightning.module import ViTClassifier
from vit_lightning.run import export
from vit_lightning.run.checkpoints import best_checkpoint
from vit_lightning.run.export import export_model

DYNAMIC = "--model.net.init_args.dynamic_img_size=true"  # smoke's ViT: 32x32, 8x8 patches
SIZES = [(32, 32), (48, 40), (16, 64)]  # the build size, then others in whole patches
BATCHES = (1, 3)  # the export traces batch 2
MONITOR_KEY = "ModelCheckpoint{'monitor': 'val/acc', 'mode': '%s', 'every_n_train_steps': 0}"


def args(subcommand: str, root: Path, *extra: str) -> list[str]:
    return smoke_args(subcommand, root, "--trainer.logger=false", DYNAMIC, *extra)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One short fit of a ViT built with dynamic_img_size=True: last.ckpt and one best-*.ckpt."""
    root = tmp_path_factory.mktemp("export")
    sizes = ["--data.train_size=128", "--data.val_size=64", "--data.test_size=64"]
    main(args("fit", root, "--trainer.max_epochs=1", *sizes))
    return root


def best_file(root: Path) -> Path:
    (best,) = (root / "checkpoints").glob("best-*.ckpt")
    return best


def assert_matches(run_exported, reference: torch.nn.Module, sizes) -> None:
    reference.eval()
    for h, w in sizes:
        for b in BATCHES:
            x = torch.randn(b, 3, h, w)
            with torch.no_grad():
                expected = reference(x)
            torch.testing.assert_close(run_exported(x), expected, rtol=1e-4, atol=1e-4)


def test_onnx_export_of_best_matches_the_checkpoint_in_onnxruntime(run, tmp_path):
    import onnxruntime

    out = tmp_path / "onnx" / "vit.onnx"
    cli = main(args("export", run, "--ckpt_path=best", "--format=onnx", f"--output={out}"))
    assert cli.config.export.ckpt_path == str(best_file(run))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    batch, chans, h, w = session.get_inputs()[0].shape
    assert chans == 3 and all(isinstance(d, str) for d in (batch, h, w))  # symbolic: dynamic
    assert sorted(p.name for p in out.parent.iterdir()) == ["vit.onnx"]  # no temp files left

    def run_onnx(x):
        return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])

    assert_matches(run_onnx, ViTClassifier.load_from_checkpoint(best_file(run)), SIZES)


def test_torch_export_keeps_batch_and_image_size_dynamic(run, tmp_path):
    out = tmp_path / "vit.pt2"
    main(args("export", run, "--ckpt_path=last", "--format=torch.export", f"--output={out}"))
    program = torch.export.load(out).module()
    reference = ViTClassifier.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert_matches(program, reference, SIZES)  # not fixed to the 32x32 it was built for


@pytest.mark.parametrize("fmt", ["onnx", "torch.export"])
def test_a_fixed_size_network_exports_with_a_dynamic_batch(tmp_path, fmt):
    torch.manual_seed(0)
    net = VisionTransformer(
        img_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=1, num_heads=4
    )
    out = tmp_path / f"net.{fmt}"
    checked = export_model(net, (3, 32, 32), out, fmt)
    assert "batch 1 and 3" in checked
    if fmt == "torch.export":
        program = torch.export.load(out).module()
        assert_matches(program, net, [(32, 32)])
        with pytest.raises(Exception, match="32"):  # the size stays the one it was built for
            program(torch.randn(1, 3, 48, 48))
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[1:] == [3, 32, 32]
        x = torch.randn(3, 3, 32, 32)
        got = session.run(None, {"image": x.numpy()})[0]
        np.testing.assert_allclose(got, net.eval()(x).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_an_export_that_does_not_match_leaves_no_file(tmp_path, monkeypatch):
    write = export._write

    def off_by_one(*args):  # an exporter that gets the maths wrong
        run = write(*args)
        return lambda x: run(x) + 1

    monkeypatch.setattr(export, "_write", off_by_one)
    net = VisionTransformer(
        img_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=1, num_heads=4
    )
    out = tmp_path / "net.pt2"
    with pytest.raises(UserError, match=r"differ from the checkpoint's .*nothing was written"):
        export_model(net, (3, 32, 32), out, "torch.export")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_best_is_resolved_for_evaluation_and_predict(run, tmp_path, subcommand):
    out = f"--prediction_writer.output_file={tmp_path / 'preds.csv'}"
    cli = main(args(subcommand, run, "--ckpt_path=best", out))
    assert cli.config[subcommand].ckpt_path == str(best_file(run))
    if subcommand != "predict":
        metric = "val/acc" if subcommand == "validate" else "test/acc"
        assert cli.trainer.callback_metrics[metric] > 0.2  # above the 10% chance: weights loaded


def run_failing(argv: list[str], capsys) -> tuple[int, str]:
    """main(argv) that must fail: its exit code and stderr (the process's, run in this one)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_best_without_a_best_checkpoint_is_named(tmp_path, capsys):
    code, err = run_failing(args("test", tmp_path, "--ckpt_path=best"), capsys)
    assert code == ConfigError.exit_code, err
    assert f"--ckpt_path=best: no best checkpoint in {tmp_path / 'checkpoints'}" in err
    assert "Traceback" not in err
    assert not (tmp_path / "checkpoints").exists()


def test_export_without_a_checkpoint_is_named_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    code, err = run_failing(args("export", tmp_path, "--ckpt_path=last", f"--output={out}"), capsys)
    assert code == ConfigError.exit_code, err
    assert "error: --ckpt_path=last: no" in err and str(tmp_path) in err
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "checkpoints").exists()


def test_export_without_ckpt_path_is_a_usage_error(tmp_path, capsys):
    """Exporting random weights by accident is as useless as evaluating them: only on request."""
    code, err = run_failing(args("export", tmp_path, f"--output={tmp_path / 'm.onnx'}"), capsys)
    assert code == 2 and "export.ckpt_path" in err
    assert list(tmp_path.iterdir()) == []


def fake_checkpoint(path: Path, mode: str = "max", best: str = "", scores=None) -> Path:
    """A file with the callback states `best_checkpoint` reads: a monitoring ModelCheckpoint's and
    a LastCheckpoint's (which monitors nothing and must be ignored)."""
    scores = {str(path.parent / n): torch.tensor(s) for n, s in (scores or {}).items()}
    monitoring = {"monitor": "val/acc", "best_model_path": best, "best_k_models": scores}
    states = {
        MONITOR_KEY % mode: monitoring,
        "LastCheckpoint{'monitor': None}": {"monitor": None, "best_model_path": str(path)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "callbacks": states}, path)
    return path


def test_best_is_the_file_recorded_in_the_newest_checkpoint_even_after_a_move(tmp_path):
    ckpts = tmp_path / "checkpoints"
    fake_checkpoint(ckpts / "best-a.ckpt", scores={"best-a.ckpt": 0.9})  # higher, but not recorded
    fake_checkpoint(ckpts / "best-b.ckpt", scores={"best-b.ckpt": 0.7})
    # written on the cluster, where the run folder was elsewhere
    fake_checkpoint(ckpts / "last.ckpt", best="/cluster/run/checkpoints/best-b.ckpt")
    assert best_checkpoint(tmp_path, ckpts) == ckpts / "best-b.ckpt"


@pytest.mark.parametrize("mode,expected", [("max", "best-b.ckpt"), ("min", "best-a.ckpt")])
def test_without_a_record_the_best_score_wins_in_the_monitors_mode(tmp_path, mode, expected):
    ckpts = tmp_path / "checkpoints"
    fake_checkpoint(ckpts / "best-a.ckpt", mode, scores={"best-a.ckpt": 0.5})
    fake_checkpoint(ckpts / "best-b.ckpt", mode, scores={"best-b.ckpt": 0.7})
    (ckpts / "notes.ckpt").write_text("not a checkpoint")
    assert best_checkpoint(tmp_path) == ckpts / expected


def test_no_best_checkpoint_is_none(tmp_path):
    fake_checkpoint(tmp_path / "checkpoints" / "last.ckpt")  # records no best: nothing monitored
    assert best_checkpoint(tmp_path) is None
