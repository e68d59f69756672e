"""`python -m vit_lightning multirun`: the grid x seeds it plans, the errors it stops on before
writing anything, and (in fresh processes on configs/smoke.yaml, made tiny) the runs it launches
locally and as a SLURM job array against stub executables: done, skipped on a rerun, failed with
its log, and resumed bit-exactly after the launcher was stopped or killed."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, SMOKE
from helpers.cli import cli_command, cli_env, run_cli
from helpers.slurm_stub import SlurmStub

from vit_lightning import cli
from vit_lightning.errors import ConfigError
from vit_lightning.experiments import launchers, multirun
from vit_lightning.experiments.multirun import (
    Experiment,
    expand,
    parse_grid,
    parse_seeds,
    read_spec,
    variant_name,
)
from vit_lightning.run.run_dir import LOCK_FILE

# a few seconds of CPU per fit or test; the rest is the process's start
TINY = [
    "--trainer.max_epochs=1",
    "--data.init_args.train_size=128",
    "--data.init_args.val_size=64",
    "--data.init_args.test_size=64",
]
LR_GRID = ["--grid", "model.lr=1e-3,3e-4"]


def multirun_args(root: Path, *options: str, extra: list[str] = TINY) -> list[str]:
    return ["multirun", "--config", SMOKE, "--root", str(root), *options, "--", *extra]


def in_process(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """`python -m vit_lightning *args` here (the check is in-process anyway): (code, out, err)."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(args))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `folder` with its mtime and bytes."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def status(root: Path, name: str) -> dict:
    return json.loads((root / "runs" / name / "status.json").read_text())


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{a} and {b} differ in {different}"


