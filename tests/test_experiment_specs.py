"""Every experiment file in configs/experiments/ plans: its runs (and its `after` experiments')
parse with the CLI's own parser, so a spec that stops parsing fails here, not hours into a run.
The checkpoints a downstream experiment reads are the last.ckpt of a run its `after` makes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from vit_lightning import cli
from vit_lightning.experiments import multirun
from vit_lightning.experiments.compare import flatten
from vit_lightning.run.checkpoints import LAST_CHECKPOINT, checkpoint_dir

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "configs" / "experiments").glob("*.yaml"))
# the config keys that load another run's weights
WEIGHTS = ("model.pretrained", "model.teacher_checkpoint")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the repository's configs and no runs: a spec's paths are
    relative to it, and a local runs/experiments/ (a real experiment) cannot interfere."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_there_are_specs() -> None:
    names = {p.stem for p in SPECS}
    assert {"transfer_pretrain", "transfer", "deit_teacher", "deit", "augment_fit"} <= names


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_spec_plans(spec: Path, workdir: Path) -> None:
    configs: dict[str, dict[str, Any]] = {}  # each checked run's resolved config, by its folder

    def check(args: list[str]) -> dict[str, Any]:
        config = cli.check_fit_args(args)
        configs[config["trainer"]["default_root_dir"]] = flatten(config)
        return config

    stages = multirun.stages(["--spec", str(spec.relative_to(ROOT)), "--dry_run"], check)
    assert stages[-1][0].root == Path(yaml.safe_load(spec.read_text())["root"])
    produced: set[str] = set()  # the last.ckpt of every run of the experiments before this one
    for exp, opts in stages:
        assert exp.runs, f"{spec.name}: {exp.root} has no runs"
        assert opts.dry_run  # the `after` experiments are planned the same way, not run
        for run in exp.runs[:: len(exp.seeds)]:
            config = configs[str(exp.root / run.dir)]
            for key in WEIGHTS:
                if (path := config.get(key)) and "runs/experiments/" in str(path):
                    assert path in produced, (
                        f"{spec.name}: run {run.name} reads {key}={path}, which no `after` "
                        f"experiment writes; they write {sorted(produced) or 'nothing'}"
                    )
        produced |= {
            str(Path(checkpoint_dir(str(exp.root / r.dir))) / LAST_CHECKPOINT) for r in exp.runs
        }


def test_spec_dry_run_exits_0(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = "configs/experiments/deit.yaml"
    with pytest.raises(SystemExit) as e:
        cli.main(["multirun", "--spec", spec, "--dry_run"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    # the teacher first, then the students; dry runs write nothing
    assert out.index("# runs/experiments/deit_teacher") < out.index("# runs/experiments/deit\n")
    assert not (workdir / "runs").exists()


def test_probe_variant_is_the_probe_overlay() -> None:
    """A variant is one overlay file, so the transfer experiment's probe repeats
    configs/overlays/transfer_probe.yaml's keys beside the weights; they must not drift."""
    overlay = flatten(yaml.safe_load((ROOT / "configs/overlays/transfer_probe.yaml").read_text()))
    variant = flatten(
        yaml.safe_load((ROOT / "configs/experiments/transfer/probe.yaml").read_text())
    )
    assert {k: variant.get(k) for k in overlay} == overlay
    assert set(variant) - set(overlay) == {"model.pretrained"}
