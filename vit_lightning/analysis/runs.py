"""Reading runs back: offline W&B run folders, a W&B project through its API, and CSVLogger
folders, each as one dict per run; and the helpers a comparison table needs.

- `read_offline_run` reads an offline run folder with wandb's own `wandb leet inspect --json`;
  `offline_runs` merges the folders of a resumed run; `api_runs` reads a project's runs from
  the server (`api_records`: filtered, for `compare`); `from_csv` reads a CSVLogger folder;
  `local_runs` finds all of them under a folder.
- `series`, `get`, `best`, `fmt` and `table` turn runs into curves and text tables.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from vit_lightning.errors import UserError

Run = dict[str, Any]  # {"name", "config": nested dict, "history": [logged rows], "summary"}

_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _numbers(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _NON_FINITE.get(v, v) if isinstance(v, str) else v for k, v in row.items()}


def _wandb_executable() -> str:
    beside = Path(sys.executable).with_name("wandb")  # the venv's, when PATH lacks it
    found = str(beside) if beside.is_file() else shutil.which("wandb")
    if found is None:
        raise FileNotFoundError(
            "the `wandb` command is not next to this Python nor on PATH; "
            "install wandb (`pip install -U wandb`) to read offline runs"
        )
    return found


def read_offline_run(run_dir: str) -> dict:
    """Config, history rows and summary of an offline run folder (`wandb/offline-run-*`).

    Offline runs keep everything, config included, in `run-<id>.wandb` (no files/config.yaml);
    `wandb leet inspect --json` prints its records as JSON lines. A nested logged value (e.g. a
    `log_image` entry) appears flattened, as wandb does: `val/predictions.filenames`.

    Returns:
        {"id", "group", "job_type", "tags", "config": nested dict, "history": [row dicts],
        "summary": dict}.
    """
    files = sorted(glob.glob(os.path.join(run_dir, "run-*.wandb")))
    if not files:
        raise FileNotFoundError(
            f"no run-*.wandb file in {run_dir}; pass an offline W&B run folder, "
            "e.g. <default_root_dir>/wandb/offline-run-<time>-<id>"
        )
    cmd = [_wandb_executable(), "leet", "inspect", "--json", files[0]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed on {run_dir} ({proc.stderr.strip()[-500:]}); reading "
            "offline runs needs a wandb with `wandb leet inspect --json` (0.31 has it): "
            "`pip install -U wandb`"
        )
    run = {
        "id": None,
        "group": "",
        "job_type": "",
        "tags": [],
        "config": {},
        "history": [],
        "summary": {},
    }
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        body = rec.get(rec.get("type"), {})
        if rec.get("type") == "run":
            run.update(id=body.get("run_id"), group=body.get("run_group", ""))
            run.update(job_type=body.get("job_type", ""), tags=body.get("tags", []))
            run["config"].update(body.get("config", {}).get("update", {}))
        elif rec.get("type") == "config":
            run["config"].update(body.get("update", {}))
        elif rec.get("type") == "history":
            run["history"].append(_numbers(body.get("item", {})))
        elif rec.get("type") == "summary":
            run["summary"].update(_numbers(body.get("update", {})))
    return run


def api_runs(path: str) -> list[dict]:
    """Every run of a W&B project ("entity/project") through `wandb.Api()`.

    Returns:
        One dict per run, shaped like `offline_runs`'s: {"name": "<name> (<id>)", "config",
        "history": every logged row, "summary"}.
    """
    import wandb

    return [
        {
            "name": f"{r.name} ({r.id})",
            "config": r.config,
            "history": list(r.scan_history()),
            "summary": r.summary_metrics,
        }
        for r in wandb.Api().runs(path)
    ]


def api_records(
    path: str, groups: Sequence[str] | None = None, job_type: str | None = None
) -> list[dict[str, Any]]:
    """The runs of a W&B project ("entity/project"), optionally only some groups or a job_type,
    with what `compare` needs: {"id", "name", "state", "group", "job_type", "config",
    "summary", "history": the rows that logged val/acc}."""
    import wandb

    filters: dict[str, Any] = {}
    if groups:
        filters["group"] = {"$in": list(groups)}
    if job_type:
        filters["jobType"] = job_type
    try:
        runs = list(wandb.Api(timeout=30).runs(path, filters=filters))
    except (wandb.errors.CommError, ValueError) as e:
        raise UserError(f"W&B project {path}: cannot read its runs ({e})") from e
    return [
        {
            "id": r.id,
            "name": r.name,
            "state": r.state,
            "group": r.group,
            "job_type": r.job_type,
            "config": dict(r.config),
            "summary": dict(r.summary_metrics),
            "history": list(r.scan_history(keys=["epoch", "val/acc"])),
        }
        for r in runs
    ]


def offline_runs(dirs: list[str]) -> list[dict]:
    """Offline W&B runs; folders of one resumed run (same id) are merged in time order.

    A resumed run keeps its id but writes a new `offline-run-<time>-<id>` folder: its history
    is appended, and its config and summary update the earlier ones.

    Returns:
        One dict per run id, in order of first appearance: {"name": "<default_root_dir's name>
        (<id>)", "config", "history", "summary"}.
    """
    runs: dict[str, dict] = {}
    for d in sorted(map(Path, dirs), key=lambda d: d.name):  # offline-run-<time>-<id>
        r = read_offline_run(str(d))
        name = f"{d.parents[1].name} ({r['id']})"  # <default_root_dir>/wandb/offline-run-*
        run = runs.setdefault(r["id"], {"name": name, "config": {}, "history": [], "summary": {}})
        run["config"].update(r["config"])
        run["history"] += r["history"]
        run["summary"].update(r["summary"])
    return list(runs.values())


def from_csv(metrics_csv: str | Path) -> Run:
    """A CSVLogger folder: metrics.csv, and hparams.yaml with the config (the CLI logs it)."""
    folder = Path(metrics_csv).parent
    with open(metrics_csv, newline="") as f:
        history = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    for row in history:
        if "step" in row:
            row["trainer/global_step"] = row.pop("step")  # the name W&B uses
    hparams = folder / "hparams.yaml"
    config = (yaml.safe_load(hparams.read_text()) if hparams.is_file() else None) or {}
    summary = {k: v for row in history for k, v in row.items()}  # last value of each key
    summary.update(config.get("run") or {})  # params, device, ... (RunSummary)
    name = "/".join(folder.parts[-3:])  # <save_dir>/<name>/version_<n>
    return {"name": name, "config": config, "history": history, "summary": summary}


def local_runs(runs_dir: str) -> list[Run]:
    """Offline W&B runs and CSVLogger logs anywhere under `runs_dir` (a folder or a glob)."""
    roots = sorted(glob.glob(os.path.expanduser(runs_dir))) or [runs_dir]

    def find(pattern: str) -> list[str]:
        hits = (glob.glob(os.path.join(root, "**", pattern), recursive=True) for root in roots)
        return sorted({path for paths in hits for path in paths})

    offline = [d for d in find("offline-run-*") if os.path.isdir(d)]
    return offline_runs(offline) + [from_csv(f) for f in find("metrics.csv")]


def series(run: Run, key: str, x: str) -> tuple[list[Any], list[Any]]:
    """The (x, key) points of a run's history, sorted by x; rows missing either are skipped."""
    points = sorted(
        (row[x], row[key])
        for row in run["history"]
        if row.get(key) is not None and row.get(x) is not None
    )
    return [p[0] for p in points], [p[1] for p in points]


def get(d: Any, dotted: str) -> Any:
    """`d["a"]["b"]` for "a.b", or None where a part is missing."""
    for part in dotted.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return None
        d = d[part]
    return d


def best(run: Run, key: str = "val/acc") -> Any:
    """The summary's `<key>_best`, else the largest value of `key` in the history (or None)."""
    values = [row[key] for row in run["history"] if row.get(key) is not None]
    return run["summary"].get(key + "_best", max(values, default=None))


def fmt(v: Any) -> str:
    """A table cell: "-" for None, 4 significant digits (whole numbers from 100), 1,234 for ints."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.0f}" if v >= 100 else f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def table(runs: Sequence[Run], columns: Mapping[str, Callable[[Run], Any]]) -> str:
    """A text table of `columns` (header: value of a run), one row per run, best val/acc first."""
    rows = [
        [fmt(value(run)) for value in columns.values()]
        for run in sorted(runs, key=lambda r: best(r) or 0, reverse=True)
    ]
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(columns)]
    lines = [list(columns), ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
