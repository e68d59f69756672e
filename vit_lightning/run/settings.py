"""What the command line and its config files say, checked before anything is built.

- `check_config_files`: every `--config` file is valid YAML and sets something.
- `check_logger_packages`: every logger in `trainer.logger` has its package installed.
- `user_settings`, `hparam_conflicts`, `conflict_error`: LightningCLI replaces the model settings
  with those saved in the checkpoint; here the ones the user set and the checkpoint contradicts
  are named.
- `carried_data_args`: a `--data` class switch that keeps an earlier config's values.

Checks of other subjects live with them: `--ckpt_path` in `run/checkpoints.py`, the run folder in
`run/run_dir.py`, the accelerator in `run/trainer.py`, an empty training set in `data/base.py`,
a checkpoint that does not fit the network in `models/pretrained.py`. Each failure is a
`ConfigError`: one message that names the file, key or value and what to do.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.utilities import rank_zero_warn

from vit_lightning.compat import missing_logger_requirements
from vit_lightning.errors import ConfigError
from vit_lightning.run.checkpoints import EVAL_SUBCOMMANDS

SUBCOMMANDS = ("fit", *EVAL_SUBCOMMANDS, "export")
# model settings that change how the model runs (or, for pretrained, only a fresh start; for
# tta, only test and predict), not what a resumed run computes: the user's value wins
USER_WINS = ("model.compile", "model.pretrained", "model.grad_checkpointing", "model.tta")


def config_files(args: list[str]) -> Iterator[str]:
    """The paths given to `--config` / `-c`, in order."""
    for i, arg in enumerate(args):
        if arg.startswith("--config="):
            yield arg.partition("=")[2]
        elif arg in ("--config", "-c") and i + 1 < len(args):
            yield args[i + 1]


def check_config_files(args: list[str]) -> None:
    """A YAML syntax error or an empty file, named with the file (and the line) before parsing."""
    for path in config_files(args):
        try:
            text = Path(path).read_text()
        except OSError:
            continue  # the parser names a missing file itself
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(
                f"config file {path} is not valid YAML ({where}{problem}); fix it there"
            ) from None
        if data is None:
            raise ConfigError(
                f"config file {path} is empty (or only comments) and sets nothing; "
                f"add settings to it or leave out --config {path}"
            )
        if not isinstance(data, dict):
            raise ConfigError(
                f"config file {path} holds a {type(data).__name__}, not `key: value` settings "
                "(e.g. `trainer:` / `model:` / `data:` sections)"
            )


def _logger_class_paths(args: list[str]) -> Iterator[str]:
    """The class names `trainer.logger` is given, in `--config` files and on the command line."""

    def named(value: Any) -> Iterator[str]:
        if isinstance(value, str):  # a class path or a bare name; `false` has become a bool
            yield value
        elif isinstance(value, Mapping):
            yield from named(value.get("class_path"))
        elif isinstance(value, list):
            for v in value:
                yield from named(v)

    for path in config_files(args):
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue  # check_config_files and the parser name these
        sections = [data, *(data.get(s) for s in SUBCOMMANDS)] if isinstance(data, dict) else []
        for section in sections:
            trainer = section.get("trainer") if isinstance(section, Mapping) else None
            if isinstance(trainer, Mapping):
                yield from named(trainer.get("logger"))
    for i, arg in enumerate(args):
        key, eq, value = arg.partition("=")
        if key.rstrip("+") in ("--trainer.logger", "--trainer.logger.class_path"):
            value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            try:
                yield from named(yaml.safe_load(value))
            except yaml.YAMLError:
                continue


def check_logger_packages(args: list[str]) -> None:
    """A logger whose package is not installed (TensorBoardLogger without tensorboard), named
    with the install command before parsing; jsonargparse would bury it in a Union error."""
    for name in _logger_class_paths(args):
        module, _, cls_name = name.rpartition(".")
        module = module or "lightning.pytorch.loggers"  # where a bare name resolves
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except ModuleNotFoundError as e:
            top = (e.name or "").partition(".")[0]
            if not top or importlib.util.find_spec(top) is not None:
                continue  # a misspelt module of an installed package: the parser names it
            missing = [top]
        except (ImportError, AttributeError):
            continue  # the parser names a class that is not there
        else:
            missing = missing_logger_requirements(cls) if isinstance(cls, type) else []
        if missing:
            others = f" (or {', '.join(missing[1:])})" if missing[1:] else ""
            raise ConfigError(
                f"trainer.logger={name} needs {missing[0]}{others}, which is not installed: "
                f"pip install {shlex.quote(missing[0])}, or choose another logger "
                "(e.g. --trainer.logger=CSVLogger) or none (--trainer.logger=false)"
            )


def _plain(key: str) -> str:
    """`model.net.depth` for `fit.model.net.init_args.depth`: one spelling for every source."""
    parts = [p for p in key.split(".") if p not in ("init_args", "dict_kwargs")]
    if parts and parts[0] in SUBCOMMANDS:
        parts = parts[1:]
    return ".".join(parts)


def _flat(d: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items() if isinstance(d, Mapping) else ():
        if isinstance(v, Mapping) and v:
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def user_settings(args: Any) -> dict[str, str]:
    """The keys the user set (in `_plain` spelling), each with where: a config file's path or
    "command line". A key set twice keeps the later place, as the parser does."""
    if isinstance(args, Mapping):
        return {_plain(k): "args" for k, _ in _flat(args)}
    args, found = list(args or []), {}
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") or arg.startswith("--config="):
            path = arg.partition("=")[2] or (args[i + 1] if i + 1 < len(args) else "")
            try:
                data = yaml.safe_load(Path(path).read_text())
            except (OSError, yaml.YAMLError):
                continue
            found.update({_plain(k): path for k, _ in _flat(data)})
        elif arg.startswith("--"):  # values, paths and subcommands do not start with --
            name = _plain(arg[2:].partition("=")[0].rstrip("+"))
            found[name] = found[f"{name}.class_path"] = "command line"  # --model.net=X: a class
    return found


def _show(value: Any) -> str:
    return "(unset)" if value is None else str(value)


def hparam_conflicts(
    given: Any, from_ckpt: Any, settings: Mapping[str, str], prefix: str = "model"
) -> list[str]:
    """`model.lr: checkpoint 0.001, command line 0.0005` for each model setting the checkpoint
    replaced and the user had set. `given` and `from_ckpt` are the model config before and after
    LightningCLI read the checkpoint's hyperparameters."""
    old = dict(_flat(given.as_dict() if hasattr(given, "as_dict") else given or {}))
    new = dict(_flat(from_ckpt.as_dict() if hasattr(from_ckpt, "as_dict") else from_ckpt or {}))
    lines = []
    for key in dict.fromkeys([*old, *new]):
        source = settings.get(_plain(f"{prefix}.{key}"))
        if old.get(key) != new.get(key) and source is not None:
            lines.append(
                f"{prefix}.{key}: checkpoint {_show(new.get(key))}, {source} {_show(old.get(key))}"
            )
    return lines