def poll(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the launcher exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.05)


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The CLI in its own session, so a signal to its group reaches none of pytest's processes."""
    return subprocess.Popen(
        cli_command(*args),
        env=cli_env(env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def reference_fit(root: Path, run: dict, tmp_path: Path) -> Path:
    """The run's own fit command, uninterrupted, in another folder: its last.ckpt."""
    where = str(root / run["dir"])
    other = tmp_path / "reference"
    args = [a.replace(where, str(other)) for a in run["fit"]]
    assert f"--trainer.default_root_dir={other}" in args
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    return other / "checkpoints" / "last.ckpt"


# ---- planning: pure functions ----------------------------------------------------------------


def test_parse_grid_reads_yaml_scalars_and_keeps_the_typed_text():
    grid, raw = parse_grid(
        ["model.net.init_args.depth=4,6", "--model.x=0, 0.1 ,true,null", "config=a.yaml,none"]
    )
    assert grid == {
        "model.net.init_args.depth": [4, 6],
        "model.x": [0, 0.1, True, None],
        "config": ["a.yaml", "none"],
    }
    assert raw["model.x"] == ["0", "0.1", "true", "null"]


@pytest.mark.parametrize(
    "spec, names",
    [
        ("model.lr=", "empty value list for model.lr"),
        ("model.lr=1,,2", "empty value list for model.lr"),
        ("model.lr", "expected KEY=V1,V2"),
        ("=1,2", "expected KEY=V1,V2"),
        ("model.lr=[1,2]", "model.lr"),
    ],
)
def test_parse_grid_refuses_a_malformed_key_or_value_list(spec, names):
    with pytest.raises(ConfigError, match=names.replace("[", r"\[")):
        parse_grid([spec])


def test_parse_grid_refuses_a_key_given_twice():
    with pytest.raises(ConfigError, match="model.lr given twice"):
        parse_grid(["model.lr=1", "model.lr=2"])


def test_parse_seeds():
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("a,b", "1.5", "", "1,1"):
        with pytest.raises(ConfigError, match=f"--seeds {bad!r}"):
            parse_seeds(bad)


def test_variant_names_are_short_unless_two_keys_share_a_last_part():
    assert variant_name({"model.net.init_args.depth": "4", "trainer.max_epochs": "2"}) == (
        "depth=4,max_epochs=2"
    )
    assert variant_name({"model.lr": "1", "data.lr": "2"}) == "model.lr=1,data.lr=2"
    assert variant_name({"config": "configs/overlays/fast.yaml"}) == "config=fast"
    assert variant_name({}) == "base"


def test_expand_gives_every_variant_seed_pair_with_the_extra_args_last(tmp_path):
    grid, raw = parse_grid(["model.net.init_args.depth=4,6", "model.lr=1e-3,3e-4"])
    exp = Experiment(tmp_path / "exp", ["a.yaml"], grid, raw, [0, 1], ["--trainer.max_epochs=1"])
    runs = expand(exp, wandb=True)
    assert [r.name for r in runs] == [
        f"depth={d},lr={lr},seed={s}" for d in (4, 6) for lr in ("1e-3", "3e-4") for s in (0, 1)
    ]
    run = runs[3]  # depth=4, lr=3e-4, seed=1
    assert run.variant == {"model.net.init_args.depth": 4, "model.lr": "3e-4"}
    assert run.dir == "runs/depth=4,lr=3e-4,seed=1"
    assert run.fit == [
        "fit",
        "--config",
        "a.yaml",
        "--model.net.init_args.depth=4",
        "--model.lr=3e-4",
        "--seed_everything=1",
        "--trainer.logger.init_args.group=depth=4,lr=3e-4",
        "--trainer.logger.init_args.job_type=exp",
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path / 'exp' / run.dir}",
        "--ckpt_path=last",
    ]
    assert run.test == ["test", *run.fit[1:-1], "--ckpt_path=best"]
    assert not any("group=" in a for a in expand(exp, wandb=False)[0].fit)


def test_read_spec_gives_the_options_it_stands_for(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "config: a.yaml\ngrid: {model.x: [true, null, 0.1], k: [4]}\nseeds: 3\n"
        "root: out\nargs: [--trainer.max_epochs=2]\nafter: first.yaml\nbaseline: 4\n"
    )
    assert read_spec(str(spec)) == {
        "config": ["a.yaml"],
        "grid": ["model.x=true,null,0.1", "k=4"],
        "seeds": "3",
        "root": "out",
        "args": ["--trainer.max_epochs=2"],
        "after": ["first.yaml"],
        "baseline": "4",
    }


@pytest.mark.parametrize(
    "text, names",
    [
        ("config: a.yaml\nnope: 1\n", "unknown key.*nope"),
        ("- a\n", "expected a mapping"),
        ("grid: {model.lr: 1}\n", "grid must map each key to a list"),
        ("grid: [\n", "not YAML"),
    ],
)
def test_read_spec_refuses_a_bad_file(tmp_path, text, names):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    with pytest.raises(ConfigError, match=f"--spec {spec}: {names}"):
        read_spec(str(spec))


# ---- dry runs, specs and bad input: in-process, nothing launched -----------------------------


def test_dry_run_prints_every_run_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "exp"
    code, out, _ = in_process(capsys, *multirun_args(root, *LR_GRID, "--seeds", "0,1", "--dry_run"))
    assert code == 0
    assert not root.exists()
    lines = out.splitlines()
    assert lines[0] == f"# {root}"
    names = [f"lr={lr},seed={s}" for lr in ("1e-3", "3e-4") for s in (0, 1)]
    assert lines[1::3] == names
    for name, fit, test in zip(names, lines[2::3], lines[3::3], strict=True):
        lr, seed = name.split(",")
        for line, stage, ckpt in ((fit, "fit", "last"), (test, "test", "best")):
            assert line.startswith(f"  python -m vit_lightning {stage} --config {SMOKE} ")
            assert f"--model.{lr} " in line and f"--seed_everything={seed.split('=')[1]} " in line
            assert f"--trainer.logger.init_args.group={lr} " in line  # smoke logs to W&B
            assert f"--trainer.default_root_dir={root}/runs/{name} " in line
            assert line.endswith(f"--ckpt_path={ckpt}")


@pytest.mark.parametrize(
    "options, names",
    [
        (["--grid", "model.nope=1,2"], "run nope=1,seed=0: unrecognized arguments: --model.nope=1"),
        (["--grid", "model.lr=abc,1e-3"], 'run lr=abc,seed=0: Parser key "model.lr"'),
        (["--grid", "model.lr="], "--grid 'model.lr=': empty value list for model.lr"),
        (["--seeds", "0,x"], "--seeds '0,x': expected comma-separated ints"),
        (["--launcher", "slurm", "--slurm.time=1h"], "--slurm.*"),
    ],
)
def test_bad_input_exits_2_with_one_error_line_before_writing(tmp_path, capsys, options, names):
    root = tmp_path / "exp"
    code, out, err = in_process(capsys, *multirun_args(root, *options))
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {names}"), err
    assert not root.exists()


def test_a_root_holding_another_experiment_is_refused(tmp_path, capsys):
    root = tmp_path / "exp"
    exp, _ = multirun.plan(multirun_args(root, *LR_GRID)[1:], cli.check_fit_args)
    root.mkdir()
    (root / multirun.MANIFEST).write_text(json.dumps(exp.manifest("abc")))
    before = snapshot(root)
    # the same experiment continues
    assert in_process(capsys, *multirun_args(root, *LR_GRID, "--dry_run"))[0] == 0
    code, _, err = in_process(capsys, *multirun_args(root, "--grid", "model.lr=1e-3,1e-4"))
    assert code == 2
    assert f"error: --root {root} holds another experiment (grid: " in err
    assert "give a new --root" in err
    assert snapshot(root) == before
    (root / multirun.MANIFEST).unlink()
    (root / "notes.txt").write_text("mine")
    code, _, err = in_process(capsys, *multirun_args(root, *LR_GRID))
    assert (
        code == 2 and f"error: --root {root}: the folder holds files but no experiment.json" in err
    )


def test_two_variants_with_one_run_name_are_refused(tmp_path, capsys):
    overlays = [tmp_path / "a" / "short.yaml", tmp_path / "b" / "short.yaml"]
    for overlay in overlays:
        overlay.parent.mkdir()
        overlay.write_text("trainer:\n  max_epochs: 1\n")
    grid = f"config={overlays[0]},{overlays[1]}"
    code, _, err = in_process(capsys, *multirun_args(tmp_path / "exp", "--grid", grid))
    assert code == 2
    assert err.startswith("error: --grid: two variants share the run name config=short,seed=0")
    assert not (tmp_path / "exp").exists()


def test_a_slurm_submission_that_sbatch_rejects_is_one_error_line(tmp_path, capsys, monkeypatch):
    stub = SlurmStub(tmp_path)
    stub.refuse("Invalid partition name specified")
    monkeypatch.setenv("PATH", stub.env()["PATH"])
    root = tmp_path / "exp"
    code, _, err = in_process(capsys, *multirun_args(root, *LR_GRID, "--launcher", "slurm"))
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # sbatch's own too
    assert len(errors) == 1, err
    assert errors[0].startswith("error: --launcher slurm: sbatch did not take the job array of 2")
    assert "Invalid partition name specified" in errors[0]
    assert not (root / "runs").exists()  # nothing ran, nothing claims to be pending


def test_slurm_jobs_still_queued_or_running_are_read_from_one_sacct_call(tmp_path, monkeypatch):
    stub = SlurmStub(tmp_path)
    for job, state in {"71_0": "RUNNING", "71_1": "COMPLETED", "72_0": "PENDING"}.items():
        (stub.state / "jobs" / job).write_text(state)
    (stub.state / "jobs" / "72_1").write_text("CANCELLED by 1000")
    monkeypatch.setenv("PATH", stub.env()["PATH"])
    assert launchers._slurm_live(["71_0", "71_1", "72_0", "72_1", "73_0"]) == {"71_0", "72_0"}
    calls = (stub.state / "sacct.jsonl").read_text().splitlines()
    assert len(calls) == 1 and {"71", "72", "73"} <= set(json.loads(calls[0]))


def test_a_bad_spec_file_exits_2_naming_the_key(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"config: {SMOKE}\nroot: {tmp_path / 'exp'}\nseed: [0, 1]\n")
    code, _, err = in_process(capsys, "multirun", "--spec", str(spec))
    assert code == 2
    assert err.startswith(f"error: --spec {spec}: unknown key(s) seed; the keys are config, grid")
    assert not (tmp_path / "exp").exists()


def test_a_spec_file_plans_the_same_runs_as_its_options(tmp_path):
    root = tmp_path / "exp"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "config": SMOKE,
                "grid": {"model.lr": ["1e-3", "3e-4"], "model.net.init_args.depth": [1, 2]},
                "seeds": [0, 1],
                "root": str(root),
                "args": TINY[:2],
            }
        )
    )
    options = ["--grid", "model.lr=1e-3,3e-4", "--grid", "model.net.init_args.depth=1,2"]
    by_hand, _ = multirun.plan(
        multirun_args(root, *options, "--seeds", "0,1", extra=TINY[:2])[1:], cli.check_fit_args
    )
    from_spec, _ = multirun.plan(["--spec", str(spec)], cli.check_fit_args)
    assert from_spec.runs == by_hand.runs and len(from_spec.runs) == 8
    assert from_spec.manifest("c") == by_hand.manifest("c")
    # the command line wins; its extra arguments come after the spec's
    other = tmp_path / "other"
    argv = ["--spec", str(spec), "--seeds", "5", "--root", str(other), "--", TINY[2]]
    mixed, _ = multirun.plan(argv, cli.check_fit_args)
    assert mixed.seeds == [5] and mixed.root == other and mixed.extra == [*TINY[:2], TINY[2]]
    assert [r.name for r in mixed.runs] == [
        r.name.replace("seed=0", "seed=5") for r in by_hand.runs if r.seed == 0
    ]
    assert all(r.fit[-3:-1] == [TINY[2], f"--trainer.default_root_dir={other / r.dir}"]
               for r in mixed.runs)  # fmt: skip


