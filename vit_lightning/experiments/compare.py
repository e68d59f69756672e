"""`python -m vit_lightning compare`: a table of mean, spread and 95% intervals per variant.

```bash
python -m vit_lightning compare runs/depth-ablation [--by KEY] [--metric test/acc] [--baseline 4]
python -m vit_lightning compare --spec configs/experiments/fashion_mnist_patch.yaml  # its root
python -m vit_lightning compare runs/a runs/b ...           # run folders (default_root_dirs)
python -m vit_lightning compare --wandb me/vit-lightning --group depth=4 --group depth=6
```

- Inputs: a multirun experiment folder (its `experiment.json` lists the runs), run folders or
  folders holding them (each run: `config.yaml`, the resolved config its fit wrote, and
  `results.json`, RunSummary's record), or a W&B project through `wandb.Api` (a fit run and the
  test run of the same default_root_dir make one record). Either way gives the same table.
- Groups: by the config keys that differ between the runs (the grid's keys for an experiment),
  or by `--by` (a dotted key or its last part). Seeds, folders, W&B names and the other per-run
  settings never make a group (`IGNORED`). A run whose other settings differ from the rest (from
  another base config) is left out and named, as are runs that failed, are unfinished or untested.
- Per group and metric: n, mean, sd and the 95% t interval of the mean; against the baseline
  group (`--baseline`, default the first): the difference, its 95% interval and Welch's t-test
  p-value (scipy.stats, `ttest_ind(equal_var=False)`).
- Output: a Markdown table on stdout; in `--out` (default: the experiment folder) compare.csv,
  compare_runs.csv (one row per run), curves.png (val/acc per epoch, mean and a band of +-1 sd
  over seeds) and dots.png (each run's final value per metric, with the mean and its interval).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vit_lightning.errors import ConfigError, UserError
from vit_lightning.experiments.multirun import BASE_VARIANT, MANIFEST, _short_names, read_spec
from vit_lightning.run.files import write_file

DEFAULT_METRICS = ("test/acc", "val/acc_best", "train/throughput", "fit_seconds")
# per-run settings: where a run writes, its seed, its W&B identity, RunSummary's facts
IGNORED = (
    "seed_everything",
    "ckpt_path",
    "trainer.default_root_dir",
    "data.init_args.loader_seed",
    "*.dirpath",
    "run.*",
    "_*",
    "*._*",
    *(f"trainer.logger.{k}" for k in ("name", "id", "version", "group", "job_type", "save_dir")),
    *(f"trainer.logger.init_args.{k}" for k in ("name", "id", "version", "group", "job_type")),
    "trainer.logger.init_args.save_dir",
    "trainer.logger.init_args.tags",
)
RESULTS, STATUS, CONFIG = "results.json", "status.json", "config.yaml"


@dataclass
class Record:
    """One run: its flat config, final metrics and val/acc curve, or why it is left out."""

    name: str
    config: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val/acc)
    problem: str | None = None
    variant: str | None = None  # its multirun variant's name, read from the experiment folder


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists of mappings get their index as a part."""
    if isinstance(d, dict):
        items = d.items()
    elif isinstance(d, list) and d and all(isinstance(v, dict) for v in d):
        items = ((str(i), v) for i, v in enumerate(d))
    else:
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def ignored(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in IGNORED)


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that can make runs differ: a flat config without per-run keys."""
    root = config.get("trainer.default_root_dir")
    return {
        k: v
        for k, v in config.items()
        if not ignored(k) and not (root and isinstance(v, str) and str(root) in v)
    }


def _value_text(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (dict, list)) or v is None else str(v)


# ---- reading runs --------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _problem(status: dict[str, Any], results: dict[str, Any], tested: bool) -> str | None:
    state, log = status.get("state"), status.get("log")
    where = f", log: {log}" if log else ""
    if state and state != "done":
        rcs = [f"{s} exit {status[f'{s}_rc']}" for s in ("fit", "test") if status.get(f"{s}_rc")]
        return f"{state}{' (' + ', '.join(rcs) + ')' if rcs else ''}{where}"
    fit = results.get("fit")
    if not fit:
        return f"no fit record in {RESULTS} (the fit did not start, or it crashed){where}"
    if not fit.get("finished"):
        return f"unfinished: the fit stopped before max_epochs{where}"
    if tested and not results.get("test"):
        return "not tested: run `test --ckpt_path=best` on it"
    return None


def read_run_folder(folder: Path, tested: bool = True) -> Record:
    """A run's default_root_dir: config.yaml, results.json and (under multirun) status.json."""
    try:
        config = yaml.safe_load((folder / CONFIG).read_text()) or {}
    except OSError:
        config = {}
    results = _read_json(folder / RESULTS)
    fit, test = results.get("fit") or {}, results.get("test") or {}
    metrics = {k: v for k, v in {**fit, **test}.items() if isinstance(v, (int, float))}
    metrics = {k: float(v) for k, v in metrics.items() if not isinstance(v, bool)}
    curve = [(int(p["epoch"]), float(p["val/acc"])) for p in fit.get("val_curve", [])]
    problem = _problem(_read_json(folder / STATUS), results, tested)
    if problem is None and not config:
        problem = f"no {CONFIG}: its fit wrote no resolved config"
    return Record(folder.name, flatten(config), metrics, curve, problem)