def conflict_error(path: str, conflicts: list[str], root: str) -> ConfigError:
    listed = "\n".join(f"  {line}" for line in conflicts)
    return ConfigError(
        f"--ckpt_path={path} was trained with model settings that differ from ones you set:\n"
        f"{listed}\n"
        "A checkpoint is resumed, evaluated and predicted with the settings it was trained with. "
        "Leave these out (or pass the run's own config, --config "
        f"{os.path.join(root, 'config.yaml')}) to use the checkpoint's; to train a new model "
        "with yours, start it in another --trainer.default_root_dir."
    )


def warn_carried_data_args(args: list[str], config: Any) -> None:
    """Warns when a switched data class keeps an earlier config's values (`carried_data_args`)."""
    sub = config.get("subcommand")
    data = (config.get(sub) if sub else config).get("data")
    if data is not None and (message := carried_data_args(args, data)):
        rank_zero_warn(message)


def carried_data_args(args: list[str], data: Any) -> str | None:
    """A warning when `--data=<class>` (or a later `--config`) switches the data class and the new
    class keeps values an earlier config set for the old one: jsonargparse keeps the init_args
    that both classes take, e.g. smoke.yaml's `val_size: 256` under FashionMNISTDataModule.

    Args:
        args: The command line, in order (`--config` files are read for their `data` section).
        data: The parsed `data` (class_path and init_args), where the sources ended up.
    """
    short = lambda cls: str(cls).rpartition(".")[2]  # noqa: E731
    current: tuple[str, str, dict] | None = None  # (class, where it was set, values it set)
    carried: tuple[str, str, dict] | None = None  # the class switched from, and its values
    for i, arg in enumerate(args):
        key, eq, value = arg.partition("=")
        value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
        if key in ("--config", "-c"):
            try:
                section = yaml.safe_load(Path(value).read_text())
            except (OSError, yaml.YAMLError):
                continue  # check_config_files and the parser name these
            sub = section.get(_subcommand(args)) if isinstance(section, dict) else None
            if isinstance(section, dict) and "data" not in section and isinstance(sub, dict):
                section = sub
            setting = section.get("data", ...) if isinstance(section, dict) else ...
            where = f"--config {value}"
        elif key in ("--data", "--data.class_path"):
            try:
                setting = yaml.safe_load(value)
            except yaml.YAMLError:
                continue
            if key == "--data.class_path":
                setting = {"class_path": setting}
            where = f"{key}={value}"
        elif key.startswith("--data.") and current is not None:
            current[2][key.removeprefix("--data.").removeprefix("init_args.")] = value
            continue
        else:
            continue
        if setting is ...:
            continue
        if setting is None:  # `--data=null`: the next class starts from its own defaults
            current = carried = None
            continue
        cls = setting if isinstance(setting, str) else setting.get("class_path")
        given = setting.get("init_args", {}) if isinstance(setting, dict) else {}
        given = dict(given) if isinstance(given, dict) else {}
        if cls is None or (current is not None and short(cls) == short(current[0])):
            if current is not None:
                current[2].update(given)
            continue
        if current is not None:
            carried = current
        current = (cls, where, given)
    if carried is None or current is None or short(data.class_path) != short(current[0]):
        return None
    final = dict(data.get("init_args") or {})
    kept = {k: v for k, v in carried[2].items() if k not in current[2] and final.get(k, ...) == v}
    if not kept:
        return None
    listed = ", ".join(f"{k}={v}" for k, v in kept.items())
    new = short(current[0])
    return (
        f"data: {current[1]} switches from {short(carried[0])}, and {new} keeps what "
        f"{carried[1]} set for the arguments both take: {listed}. For {new}'s own defaults, "
        f"pass --data=null before {current[1]} (or set each of these again)"
    )


def _subcommand(args: list[str]) -> str | None:
    """The subcommand named on the command line (a config may hold one section per subcommand)."""
    return next((a for a in args if a in SUBCOMMANDS), None)