def test_spec_after_runs_the_prerequisite_experiment_first(tmp_path, capsys):
    first, second = tmp_path / "teacher.yaml", tmp_path / "student.yaml"
    first.write_text(yaml.safe_dump({"config": SMOKE, "root": str(tmp_path / "t"), "args": TINY}))
    second.write_text(
        yaml.safe_dump(
            {"config": SMOKE, "root": str(tmp_path / "s"), "seeds": [0, 1], "after": str(first)}
        )
    )
    code, out, _ = in_process(capsys, "multirun", "--spec", str(second), "--dry_run")
    assert code == 0
    heads = [line for line in out.splitlines() if line.startswith("# ")]
    assert heads == [f"# {tmp_path / 't'}", f"# {tmp_path / 's'}"]
    assert "seed=0\n" in out.split(heads[1])[0] and "seed=1\n" in out.split(heads[1])[1]
    assert not (tmp_path / "t").exists() and not (tmp_path / "s").exists()
    # a prerequisite that cannot run stops both before anything is written
    first.write_text(yaml.safe_dump({"config": SMOKE, "root": str(tmp_path / "t"), "seeds": "x"}))
    code, _, err = in_process(capsys, "multirun", "--spec", str(second))
    assert code == 2 and err.startswith("error: --seeds 'x'")
    assert not (tmp_path / "s").exists()