def _is_run(folder: Path) -> bool:
    return any((folder / f).is_file() for f in (RESULTS, STATUS, CONFIG))


def read_paths(paths: list[str], tested: bool) -> tuple[list[Record], list[str]]:
    """Records of experiment folders, run folders and folders holding runs; and, for a single
    experiment folder, its grid's keys (the default `--by`)."""
    records, by = [], []
    for text in paths:
        path = Path(text)
        if (path / MANIFEST).is_file():
            manifest = _read_json(path / MANIFEST)
            by = list(manifest.get("grid", {})) if len(paths) == 1 else []
            for run in manifest.get("runs", []):
                record = read_run_folder(path / run["dir"], tested)
                record.name = run["name"]
                record.variant = run["name"].rpartition(f"seed={run['seed']}")[0].rstrip(",")
                record.variant = record.variant or BASE_VARIANT
                records.append(record)
        elif _is_run(path):
            records.append(read_run_folder(path, tested))
        elif path.is_dir():
            found = sorted({p.parent for f in (RESULTS, STATUS) for p in path.rglob(f)})
            if not found:
                raise ConfigError(f"{path}: no runs in it (no {RESULTS} or {STATUS} below it)")
            records += [read_run_folder(f, tested) for f in found]
        else:
            raise ConfigError(f"{path}: no such folder; give an experiment or run folder")
    return records, by


def _cli_config(config: dict[str, Any]) -> dict[str, Any]:
    """A W&B run's config as the CLI resolved it: Lightning also logs the module's and the
    DataModule's hyperparameters at the top level (`lr`, `net`, `batch_size`), copies of
    `model.*` and `data.init_args.*`."""
    model, data = config.get("model") or {}, (config.get("data") or {}).get("init_args") or {}
    return {
        k: v
        for k, v in config.items()
        if not k.startswith("_") and not (k != "seed_everything" and (k in model or k in data))
    }


