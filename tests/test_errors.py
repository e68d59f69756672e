"""One way to fail: a setting that cannot work is a ConfigError wherever it is found (exit 2), a
runtime problem a UserError (exit 1); the CLI prints one `error:` line that names the thing."""

import ast

import pytest
import torch
from helpers import ROOT, smoke_args

from vit_lightning import VisionTransformer
from vit_lightning.cli import main
from vit_lightning.data import SyntheticDataModule
from vit_lightning.errors import ConfigError, UserError
from vit_lightning.run import checkpoints

QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]

# `raise ValueError(` / `raise TypeError(` kept on purpose: (module, function, type) -> why.
# Every other one would be a setting's error in a form the CLI cannot tell from a bug.
PLAIN_RAISES = {
    ("vit_lightning/models/vit.py", "checkpoint_filter_fn", "TypeError"): (
        "a state_dict argument that is no mapping: a wrong argument type in Python, as timm's "
        "function of the same name gives; no setting reaches it"
    ),
    ("vit_lightning/data/sampling.py", "__init__", "TypeError"): (
        "ResumableLoader built around another sampler: the DataModule's own contract, a bug "
        "if it fails, never a user's value"
    ),
}


class _Raises(ast.NodeVisitor):
    """(module, enclosing function, exception) of each `raise ValueError/TypeError`."""

    def __init__(self, module: str) -> None:
        self.module, self.functions, self.found = module, ["<module>"], set()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Raise(self, node: ast.Raise) -> None:
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(exc, ast.Name) and exc.id in ("ValueError", "TypeError"):
            self.found.add((self.module, self.functions[-1], exc.id))


def _plain_raises() -> set[tuple[str, str, str]]:
    found = set()
    for path in sorted((ROOT / "vit_lightning").rglob("*.py")):
        visitor = _Raises(str(path.relative_to(ROOT)))
        visitor.visit(ast.parse(path.read_text()))
        found |= visitor.found
    return found


def test_no_setting_raises_a_plain_value_or_type_error():
    found = _plain_raises()
    assert found - set(PLAIN_RAISES) == set(), "raise ConfigError (a setting) or UserError"
    assert set(PLAIN_RAISES) <= found, "an allowed raise is gone: drop it from PLAIN_RAISES"


def test_a_config_error_is_a_value_error_and_a_user_error_that_names_its_class():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, UserError)
    assert ConfigError.exit_code == 2 and UserError.exit_code == 1
    # plain Python callers (timm-style `except ValueError`) keep working, and see the class
    with pytest.raises(ValueError, match=r"^VisionTransformer: embed_dim=50 must be divisible"):
        VisionTransformer(img_size=32, patch_size=4, embed_dim=50, num_heads=3, depth=1)
    with pytest.raises(ConfigError, match=r"^SyntheticDataModule: in_chans must be 1 or 3"):
        SyntheticDataModule(in_chans=2)


def _fails(capsys, *args: str) -> tuple[int, list[str], str]:
    """Run the CLI in-process on arguments that must stop it: (exit code, `error:` lines, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Union subtypes" not in err and "Given value" not in err
    return exit_info.value.code, [x for x in err.splitlines() if x.startswith("error:")], err


@pytest.mark.parametrize(
    "override,named",
    [
        # a model (network) constructor
        ("--model.net.init_args.num_heads=5", "VisionTransformer: embed_dim=64 must be divisible"),
        ("--model.net.init_args.drop_rate=1.5", "VisionTransformer: drop_rate=1.5 must be in"),
        # a DataModule constructor (subclass mode: jsonargparse wraps what it raises)
        ("--data.batch_size=0", "SyntheticDataModule: batch_size=0 must be >= 1"),
        ("--data.num_classes=1", "SyntheticDataModule: num_classes must be >= 2, got 1"),
        # the LightningModule
        ("--model.label_smoothing=1.5", "ViTClassifier: model.label_smoothing=1.5 must be in"),
        ("--model.layer_decay=2", "model.layer_decay=2.0 must be in (0, 1]"),
        # a callback group's argument
        ("--last_checkpoint.every_n_train_steps=-1", "LastCheckpoint: every_n_train_steps=-1"),
        ("--val_pictures.num_images=0", "ValPictures: every_n_epochs=1 and num_images=0"),
    ],
)
def test_a_bad_setting_exits_2_with_one_error_line_naming_the_class_and_key(
    tmp_path, capsys, override, named
):
    code, errors, err = _fails(capsys, *smoke_args("fit", tmp_path, *QUIET, override))
    assert code == 2 and len(errors) == 1 and named in errors[0], err
    assert not (tmp_path / "config.yaml").exists() and not (tmp_path / "checkpoints").exists()


def test_a_teacher_constructors_error_comes_through_jsonargparses_union(tmp_path, capsys):
    # model.teacher is Optional: jsonargparse reports a failure there over Union[cls, None],
    # chained from the constructor's own error, which is what the CLI prints
    teacher = ["--model.teacher=vit_lightning.models.teachers.ResNet", "--model.distillation=hard"]
    args = smoke_args("fit", tmp_path, *QUIET, *teacher, "--model.teacher.init_args.depth=20")
    code, errors, err = _fails(capsys, *args)
    assert code == 2 and len(errors) == 1 and "ResNet: depth=20 must be 18, 34 or 50" in errors[0]
    # another package's constructor: its ValueError is a value it cannot take, a setting too
    foreign = ["--model.teacher=torch.nn.Dropout", "--model.teacher.init_args.p=2"]
    code, errors, err = _fails(capsys, *smoke_args("fit", tmp_path, *QUIET, *foreign))
    assert code == 2 and len(errors) == 1, err
    assert errors[0].startswith("error: invalid configuration: dropout probability"), err


def test_a_run_check_failure_exits_2_naming_the_key(tmp_path, capsys):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    code, errors, err = _fails(capsys, *smoke_args("test", tmp_path, f"--ckpt_path={folder}"))
    assert code == 2 and len(errors) == 1 and f"--ckpt_path={folder} is a folder" in errors[0]


def test_a_missing_pretrained_file_is_a_setting(tmp_path, capsys):
    missing = tmp_path / "nope" / "weights.safetensors"
    args = smoke_args("fit", tmp_path / "run", *QUIET, f"--model.pretrained={missing}")
    code, errors, err = _fails(capsys, *args)
    assert code == 2 and len(errors) == 1 and f"{missing}: no such file" in errors[0], err


def test_a_corrupt_checkpoint_is_a_runtime_problem_exit_1(tmp_path, capsys):
    good = tmp_path / "good.ckpt"
    checkpoints.AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(64)}}, good)
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(good.read_bytes()[:100])
    code, errors, err = _fails(capsys, *smoke_args("validate", tmp_path, f"--ckpt_path={bad}"))
    assert code == 1 and len(errors) == 1 and str(bad) in errors[0]
    assert "corrupt or truncated" in errors[0]