# ---- real runs, each a `python -m vit_lightning` process ------------------------------------


def test_a_failed_run_is_named_with_its_log_and_the_others_go_on(tmp_path):
    root = tmp_path / "exp"
    # parses (an int), but embed_dim 64 is not divisible by 5: the fit fails at instantiation
    done = run_cli(*multirun_args(root, "--grid", "model.net.init_args.num_heads=5,4"))
    assert done.returncode == 1, done.stderr[-3000:]
    log = root / "runs" / "num_heads=5,seed=0" / "run.log"
    assert f"failed: num_heads=5,seed=0 (log: {log})" in done.stderr
    assert "embed_dim=64 must be divisible by num_heads=5" in log.read_text()
    bad = status(root, "num_heads=5,seed=0")
    assert bad["state"] == "failed" and bad["fit_rc"] not in (0, None) and bad["test_rc"] is None
    assert status(root, "num_heads=4,seed=0") | {"log": None} == {
        "state": "done", "log": None, "fit_rc": 0, "test_rc": 0
    }  # fmt: skip
    assert "done: num_heads=4,seed=0" in done.stderr


@pytest.mark.slow
def test_a_grid_of_2_variants_x_2_seeds_runs_4_fits_and_tests_and_a_rerun_does_nothing(tmp_path):
    root = tmp_path / "exp"
    args = multirun_args(root, *LR_GRID, "--seeds", "0,1")
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((root / "experiment.json").read_text())
    assert manifest["grid"] == {"model.lr": ["1e-3", "3e-4"]} and manifest["seeds"] == [0, 1]
    assert manifest["configs"] == [SMOKE] and manifest["extra"] == TINY
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert manifest["commit"].startswith(head.stdout.strip())
    names = [f"lr={lr},seed={s}" for lr in ("1e-3", "3e-4") for s in (0, 1)]
    assert [r["name"] for r in manifest["runs"]] == names
    for run in manifest["runs"]:
        folder = root / run["dir"]
        assert run["fit"][0] == "fit" and run["test"][0] == "test"
        assert f"--trainer.default_root_dir={folder}" in run["fit"]
        assert "--trainer.logger.init_args.job_type=exp" in run["fit"]
        assert status(root, run["name"])["state"] == "done"
        results = json.loads((folder / "results.json").read_text())
        assert {"fit", "test"} <= set(results), results
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert config["seed_everything"] == run["seed"]
        assert config["model"]["lr"] == float(run["variant"]["model.lr"])
        assert f"done: {run['name']}" in done.stderr
    before = snapshot(root / "runs")
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [f"skipped: {n}" for n in names] == [
        line for line in again.stderr.splitlines() if line.split(":")[0] in ("skipped", "done")
    ]
    assert snapshot(root / "runs") == before  # no run started: not even a log line


