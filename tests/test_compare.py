"""`python -m vit_lightning compare`: its statistics against a hand calculation, what it leaves
out, its files, and the same table from run folders and from a (recorded) W&B API."""

import csv
import glob
import json
import math
from pathlib import Path

import pytest
import yaml
from scipy import stats

from vit_lightning import cli
from vit_lightning.analysis import runs as readers
from vit_lightning.experiments import compare

BASE = {
    "seed_everything": 0,
    "model": {"lr": 1e-3, "net": {"init_args": {"depth": 4, "embed_dim": 64}}},
    "trainer": {"max_epochs": 3, "default_root_dir": None, "logger": {"init_args": {}}},
}
# test/acc per (depth, seed): known numbers for the hand calculation
ACC = {4: [0.80, 0.82, 0.84], 6: [0.85, 0.88, 0.86]}


def hand_interval(x: list[float]) -> tuple[float, float, float, float]:
    """mean, sd and the 95% t interval, from the textbook formulas."""
    n = len(x)
    mean = sum(x) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def hand_welch(a: list[float], b: list[float]) -> tuple[float, float, float, float]:
    """mean(a) - mean(b), its 95% Welch interval and two-sided p (Welch-Satterthwaite df)."""
    (ma, sa, _, _), (mb, sb, _, _) = hand_interval(a), hand_interval(b)
    va, vb = sa**2 / len(a), sb**2 / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = (ma - mb) / se
    half = stats.t.ppf(0.975, df) * se
    return ma - mb, ma - mb - half, ma - mb + half, 2 * stats.t.sf(abs(t), df)


def write_run(folder: Path, depth: int, seed: int, acc: float, **changes) -> Path:
    """A run folder as a finished fit + test leaves it: config.yaml, results.json, status.json."""
    folder.mkdir(parents=True)
    config = json.loads(json.dumps(BASE))
    config["seed_everything"] = seed
    config["model"]["net"]["init_args"]["depth"] = depth
    config["trainer"]["default_root_dir"] = str(folder)
    config["trainer"]["logger"]["init_args"] = {"group": f"depth={depth}", "name": f"s{seed}"}
    for key, value in changes.items():
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    curve = [{"epoch": e, "step": 10 * e, "val/acc": acc - 0.1 + 0.05 * e} for e in range(3)]
    fit = {
        "finished": True,
        "fit_seconds": 100.0 + depth + seed,
        "train/throughput": 1000.0 / depth,
        "val/acc_best": acc - 0.01,
        "val_curve": curve,
    }
    results = {"fit": fit, "test": {"test/acc": acc, "ckpt_path": "x.ckpt"}}
    (folder / "results.json").write_text(json.dumps(results))
    status = {"state": "done", "log": str(folder / "run.log"), "fit_rc": 0, "test_rc": 0}
    (folder / "status.json").write_text(json.dumps(status))
    return folder


def write_experiment(root: Path) -> list[Path]:
    """A multirun experiment folder over depth 4, 6 and seeds 0, 1, 2."""
    runs, folders = [], []
    for depth, accs in ACC.items():
        for seed, acc in enumerate(accs):
            name = f"depth={depth},seed={seed}"
            folders.append(write_run(root / "runs" / name, depth, seed, acc))
            runs.append(
                {
                    "name": name,
                    "variant": {"model.net.init_args.depth": depth},
                    "seed": seed,
                    "dir": f"runs/{name}",
                    "fit": [],
                    "test": [],
                }
            )
    manifest = {
        "version": 1,
        "grid": {"model.net.init_args.depth": [4, 6]},
        "seeds": [0, 1, 2],
        "configs": ["c.yaml"],
        "extra": [],
        "runs": runs,
    }
    (root / "experiment.json").write_text(json.dumps(manifest))
    return folders


def row(table: compare.Table, metric: str, group: str) -> dict:
    return next(r for r in table.rows if r["metric"] == metric and r["group"] == group)


def test_describe_and_versus_match_a_hand_calculation():
    a, b = ACC[6], ACC[4]
    got = compare.describe(a)
    mean, sd, low, high = hand_interval(a)
    assert got["n"] == 3
    assert (got["mean"], got["sd"]) == pytest.approx((mean, sd), abs=1e-12)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high), abs=1e-12)
    # the t quantile for n=3 is 4.303: the interval is wide, as it should be
    assert high - low == pytest.approx(2 * 4.302652729911275 * sd / math.sqrt(3), rel=1e-9)
    diff, dlow, dhigh, p = hand_welch(a, b)
    v = compare.versus(a, b)
    assert v["diff"] == pytest.approx(diff, abs=1e-12)
    assert (v["diff_low"], v["diff_high"]) == pytest.approx((dlow, dhigh), abs=1e-9)
    assert v["p"] == pytest.approx(p, rel=1e-9)
    assert 0.01 < v["p"] < 0.05  # 0.85/0.88/0.86 vs 0.80/0.82/0.84: a real difference
    # one run: a mean, but no spread and no test
    assert compare.describe([0.5]) == {
        "n": 1,
        "mean": 0.5,
        "sd": None,
        "ci_low": None,
        "ci_high": None,
    }
    assert compare.versus([0.5], b)["p"] is None


