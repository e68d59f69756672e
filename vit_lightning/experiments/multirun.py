"""`python -m vit_lightning multirun`: one experiment = a base config x a grid of variants x seeds.

```bash
python -m vit_lightning multirun --spec configs/experiments/fashion_mnist_patch.yaml  # or:
python -m vit_lightning multirun --config configs/fashion_mnist.yaml \
    --grid model.net.init_args.depth=4,6 --grid model.net.init_args.drop_path_rate=0,0.1 \
    --seeds 0,1,2 --root runs/depth-ablation [--launcher local|local-gpus|slurm] [--dry_run] \
    [-- <more fit overrides>]
```

- `--spec FILE` holds the same options as YAML (`read_spec`); options also given on the command
  line win, and its `args` come before the ones after `--`. Its `after` names experiment files to
  run first, with the same launcher (e.g. a teacher for its students); a failure there stops it.
  Paths in a spec are relative to the working directory, as on the command line.
- Each `--grid KEY=V1,V2` is one dotted key of the fit config and its values (YAML scalars); several
  keys form their product. `--grid config=A.yaml,B.yaml,none` makes a variant of each overlay
  file on the base configs (`none`: the base alone), named by the file's stem. Each (variant, seed) is one normal `fit --ckpt_path=last`, then `test
  --ckpt_path=best`, each a `python -m vit_lightning` process in its own default_root_dir,
  `<root>/runs/<name>`, named like `depth=4,drop_path_rate=0.1,seed=0`.
- `<root>/experiment.json` records the configs, grid, seeds, extra arguments, commit and every
  run's command lines. Each run folder gets `status.json` (`done`, `failed`, `running`, `pending`,
  the exit codes and the log's path) and `run.log` (the fit's and test's output).
- With a WandbLogger, each run's W&B `group` is its variant's name and `job_type` the experiment's
  (the root folder's name), so W&B groups the seeds of a variant too.
- Launchers: `local` runs one after another; `local-gpus` runs one per GPU at a time
  (`CUDA_VISIBLE_DEVICES`; `--gpus 0,1` or all that torch sees); `slurm` submits one job array
  through submitit, one task per run (`--slurm.partition`, `--slurm.time` in minutes,
  `--slurm.gpus_per_task`, `--slurm.cpus_per_task`, `--slurm.mem_gb`, `--slurm.parallelism`).
- Running the same command again skips the runs that are done and resumes the others from their
  last.ckpt (`--ckpt_path=last`); a failed run is named with its log, the others go on, and the
  exit code is 1. `--dry_run` prints the runs and their command lines and writes nothing.
- SIGTERM or SIGINT stops a local multirun after the run in progress saved (exit 128 + signal);
  a killed one takes its run's process along. Under `slurm` each run's `status.json` records its
  task's job id, and a rerun waits for a task still queued or running instead of resubmitting it.
- Bad input stops it before anything runs (exit 2, one `error:` line): a key the config does not
  have, a value of the wrong type, an empty grid, a root folder that holds another experiment.

`python -m vit_lightning compare <root>` (or `--spec FILE`) reads this folder into a table
of means and confidence intervals (`vit_lightning.experiments.compare`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vit_lightning.errors import ConfigError, UserError
from vit_lightning.run.files import write_file

MANIFEST = "experiment.json"
# what makes two invocations the same experiment (the commit and the command lines may move)
SAME_EXPERIMENT = ("configs", "grid", "seeds", "extra")
BASE_VARIANT = "base"
# `--grid config=a.yaml,b.yaml,none`: a variant per overlay file on the base configs (none: none)
CONFIG_KEY, NO_CONFIG = "config", "none"  # the variant's name when there is no grid, only seeds

# `check(fit_args) -> resolved config`: the CLI's own parser; it raises ConfigError
Check = Callable[[list[str]], dict[str, Any]]


@dataclass
class Run:
    name: str  # also its folder under <root>/runs
    variant: dict[str, Any]
    seed: int
    dir: str  # relative to the experiment root
    fit: list[str]  # argv after `python -m vit_lightning`
    test: list[str]

    def folder(self, root: Path) -> Path:
        return root / self.dir


@dataclass
class Experiment:
    root: Path
    configs: list[str]
    grid: dict[str, list[Any]]
    raw_grid: dict[str, list[str]]  # the values as typed: they go on the command lines
    seeds: list[int]
    extra: list[str]
    runs: list[Run] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.root.resolve().name

    def manifest(self, commit: str) -> dict[str, Any]:
        runs = [
            {k: getattr(r, k) for k in ("name", "variant", "seed", "dir", "fit", "test")}
            for r in self.runs
        ]
        return {
            "version": 1,
            "name": self.name,
            "configs": self.configs,
            "grid": self.grid,
            "seeds": self.seeds,
            "extra": self.extra,
            "commit": commit,
            "runs": runs,
        }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vit_lightning multirun",
        description="Fit and test every (variant, seed) of a grid; see the module docstring.",
    )
    p.add_argument("--spec", help="an experiment file: its keys are this command's options")
    p.add_argument("--config", action="append", help="base config (repeatable)")
    p.add_argument("--grid", action="append", help="KEY=V1,V2 (repeatable)")
    p.add_argument("--seeds", help="comma-separated ints (default 0)")
    p.add_argument("--root", help="the experiment folder")
    p.add_argument("--launcher", choices=("local", "local-gpus", "slurm"), default="local")
    p.add_argument("--gpus", help="local-gpus: device ids, e.g. 0,1 (default: every visible GPU)")
    p.add_argument("--dry_run", action="store_true", help="print the runs, write nothing")
    for key, default, help in SLURM_OPTIONS:
        p.add_argument(f"--slurm.{key}", dest=f"slurm_{key}", default=default, help=help)
    return p


# (option, default, help): the submitit parameters multirun exposes; see launchers.slurm
SLURM_OPTIONS: tuple[tuple[str, Any, str], ...] = (
    ("partition", None, "SLURM partition"),
    ("time", "60", "time limit per task, minutes"),
    ("gpus_per_task", "1", "GPUs per task (0 for none)"),
    ("cpus_per_task", "8", "CPUs per task"),
    ("mem_gb", None, "memory per task, GB"),
    ("parallelism", "256", "tasks of the array running at once"),
)


SPEC_KEYS = ("config", "grid", "seeds", "root", "args", "after", "baseline")


def _text(value: Any) -> str:
    """A YAML scalar as it would be typed on a command line."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def read_spec(path: str) -> dict[str, Any]:
    """An experiment file, as the options it stands for:

    ```yaml
    config: [configs/fashion_mnist.yaml]        # or one path
    grid: {model.net.init_args.patch_size: [4, 7]}
    seeds: [0, 1, 2]
    root: runs/experiments/patch
    args: [--trainer.max_epochs=3]              # more fit overrides (after `--`)
    after: [configs/experiments/teacher.yaml]   # experiments to run first (e.g. a teacher)
    baseline: 4                                 # compare's --baseline (`compare --spec FILE`)
    ```
    """
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"--spec {path}: cannot read it ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"--spec {path}: not YAML ({e})") from e
    if not isinstance(spec, dict):
        raise ConfigError(f"--spec {path}: expected a mapping with keys {', '.join(SPEC_KEYS)}")
    if unknown := sorted(set(spec) - set(SPEC_KEYS)):
        raise ConfigError(
            f"--spec {path}: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(SPEC_KEYS)}"
        )
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise ConfigError(f"--spec {path}: grid must map each key to a list of values")
    configs, seeds, args = spec.get("config"), spec.get("seeds"), spec.get("args") or []
    after = spec.get("after")
    seeds = (
        None if seeds is None else ",".join(map(str, seeds if isinstance(seeds, list) else [seeds]))
    )
    return {
        "config": [configs] if isinstance(configs, str) else configs,
        "grid": [f"{k}={','.join(_text(v) for v in vs)}" for k, vs in grid.items()],
        "seeds": seeds,
        "root": spec.get("root"),
        "args": [str(a) for a in args],
        "baseline": None if spec.get("baseline") is None else _text(spec["baseline"]),
        "after": [str(a) for a in after] if isinstance(after, list) else [str(after)] * bool(after),
    }