@pytest.mark.slow
def test_a_sigterm_stops_the_multirun_and_a_rerun_resumes_bit_exactly(tmp_path):
    root = tmp_path / "exp"
    # the second run has epochs left when its first one is saved (16 batches each)
    data = ["--data.init_args.train_size=1024", *TINY[2:]]
    args = multirun_args(root, "--grid", "trainer.max_epochs=1,3", extra=data)
    first, second = root / "runs" / "max_epochs=1,seed=0", root / "runs" / "max_epochs=3,seed=0"
    proc = start(*args)
    poll(lambda: (second / "checkpoints" / "last.ckpt").exists(), 300, "first checkpoint", proc)
    proc.send_signal(signal.SIGTERM)  # the launcher only: it passes it on to the fit
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "stopped by SIGTERM: rerun the same command to resume" in err
    assert status(root, first.name)["state"] == "done"
    stopped = status(root, second.name)
    assert stopped["state"] == "pending" and stopped["fit_rc"] == 128 + signal.SIGTERM, stopped
    assert "SIGTERM received: saved" in (second / "run.log").read_text()
    kept = snapshot(first)
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipped: {first.name}" in done.stderr and f"done: {second.name}" in done.stderr
    assert snapshot(first) == kept
    assert status(root, second.name)["state"] == "done"
    assert "Restored all states from the checkpoint" in (second / "run.log").read_text()
    manifest = json.loads((root / "experiment.json").read_text())
    reference = reference_fit(root, manifest["runs"][1], tmp_path)
    assert_same_weights(second / "checkpoints" / "last.ckpt", reference)