def read_wandb(runs: list[dict[str, Any]], tested: bool) -> list[Record]:
    """Records from W&B runs (`analysis.runs.api_records`): each fit joined with the last test
    run of its default_root_dir, so the table matches the offline one."""
    fits, tests = {}, {}
    for run in runs:
        root = (run["config"].get("trainer") or {}).get("default_root_dir") or run["id"]
        is_test = any(k.startswith("test/") for k in run["summary"])
        (tests if is_test else fits)[root] = run
    records = []
    for root, fit in fits.items():
        test = tests.get(root, {"summary": {}})
        summary = {**fit["summary"], **test["summary"]}
        metrics = {
            k: float(v)
            for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        by_epoch = {int(r["epoch"]): float(r["val/acc"]) for r in fit["history"] if "val/acc" in r}
        problem = None
        if fit["state"] not in ("finished", "running"):
            problem = f"W&B state {fit['state']} (run {fit['id']})"
        elif not summary.get("fit_finished"):
            problem = f"unfinished: the fit stopped before max_epochs (run {fit['id']})"
        elif tested and "id" not in test:
            problem = f"not tested: no W&B test run for {root}"
        config = flatten(_cli_config(fit["config"]))
        records.append(
            Record(Path(str(root)).name, config, metrics, sorted(by_epoch.items()), problem)
        )
    return records


# ---- grouping and statistics ---------------------------------------------------------------


def resolve_by(by: list[str], records: list[Record]) -> list[str]:
    keys = {k for r in records for k in _settings(r.config)}
    out = []
    for b in by:
        hits = [b] if b in keys else sorted(k for k in keys if k.endswith("." + b))
        if len(hits) != 1:
            what = "matches " + ", ".join(hits) if hits else "is not a config key of these runs"
            raise ConfigError(f"--by {b} {what}; give the full dotted key, e.g. model.lr")
        out.append(hits[0])
    return out


def group(
    records: list[Record], by: list[str] | None, variants: bool = False
) -> tuple[dict[str, list[Record]], list[str], list[Record]]:
    """({label: records}, the keys grouped by, the records left out with their `problem` set).

    Groups by the values of `by` (None: every key that differs between the runs), or with
    `variants`, by each record's multirun variant. A run whose other settings differ from its
    group's (`variants`) or from all runs' (`by`) comes from another base config: left out.
    """
    good = [r for r in records if r.problem is None]
    left = [r for r in records if r.problem is not None]
    settings = {id(r): _settings(r.config) for r in good}
    keys = sorted({k for s in settings.values() for k in s})
    if by is None:  # every key whose value is not the same in all runs
        by = [k for k in keys if len({_value_text(s.get(k)) for s in settings.values()}) > 1]
    short = _short_names(by)

    def label(r: Record) -> str:
        if variants:
            return r.variant or BASE_VARIANT
        values = settings[id(r)]
        return ",".join(f"{short[k]}={_value_text(values.get(k))}" for k in by) or "all"

    rest = keys if variants else [k for k in keys if k not in by]
    groups: dict[str, list[Record]] = {}
    for r in good:
        groups.setdefault(label(r), []).append(r)
    # the settings of the runs a group must share: the most common ones (ties: the first run's)
    scopes = list(groups.values()) if variants else [good]
    for scope in scopes:
        sigs = {id(r): tuple(_value_text(settings[id(r)].get(k)) for k in rest) for r in scope}
        base = Counter(sigs.values()).most_common(1)[0][0] if scope else ()
        for r in list(scope):
            if sigs[id(r)] != base:
                diffs = [
                    f"{k}={a} (the others: {b})"
                    for k, a, b in zip(rest, sigs[id(r)], base, strict=True)
                    if a != b
                ]
                r.problem = "another base config: " + "; ".join(diffs[:3])
                left.append(r)
    groups = {g: [r for r in rs if r.problem is None] for g, rs in groups.items()}
    return {g: rs for g, rs in groups.items() if rs}, by, left


def _sd(values: list[float]) -> float:
    """The sample sd (n-1); exactly 0 for equal values (scipy warns of cancellation there)."""
    return 0.0 if max(values) == min(values) else float(stats().tstd(values))


def stats():  # scipy is slow to import: only when a table is made
    from scipy import stats

    return stats


def describe(values: list[float]) -> dict[str, float | None]:
    """n, mean, sd (n-1) and the 95% t interval of the mean (scipy.stats.t)."""
    n = len(values)
    mean = sum(values) / n if n else None
    sd = _sd(values) if n > 1 else None
    low = high = None
    if n > 1:
        if sd == 0:
            low = high = mean
        else:
            low, high = stats().t.interval(0.95, n - 1, loc=mean, scale=sd / math.sqrt(n))
    return {"n": n, "mean": mean, "sd": sd, "ci_low": low, "ci_high": high}


def versus(values: list[float], base: list[float]) -> dict[str, float | None]:
    """mean(values) - mean(base), its 95% Welch interval and Welch's two-sided p-value
    (scipy.stats.ttest_ind(equal_var=False) and its confidence_interval)."""
    none = {"diff": None, "diff_low": None, "diff_high": None, "p": None}
    if not values or not base:
        return none
    diff = sum(values) / len(values) - sum(base) / len(base)
    if len(values) < 2 or len(base) < 2 or (_sd(values) == 0 and _sd(base) == 0):
        return {**none, "diff": diff}
    test = stats().ttest_ind(values, base, equal_var=False)
    ci = test.confidence_interval(0.95)
    return {"diff": diff, "diff_low": ci.low, "diff_high": ci.high, "p": float(test.pvalue)}


@dataclass
class Table:
    by: list[str]
    baseline: str
    rows: list[dict[str, Any]]  # one per (metric, group)
    groups: dict[str, list[Record]]
    left: list[Record]
    metrics: list[str]


def compare(
    records: list[Record],
    by: list[str] | None,
    metrics: list[str],
    baseline: str | None = None,
    variants: bool = False,
) -> Table:
    """The table: `group` the records (see there), then per metric and group `describe` and
    `versus` the baseline group (its label, or its value for one key; default the first)."""
    groups, by, left = group(records, by, variants)
    if not groups:
        raise UserError(
            "no complete run to compare; left out:\n"
            + "\n".join(f"  {r.name}: {r.problem}" for r in left)
        )
    base = list(groups)[0]
    if baseline is not None:
        hits = [g for g in groups if baseline in (g, g.partition("=")[2])]
        if len(hits) != 1:
            raise ConfigError(
                f"--baseline {baseline}: no such group; the groups: {', '.join(groups)}"
            )
        base = hits[0]
    rows = []
    for metric in metrics:
        base_values = [r.metrics[metric] for r in groups[base] if metric in r.metrics]
        for label, runs in groups.items():
            values = [r.metrics[metric] for r in runs if metric in r.metrics]
            row = {"metric": metric, "group": label, **describe(values)}
            row.update(versus(values, base_values) if label != base else versus([], []))
            rows.append(row)
    return Table(by, base, rows, groups, left, metrics)


# ---- output --------------------------------------------------------------------------------


def _num(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    text = f"{v:+.4f}" if abs(v) < 10 else f"{v:+.1f}"
    return text if signed else text.lstrip("+")


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def markdown(t: Table) -> str:
    by = ", ".join(f"`{k}`" for k in t.by) or "nothing (one group)"
    lines = [
        f"Grouped by {by}; baseline `{t.baseline}`. Mean, sd and 95% t interval over seeds; "
        "the difference from the baseline with its 95% Welch interval and p-value.",
        "",
        "| metric | group | n | mean | sd | 95% CI | Δ vs baseline | 95% CI of Δ | p |",
        "|---|---|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in t.rows:
        ci = f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]" if r["ci_low"] is not None else "-"
        dci = "-"
        if r["diff_low"] is not None:
            dci = f"[{_num(r['diff_low'], True)}, {_num(r['diff_high'], True)}]"
        lines.append(
            f"| {r['metric']} | {r['group']} | {r['n']} | {_num(r['mean'])} | {_num(r['sd'])} "
            f"| {ci} | {_num(r['diff'], True)} | {dci} | {_p(r['p'])} |"
        )
    if t.left:
        lines += ["", f"Left out ({len(t.left)}):"]
        lines += [f"- {r.name}: {r.problem}" for r in t.left]
    return "\n".join(lines) + "\n"


def write_csvs(t: Table, out: Path) -> list[Path]:
    summary, runs = out / "compare.csv", out / "compare_runs.csv"
    for path, header, rows in [
        (summary, list(t.rows[0]), t.rows),
        (
            runs,
            ["group", "run", *t.metrics],
            [
                {"group": g, "run": r.name, **{m: r.metrics.get(m) for m in t.metrics}}
                for g, rs in t.groups.items()
                for r in rs
            ],
        ),
    ]:
        text = _csv_text(header, rows)
        write_file(path, text.encode())
    return [summary, runs]


def _csv_text(header: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def plot(t: Table, out: Path) -> list[Path]:
    """curves.png (val/acc per epoch: mean, +-1 sd band) and dots.png (each run per metric)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, runs in t.groups.items():
        epochs = sorted(set.intersection(*(set(dict(r.curve)) for r in runs)))
        if not epochs:
            continue
        ys = [[dict(r.curve)[e] for r in runs] for e in epochs]
        mean = [sum(y) / len(y) for y in ys]
        sd = [describe(y)["sd"] or 0.0 for y in ys]
        x = [e + 1 for e in epochs]
        (line,) = ax.plot(x, mean, marker="o", label=f"{label} (n={len(runs)})")
        ax.fill_between(
            x,
            [m - s for m, s in zip(mean, sd, strict=True)],
            [m + s for m, s in zip(mean, sd, strict=True)],
            color=line.get_color(),
            alpha=0.2,
        )
    ax.set(xlabel="epoch", ylabel="val/acc", title="validation accuracy: mean, ±1 sd over seeds")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, out / "curves.png"))

    metrics = [m for m in t.metrics if any(r["metric"] == m and r["n"] for r in t.rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, (label, runs) in enumerate(t.groups.items()):
            values = [r.metrics[metric] for r in runs if metric in r.metrics]
            ax.scatter([i] * len(values), values, alpha=0.7, zorder=3)
            row = next(r for r in t.rows if r["metric"] == metric and r["group"] == label)
            if row["ci_low"] is not None:
                ax.errorbar(
                    i + 0.15,
                    row["mean"],
                    yerr=[[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]],
                    fmt="_",
                    color="k",
                    capsize=4,
                )
        ax.set_xticks(range(len(t.groups)), list(t.groups), rotation=20, fontsize=8)
        ax.set_xlim(-0.5, len(t.groups) - 0.5)
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("each run (dots); mean and 95% CI (bars)", fontsize=9)
    fig.tight_layout()
    written.append(_save(fig, out / "dots.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_file(path, buf.getvalue())  # whole or not at all
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vit_lightning compare",
        description="Mean, spread and 95%% intervals per variant; see the module docstring.",
    )
    p.add_argument("paths", nargs="*", help="experiment folders, run folders, or folders of runs")
    p.add_argument("--spec", help="a multirun experiment file: its root and baseline")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from a W&B server")
    p.add_argument("--group", action="append", help="--wandb: only these W&B groups")
    p.add_argument("--job_type", help="--wandb: only this job_type (multirun: the experiment)")
    p.add_argument("--by", action="append", help="group by this config key (repeatable)")
    p.add_argument("--metric", action="append", help=f"default: {', '.join(DEFAULT_METRICS)}")
    p.add_argument("--baseline", help="the group to compare with: its label or its value")
    p.add_argument("--out", help="folder for the CSVs and PNGs (default: the experiment folder)")
    return p


def main(argv: list[str]) -> int:
    """Exit code: 0 a table, 1 nothing complete to compare, 2 bad input."""
    opts = _parser().parse_args(argv)
    metrics = opts.metric or list(DEFAULT_METRICS)
    tested = any(m.startswith("test/") for m in metrics)
    try:
        if opts.spec:
            spec = read_spec(opts.spec)
            opts.paths = opts.paths or [spec["root"]]
            opts.baseline = opts.baseline or spec["baseline"]
        if bool(opts.wandb) == bool(opts.paths):
            raise ConfigError(
                "give run or experiment folders, or --wandb ENTITY/PROJECT (not both)"
            )
        if opts.wandb:
            from vit_lightning.analysis.runs import api_records

            records, by = read_wandb(api_records(opts.wandb, opts.group, opts.job_type), tested), []
        else:
            records, by = read_paths(opts.paths, tested)
        # an experiment's runs group by their variant, unless --by says otherwise
        variants = not opts.by and all(r.variant for r in records) and bool(records)
        by = resolve_by(opts.by, records) if opts.by else (by or None)
        table = compare(records, by, metrics, opts.baseline, variants)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    sys.stdout.write(markdown(table))
    out = opts.out or (
        opts.paths[0]
        if len(opts.paths) == 1 and (Path(opts.paths[0]) / MANIFEST).is_file()
        else None
    )
    if out:
        written = write_csvs(table, Path(out)) + plot(table, Path(out))
        print("\nwrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0