def _yaml_scalar(text: str, what: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what}: {text!r} is not a YAML scalar ({e})") from e
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{what}: {text!r} is not a scalar; give one value per comma")
    return value


def parse_grid(specs: list[str]) -> tuple[dict[str, list[Any]], dict[str, list[str]]]:
    """`["a.b=1,2", "c=x"]` -> ({"a.b": [1, 2], "c": ["x"]}, the same as typed)."""
    grid, raw = {}, {}
    for spec in specs:
        key, eq, values = spec.partition("=")
        key = key.strip().removeprefix("--")
        if not eq or not key:
            raise ConfigError(f"--grid {spec!r}: expected KEY=V1,V2,... e.g. model.lr=1e-3,3e-4")
        texts = [v.strip() for v in values.split(",")] if values.strip() else []
        if not texts or any(not t for t in texts):
            raise ConfigError(f"--grid {spec!r}: empty value list for {key}; give KEY=V1,V2,...")
        if key in grid:
            raise ConfigError(f"--grid {key} given twice; put all its values in one --grid")
        raw[key] = texts
        if key == CONFIG_KEY:  # config files, as typed
            grid[key] = texts
        else:
            grid[key] = [_yaml_scalar(t, f"--grid {key}") for t in texts]
    return grid, raw


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated ints, e.g. 0,1,2") from e
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: give distinct ints, e.g. 0,1,2")
    return seeds