@pytest.mark.slow
def test_a_killed_launcher_takes_its_fit_along_and_a_rerun_resumes_bit_exactly(tmp_path):
    root = tmp_path / "exp"
    run = root / "runs" / "seed=0"
    # 3 epochs of 16 batches: an orphaned fit would have seconds of work left
    extra = ["--trainer.max_epochs=3", "--data.init_args.train_size=1024", *TINY[2:]]
    args = multirun_args(root, extra=extra)
    proc = start(*args)
    poll(lambda: (run / "checkpoints" / "last.ckpt").exists(), 300, "first checkpoint", proc)
    fit_pid = json.loads((run / LOCK_FILE).read_text())["pid"]
    os.kill(proc.pid, signal.SIGKILL)  # the launcher alone, as the OOM killer would
    proc.communicate(timeout=60)
    poll(lambda: not alive(fit_pid), 30, "end of the fit once its launcher was killed")
    assert "`Trainer.fit` stopped" not in (run / "run.log").read_text()  # killed, not finished
    assert not (run / "results.json").exists()
    assert status(root, "seed=0")["state"] == "running"  # nobody was left to say otherwise
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert status(root, "seed=0")["state"] == "done"
    assert "Restored all states from the checkpoint" in (run / "run.log").read_text()
    manifest = json.loads((root / "experiment.json").read_text())
    reference = reference_fit(root, manifest["runs"][0], tmp_path)
    assert_same_weights(run / "checkpoints" / "last.ckpt", reference)


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (dead, not yet reaped by whoever adopted it) does not."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_slurm_submits_one_array_and_a_rerun_waits_for_it_or_submits_nothing(tmp_path):
    stub = SlurmStub(tmp_path)
    root = tmp_path / "exp"
    args = multirun_args(root, *LR_GRID, "--launcher", "slurm")
    names = ["lr=1e-3,seed=0", "lr=3e-4,seed=0"]
    try:
        proc = start(*args, env=stub.env())
        # the job ids are recorded at submission; then the launcher dies, the array goes on

        def recorded() -> bool:
            files = [root / "runs" / n / "status.json" for n in names]
            return all(f.exists() and "slurm_job" in json.loads(f.read_text()) for f in files)

        poll(recorded, 120, "job ids in status.json", proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        calls = stub.sbatch_calls()
        assert len(calls) == 1 and "--array=0-1%2" in calls[0]["flags"], calls
        job = calls[0]["job"]
        assert [status(root, n)["slurm_job"] for n in names] == [f"{job}_0", f"{job}_1"]

        again = run_cli(*args, env=stub.env())  # while the tasks run: it waits for them
        assert again.returncode == 0, again.stderr[-3000:]
        for n, task in zip(names, (0, 1), strict=True):
            assert f"still in SLURM: {n} (job {job}_{task}); waiting for it" in again.stdout
            assert f"done: {n}" in again.stderr
            assert status(root, n)["state"] == "done"
        assert "submitted" not in again.stdout and len(stub.sbatch_calls()) == 1
        assert stub.task_states() == {f"{job}_0": "COMPLETED", f"{job}_1": "COMPLETED"}
        for n in names:
            results = json.loads((root / "runs" / n / "results.json").read_text())
            assert {"fit", "test"} <= set(results)

        last = run_cli(*args, env=stub.env())
        assert last.returncode == 0, last.stderr[-3000:]
        assert [f"skipped: {n}" for n in names] == last.stderr.strip().splitlines()[-2:]
        assert len(stub.sbatch_calls()) == 1
    finally:
        stub.kill_all()