def test_an_experiment_folder_gives_the_table_the_csv_and_the_pictures(tmp_path, capsys):
    write_experiment(tmp_path)
    with pytest.raises(SystemExit) as exit:
        cli.main(["compare", str(tmp_path), "--baseline", "4"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    mean, sd, low, high = hand_interval(ACC[6])
    diff, dlow, dhigh, p = hand_welch(ACC[6], ACC[4])
    assert "baseline `depth=4`" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("| test/acc | depth=6 |"))
    assert f"| 3 | {mean:.4f} | {sd:.4f} | [{low:.4f}, {high:.4f}] | {diff:+.4f} |" in line
    assert f"[{dlow:+.4f}, {dhigh:+.4f}] | {p:.2g} |" in line
    assert "| test/acc | depth=4 | 3 | 0.8200 | 0.0200 |" in out
    for metric in compare.DEFAULT_METRICS:
        assert f"| {metric} | depth=6 |" in out
    with open(tmp_path / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    got = next(r for r in rows if r["metric"] == "test/acc" and r["group"] == "depth=6")
    assert float(got["mean"]) == pytest.approx(mean) and float(got["p"]) == pytest.approx(p)
    with open(tmp_path / "compare_runs.csv") as f:
        per_run = list(csv.DictReader(f))
    assert [float(r["test/acc"]) for r in per_run] == ACC[4] + ACC[6]
    for png in ("curves.png", "dots.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_crashed_unfinished_and_foreign_runs_are_named_and_left_out(tmp_path, capsys):
    folders = write_experiment(tmp_path)
    crashed = folders[1]  # depth=4, seed=1 (0.82)
    status = {"state": "failed", "log": str(crashed / "run.log"), "fit_rc": 1, "test_rc": None}
    (crashed / "status.json").write_text(json.dumps(status))
    unfinished = folders[3]  # depth=6, seed=0
    results = json.loads((unfinished / "results.json").read_text())
    results["fit"]["finished"] = False
    del results["test"]
    (unfinished / "results.json").write_text(json.dumps(results))
    foreign = folders[5]  # depth=6, seed=2: another embed_dim, i.e. another base config
    config = yaml.safe_load((foreign / "config.yaml").read_text())
    config["model"]["net"]["init_args"]["embed_dim"] = 96
    (foreign / "config.yaml").write_text(yaml.safe_dump(config))

    records, by = compare.read_paths([str(tmp_path)], tested=True)
    table = compare.compare(records, by, ["test/acc"], variants=True)
    assert row(table, "test/acc", "depth=4")["n"] == 2
    assert row(table, "test/acc", "depth=4")["mean"] == pytest.approx((0.80 + 0.84) / 2)
    assert row(table, "test/acc", "depth=6")["n"] == 1  # seed 1 only
    left = {r.name: r.problem for r in table.left}
    assert set(left) == {"depth=4,seed=1", "depth=6,seed=0", "depth=6,seed=2"}
    assert left["depth=4,seed=1"].startswith("failed (fit exit 1)")
    assert str(crashed / "run.log") in left["depth=4,seed=1"]
    assert left["depth=6,seed=0"].startswith("unfinished")
    assert "model.net.init_args.embed_dim=96 (the others: 64)" in left["depth=6,seed=2"]
    text = compare.markdown(table)
    assert "Left out (3):" in text and "- depth=4,seed=1: failed (fit exit 1)" in text


def test_run_folders_group_by_the_keys_that_differ_or_by(tmp_path):
    for depth, accs in ACC.items():
        for seed, acc in enumerate(accs):
            write_run(tmp_path / f"d{depth}s{seed}", depth, seed, acc, **{"model.lr": 1e-3 * seed})
    records, _ = compare.read_paths([str(tmp_path)], tested=True)
    # lr differs with the seed too, so both keys group, one run per group
    groups, by, _ = compare.group(records, None)
    assert by == ["model.lr", "model.net.init_args.depth"] and len(groups) == 6
    # --by depth (its last part): lr is then "another base config", except for the common one
    by = compare.resolve_by(["depth"], records)
    assert by == ["model.net.init_args.depth"]
    groups, _, left = compare.group(records, by)
    assert {g: len(rs) for g, rs in groups.items()} == {"depth=4": 1, "depth=6": 1}
    assert len(left) == 4 and all("model.lr" in r.problem for r in left)


def test_bad_input_is_named_with_the_fix(tmp_path, capsys):
    write_experiment(tmp_path)
    assert compare.main([str(tmp_path / "nope")]) == 2
    assert "nope: no such folder" in capsys.readouterr().err
    assert compare.main([str(tmp_path), "--by", "widths"]) == 2
    assert "--by widths is not a config key" in capsys.readouterr().err
    assert compare.main([str(tmp_path), "--baseline", "5"]) == 2
    assert "the groups: depth=4, depth=6" in capsys.readouterr().err
    assert compare.main([]) == 2
    for folder in (tmp_path / "runs").iterdir():
        (folder / "status.json").write_text(json.dumps({"state": "pending"}))
    assert compare.main([str(tmp_path)]) == 1
    assert "no complete run to compare" in capsys.readouterr().err


class RecordedRun:
    """A `wandb.apis.public.Run` as far as `api_records` reads it, replayed from an offline run."""

    def __init__(self, offline: dict, state: str = "finished") -> None:
        self.id, self.name, self.state = offline["id"], offline["name"], state
        self.group, self.job_type = offline["group"], offline["job_type"]
        self.config, self.summary_metrics = offline["config"], offline["summary"]
        self._history = offline["history"]

    def scan_history(self, keys: list[str]) -> list[dict]:
        return [{k: r[k] for k in keys} for r in self._history if all(k in r for k in keys)]


class RecordedApi:
    """`wandb.Api()` over recorded runs, applying the group/jobType filters as the server does."""

    calls: list = []

    def __init__(self, runs: list[RecordedRun]) -> None:
        self._runs = runs

    def __call__(self, timeout: int = 0) -> "RecordedApi":
        return self

    def runs(self, path: str, filters: dict) -> list[RecordedRun]:
        self.calls.append((path, filters))
        groups = filters.get("group", {}).get("$in")
        return [
            r
            for r in self._runs
            if (groups is None or r.group in groups)
            and filters.get("jobType", r.job_type) == r.job_type
        ]


def test_offline_folders_and_the_wandb_api_give_the_same_table(tmp_path, capsys, monkeypatch):
    root = tmp_path / "exp"
    tiny = [
        "--trainer.max_epochs=2",
        "--data.init_args.train_size=64",
        "--data.init_args.val_size=32",
        "--data.init_args.test_size=32",
    ]
    argv = [
        "multirun",
        "--config",
        "configs/smoke.yaml",
        "--grid",
        "model.lr=1e-3,3e-3",
        "--seeds",
        "0,1",
        "--root",
        str(root),
        "--",
        *tiny,
    ]
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 0
    assert capsys.readouterr().err.count("done: ") == 4
    results = sorted(root.glob("runs/*/results.json"))
    assert len(results) == 4 and all(json.loads(p.read_text())["test"] for p in results)
    before = {p: p.stat().st_mtime_ns for p in root.glob("runs/**/*") if p.is_file()}
    with pytest.raises(SystemExit) as exit:  # the same experiment again: nothing to do
        cli.main(argv)
    assert exit.value.code == 0
    assert capsys.readouterr().err.count("skipped: ") == 4
    assert {p: p.stat().st_mtime_ns for p in root.glob("runs/**/*") if p.is_file()} == before

    assert compare.main([str(root), "--out", str(tmp_path / "offline")]) == 0
    offline = capsys.readouterr().out
    assert "| test/acc | lr=1e-3 | 2 |" in offline and "| test/acc | lr=3e-3 | 2 |" in offline

    # every run's W&B records (fit and test runs), read back from the offline files
    recorded = []
    for folder in sorted(glob.glob(str(root / "runs" / "*" / "wandb" / "offline-run-*"))):
        run = readers.read_offline_run(folder)
        run["name"] = "smoke"
        recorded.append(RecordedRun(run))
    assert len(recorded) == 8
    recorded.append(RecordedRun({**run, "id": "other", "group": "elsewhere"}))  # filtered out
    api = RecordedApi(recorded)
    monkeypatch.setattr("wandb.Api", api)
    args = ["--wandb", "me/vit", "--group", "lr=1e-3", "--group", "lr=3e-3", "--job_type", "exp"]
    assert compare.main([*args, "--by", "model.lr", "--out", str(tmp_path / "online")]) == 0
    online = capsys.readouterr().out
    assert api.calls[-1] == ("me/vit", {"group": {"$in": ["lr=1e-3", "lr=3e-3"]}, "jobType": "exp"})
    # the offline side groups the experiment by its variants (named as typed: 1e-3), W&B by the
    # config values (0.001): the same rows once the labels agree
    assert compare.main([str(root), "--by", "model.lr"]) == 0
    offline_by = capsys.readouterr().out

    def cells(text: str) -> list[list[str]]:
        return [ln.split(" | ") for ln in text.splitlines() if ln.startswith("| ")]

    # W&B keeps the logged throughput as float32, the run's record as float64: equal to 1e-6
    same, close = [], []
    for a, b in zip(cells(offline_by), cells(online), strict=True):
        (close if a[0] == "| train/throughput" else same).append((a, b))
    assert len(same) == 1 + 2 * 3 and all(a == b for a, b in same)
    for a, b in close:
        assert a[:3] == b[:3] and float(a[3]) == pytest.approx(float(b[3]), rel=1e-6)
    assert offline_by.replace(cells(offline_by)[0][0], "") == offline.replace(
        cells(offline)[0][0], ""
    ).replace("1e-3", "0.001").replace("3e-3", "0.003")
    with open(tmp_path / "offline" / "compare.csv") as f:
        assert len(list(csv.DictReader(f))) == len(compare.DEFAULT_METRICS) * 2