def _short_names(keys: list[str]) -> dict[str, str]:
    """The last part of each dotted key, or the whole key where two keys share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last, strict=True)}


def variant_name(variant: dict[str, str]) -> str:
    """`depth=4,drop_path_rate=0.1` from the values as typed; a folder name, so no `/`."""
    short = _short_names(list(variant))
    parts = [f"{short[k]}={Path(v).stem if k == CONFIG_KEY else v}" for k, v in variant.items()]
    return (",".join(parts) or BASE_VARIANT).replace(os.sep, "_")


def expand(exp: Experiment, wandb: bool) -> list[Run]:
    """Every (variant, seed), variants in grid order, each with its fit and test command lines."""
    keys = list(exp.grid)
    runs = []
    for combo in itertools.product(*(range(len(exp.grid[k])) for k in keys)):
        raw = {k: exp.raw_grid[k][i] for k, i in zip(keys, combo, strict=True)}
        variant = {k: exp.grid[k][i] for k, i in zip(keys, combo, strict=True)}
        group = variant_name(raw)
        for seed in exp.seeds:
            name = f"{group},seed={seed}" if keys else f"seed={seed}"
            rel = f"runs/{name}"
            common = [a for c in exp.configs for a in ("--config", c)]
            # an overlay file next, so the grid's keys and the extra arguments win over it
            common += [
                f"--config={v}" for k, v in raw.items() if k == CONFIG_KEY and v != NO_CONFIG
            ]
            common += [f"--{k}={v}" for k, v in raw.items() if k != CONFIG_KEY]
            common += [f"--seed_everything={seed}"]
            if wandb:
                common += [
                    f"--trainer.logger.init_args.group={group}",
                    f"--trainer.logger.init_args.job_type={exp.name}",
                ]
            # the extra arguments last: they win over the variant's, as on any command line
            common += [*exp.extra, f"--trainer.default_root_dir={exp.root / rel}"]
            runs.append(
                Run(
                    name=name,
                    variant=variant,
                    seed=seed,
                    dir=rel,
                    # last: a rerun or a requeued task resumes; a fresh folder starts afresh
                    fit=["fit", *common, "--ckpt_path=last"],
                    test=["test", *common, "--ckpt_path=best"],
                )
            )
    return runs


def _logger_is_wandb(config: dict[str, Any]) -> bool:
    logger = (config.get("trainer") or {}).get("logger")
    return isinstance(logger, dict) and str(logger.get("class_path", "")).endswith("WandbLogger")


def check_root(exp: Experiment) -> dict[str, Any] | None:
    """The manifest already in the root, when it is this experiment's; another one is refused."""
    path = exp.root / MANIFEST
    if not path.exists():
        if exp.root.is_dir() and any(exp.root.iterdir()):
            raise ConfigError(
                f"--root {exp.root}: the folder holds files but no {MANIFEST}; "
                "give a new or empty folder for an experiment"
            )
        return None
    old = json.loads(path.read_text())
    new = exp.manifest("")
    differ = [k for k in SAME_EXPERIMENT if old.get(k) != new[k]]
    if differ:
        diffs = "; ".join(f"{k}: {old.get(k)!r} there, {new[k]!r} now" for k in differ)
        raise ConfigError(
            f"--root {exp.root} holds another experiment ({diffs}); "
            "give a new --root, or the same settings to continue that one"
        )
    return old


def plan(argv: list[str], check: Check) -> tuple[Experiment, argparse.Namespace]:
    """Parse and validate everything, writing nothing."""
    ours, extra = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    opts = _parser().parse_args(ours)
    if opts.spec:  # the command line's options win over the file's
        spec = read_spec(opts.spec)
        for key in ("config", "grid", "seeds", "root"):
            if getattr(opts, key) is None:
                setattr(opts, key, spec[key])
        extra = spec["args"] + extra
    opts.after = spec["after"] if opts.spec else []
    for key in ("config", "root"):
        if not getattr(opts, key):
            raise ConfigError(f"--{key} is required (on the command line or in a --spec file)")
    grid, raw = parse_grid(opts.grid or [])
    seeds = parse_seeds(opts.seeds or "0")
    exp = Experiment(Path(opts.root), opts.config, grid, raw, seeds, extra)
    check_root(exp)
    exp.runs = expand(exp, wandb=False)
    names = [run.name for run in exp.runs]
    if same := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(
            f"--grid: two variants share the run name {same[0]} (one folder for both); "
            "give overlay files distinct names, or values that differ as typed"
        )
    wandb = False
    for run in exp.runs[:: len(exp.seeds)]:  # one per variant: the seed cannot break a config
        try:
            config = check(run.fit[1:-1])  # ckpt_path is resolved at run time
        except ConfigError as e:
            raise ConfigError(f"run {run.name}: {e}") from e
        wandb = wandb or _logger_is_wandb(config)
    if wandb:
        exp.runs = expand(exp, wandb=True)
    return exp, opts


def _launcher_args(opts: argparse.Namespace) -> list[str]:
    """This invocation's launcher options, for the experiments its spec runs first."""
    args = ["--launcher", opts.launcher] + ["--gpus", opts.gpus] * bool(opts.gpus)
    args += ["--dry_run"] * opts.dry_run
    return args + [
        f"--slurm.{k}={getattr(opts, f'slurm_{k}')}"
        for k, _, _ in SLURM_OPTIONS
        if getattr(opts, f"slurm_{k}") is not None
    ]


def stages(
    argv: list[str], check: Check, seen: tuple[str, ...] = ()
) -> list[tuple[Experiment, argparse.Namespace]]:
    """This experiment, after the ones its spec's `after` names (theirs first), all checked."""
    exp, opts = plan(argv, check)
    out = []
    for path in opts.after:
        key = str(Path(path).resolve())
        if key in seen:
            raise ConfigError(f"--spec {opts.spec}: `after` loops back to {path}")
        out += stages(["--spec", path, *_launcher_args(opts)], check, (*seen, key))
    return out + [(exp, opts)]


def main(argv: list[str], check: Check) -> int:
    """Exit code: 0 all runs done, 1 some failed, 2 bad input (nothing ran), 128 + signal when
    SIGTERM or SIGINT stopped a local launcher (the unfinished runs resume on a rerun)."""
    from vit_lightning.callbacks.run_summary import git_commit
    from vit_lightning.experiments import launchers

    try:
        todo = stages(argv, check)
        # each launcher's options are checked before anything is written
        launches = [launchers.launcher(opts) for _, opts in todo]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for (exp, opts), launch in zip(todo, launches, strict=True):
        if opts.dry_run:
            print(f"# {exp.root}")
            for run in exp.runs:
                print(f"{run.name}\n  python -m vit_lightning {shlex.join(run.fit)}")
                print(f"  python -m vit_lightning {shlex.join(run.test)}")
            continue
        manifest = exp.manifest(git_commit())
        write_file(exp.root / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
        try:
            failed = launch(exp)
        except launchers.Stopped as e:  # the unfinished runs resume when the command runs again
            for run in e.failed:
                log = run.folder(exp.root) / launchers.LOG
                print(f"failed: {run.name} (log: {log.resolve()})", file=sys.stderr)
            print(f"{e}: rerun the same command to resume", file=sys.stderr)
            return 128 + e.signum
        except UserError as e:  # e.g. sbatch refused the array
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
        for run in failed:
            log = run.folder(exp.root) / launchers.LOG
            print(f"failed: {run.name} (log: {log.resolve()})", file=sys.stderr)
        if failed:  # a later experiment may need this one's checkpoints
            return 1
    return 0
