"""`python -m vit_lightning {fit,validate,test,predict,export}`: LightningCLI with the project's wiring.

The callbacks and plugins every run gets are data, below: `CALLBACK_GROUPS` (config groups, set
with `--<group>.<arg>=...`) and `TRAINER_ADDS` (what `instantiate_trainer` adds). `make docs`
writes them into docs/running.md, "What every run gets".

Other wiring:
- the Trainer is `vit_lightning.run.trainer.Trainer` (plus `export`): a checkpoint save that fails
  on one rank fails on all of them at once, instead of leaving the others in a barrier;
- the DataModule's num_classes, in_chans and img_size are linked into the network's arguments;
- the resolved `seed_everything` reaches the DataModule as `data.init_args.loader_seed`;
- `--ckpt_path=last` means the newest of last.ckpt, on_exception.ckpt and SLURM's hpc_ckpt_*.ckpt;
  `--ckpt_path=best` the best checkpoint by the `checkpoint` group's monitor (`best_checkpoint`);
  validate, test and predict need a checkpoint, or `--ckpt_path=none` to use untrained weights;
- a checkpoint's model settings that contradict ones the user set are named, key by key, and
  stop the run (LightningCLI would let the checkpoint's win silently);
- one live fit per default_root_dir (`run.run_dir.RunLock`); a killed run's lock does not block its resume;
- settings that cannot work stop the run at startup (`run.settings`), with exit code 2;
- `export` (vit_lightning/run/export.py) writes a checkpoint's network as ONNX or torch.export;
- W&B writes under default_root_dir, runs offline when there are no credentials, and receives the
  full resolved config (model, data, trainer, optimiser), which LightningCLI does not send itself;
- a fit that resumes keeps its W&B run (the id is persisted in default_root_dir), a fresh fit
  gets a new one; a W&B sweep agent's WANDB_RUN_ID always wins, and each sweep trial's fit runs
  in `<default_root_dir>/<WANDB_RUN_ID>`;
- only a fit writes `<default_root_dir>/config.yaml` (whatever the logger), once training has
  started; a resumed fit rewrites it, and every subcommand accepts it as `--config`;
- a `UserError` (e.g. a corrupt checkpoint, a NaN loss) prints one line and exits 1; a
  `ConfigError` (a setting that cannot work) or Lightning's MisconfigurationException, 2.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from vit_lightning.callbacks import (
    LastCheckpoint,
    NonFiniteGuard,
    PredictionWriter,
    Preemption,
    RNGState,
    RunSummary,
    ValPictures,
)
from vit_lightning.compat import CkptPathErrorsMixin
from vit_lightning.data import ImageDataModule
from vit_lightning.errors import ConfigError, UserError
from vit_lightning.models.pretrained import local_problem
from vit_lightning.module import ViTClassifier, check_optimizer_flags
from vit_lightning.run.checkpoints import (
    AtomicCheckpointIO,
    best_checkpoint,
    check_checkpoint_file,
    checkpoint_dir,
    corrupt_checkpoint,
    newest_checkpoint,
    resolve_ckpt_path,
)
from vit_lightning.run.export import ExportSubcommand
from vit_lightning.run.files import is_local, write_file
from vit_lightning.run.run_dir import (
    RunLock,
    check_new_run_dir,
    check_run_dir,
    is_launching_process,
)
from vit_lightning.run.settings import (
    USER_WINS,
    check_config_files,
    check_logger_packages,
    conflict_error,
    hparam_conflicts,
    user_settings,
    warn_carried_data_args,
)
from vit_lightning.run.trainer import Trainer, check_accelerator
from vit_lightning.run.wandb_logger import (
    configure_logger,
    finish_run,
    save_run_id,
    sweep_trial_root,
)

LINKED_DATA_ARGS = ("num_classes", "in_chans", "img_size")
# The callbacks every run gets as a config group, `--<group>.<argument>=...` (docs/running.md).
CALLBACK_GROUPS: tuple[tuple[str, type[L.Callback]], ...] = (
    ("checkpoint", ModelCheckpoint),  # the best by val/acc: defaults in add_arguments_to_parser
    ("last_checkpoint", LastCheckpoint),
    ("prediction_writer", PredictionWriter),
    ("run_summary", RunSummary),
    ("preemption", Preemption),
    ("nonfinite_guard", NonFiniteGuard),
    ("val_pictures", ValPictures),
)
# What instantiate_trainer adds to every Trainer, and when (docs/running.md); in this order.
TRAINER_ADDS: tuple[tuple[type, str], ...] = (
    (RNGState, "always"),
    (LearningRateMonitor, "with a logger"),  # it raises without one
    (AtomicCheckpointIO, "unless `trainer.plugins` holds a CheckpointIO"),
)
# linked to trainer.default_root_dir: `<default_root_dir>/checkpoints`
CHECKPOINT_DIRS = ("checkpoint.dirpath", "last_checkpoint.dirpath", "preemption.dirpath")


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Sends the whole resolved config to every logger (e.g. W&B) at setup, for every subcommand,
    and writes a fit's `<default_root_dir>/config.yaml` once training starts.

    Only a fit writes the file (validate, test and predict leave the fit's alone), and only once
    it has really started: a run that fails while loading weights, a teacher or the data leaves
    the file as it was. It always goes to default_root_dir, whatever the logger (Lightning's own
    callback writes into `trainer.log_dir`, a CSV or TensorBoard logger's version folder). It
    holds the settings as given (`run_config`), not what the CLI filled in for this one run
    (the W&B run id, `loader_seed`, the resolved `ckpt_path`), so every subcommand accepts it and
    a new run started from it is a new run.
    """

    def __init__(self, parser: Any, config: Any, config_filename: str = "config.yaml") -> None:
        super().__init__(parser, config, config_filename, save_to_log_dir=False)
        self.run_config: Any = None  # the fit's config to write; None: write no file
        self.run_ids: list[tuple[str, str]] = []  # (default_root_dir, W&B run id) for `save_run_id`

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        # instantiation links are resolved only now: record the values the network really got
        net_args = config["model"]["net"].setdefault("init_args", {})
        net_args.update({k: getattr(trainer.datamodule, k) for k in LINKED_DATA_ARGS})
        for logger in trainer.loggers:
            logger.log_hyperparams(config)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.run_config is None or not trainer.is_global_zero:
            return
        for root, run_id in self.run_ids:
            save_run_id(root, run_id)
        text = self.parser.dump(self.run_config, skip_none=False)
        write_file(os.path.join(trainer.default_root_dir, self.config_filename), text.encode())
        self.run_config = None  # once per run


class ViTLightningCLI(CkptPathErrorsMixin, ExportSubcommand, LightningCLI):
    run_lock: RunLock | None = None  # held by a fit's launching process until the fit ends
    run_config: Any = None  # what a fit writes as config.yaml (see LoggerSaveConfigCallback)
    new_run_dir: tuple[str, str] | None = None  # (root, checkpoint dir) of a fit starting afresh

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("save_config_callback", LoggerSaveConfigCallback)
        kwargs.setdefault("trainer_class", Trainer)  # every subcommand's, `export` included
        try:
            super().__init__(ViTClassifier, ImageDataModule, subclass_mode_data=True, **kwargs)
        except SystemExit as e:
            signum = self.preempted_by()
            if signum is not None and not e.code:  # Lightning exits 0 on SIGTERM
                raise SystemExit(128 + signum) from e
            raise
        finally:
            if self.run_lock is not None:
                self.run_lock.release()

    def preempted_by(self) -> int | None:
        """The signal that stopped the run, once the Preemption callback has saved for it."""
        callbacks = getattr(getattr(self, "trainer", None), "callbacks", [])
        signals = (c.preempted_by for c in callbacks if isinstance(c, Preemption))
        return next((s for s in signals if s is not None), None)

    def add_arguments_to_parser(self, parser) -> None:
        for group, callback in CALLBACK_GROUPS:
            parser.add_lightning_class_args(callback, group)
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best-epoch{epoch:03d}-acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,  # else "val/acc" makes a subfolder
            }
        )
        for key in CHECKPOINT_DIRS:
            parser.link_arguments("trainer.default_root_dir", key, compute_fn=checkpoint_dir)
        for key in LINKED_DATA_ARGS:
            parser.link_arguments(
                f"data.{key}", f"model.net.init_args.{key}", apply_on="instantiate"
            )

    def parse_arguments(self, parser, args) -> None:
        self.args = sys.argv[1:] if args is None else args  # where each setting came from
        if not isinstance(self.args, dict):
            check_config_files(list(self.args))
            check_logger_packages(list(self.args))
        super().parse_arguments(parser, args)
        if not isinstance(self.args, dict):  # jsonargparse keeps a replaced class's shared args
            warn_carried_data_args(list(self.args), self.config)
        self.one_batch = [] if isinstance(self.args, dict) else _one_batch_limits(list(self.args))
        sub = self.config.get("subcommand")
        config = self.config[sub] if sub else self.config
        if sub == "fit" and (trial := sweep_trial_root(config.trainer.default_root_dir)):
            config.trainer.default_root_dir = trial  # and what the parser linked to it
            for key in CHECKPOINT_DIRS:
                config[key] = checkpoint_dir(trial)
        for key in self.one_batch:  # so config.yaml says 1 too (the Trainer: instantiate_trainer)
            config.trainer[key] = 1

    def resolve_ckpt_path(self, subcommand: str, config) -> None:
        """`--ckpt_path=last|best|none|<file>` -> the file (see `startup.resolve_ckpt_path`)."""
        root = config.trainer.default_root_dir or "."
        ckpt_dir = config.get("last_checkpoint.dirpath") or checkpoint_dir(root)
        named = {
            "last": lambda: newest_checkpoint(root, ckpt_dir),
            "best": lambda: best_checkpoint(root, config.get("checkpoint.dirpath") or ckpt_dir),
        }
        given = config.get("ckpt_path")
        path = resolve_ckpt_path(subcommand, given, root, ckpt_dir, named)
        if path is not None and os.path.isfile(path):
            check_checkpoint_file(path)
        # a fit with no checkpoint to resume (`last` finding nothing is a requeued job's start):
        # checked once the run lock is held, so a live fit there is named as such first
        fresh = subcommand == "fit" and path is None and str(given) not in named
        self.new_run_dir = (root, ckpt_dir) if fresh and is_launching_process() else None
        config.ckpt_path = path

    def unreadable_checkpoint(self, path: str, e: Exception) -> Exception:
        return corrupt_checkpoint(path, e)

    def check_ckpt_hparams(self, path: str, before) -> None:
        sub, settings = self.config.subcommand, user_settings(self.args)
        for key in USER_WINS:
            if key in settings:
                self.config[sub][key] = before[sub][key]
        model = before[sub].get("model"), self.config[sub].get("model")
        conflicts = hparam_conflicts(*model, settings)
        if conflicts:
            raise conflict_error(path, conflicts, before[sub].trainer.default_root_dir or ".")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as e:
            error = _constructor_error(e)
            if error is e:
                raise
            raise error from error.__cause__  # its own cause; jsonargparse's wrapper: hidden
        # written with config.yaml, once training starts: a failed start leaves no file behind
        saver = [c for c in self.trainer.callbacks if isinstance(c, LoggerSaveConfigCallback)]
        for cb in saver:
            cb.run_ids, cb.run_config = self.new_run_ids, self.run_config
        for root, run_id in [] if saver else self.new_run_ids:  # fast_dev_run: no saver
            save_run_id(root, run_id)

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """Adds `TRAINER_ADDS`: each when its condition there holds."""
        trainer = self._get(self.config_init, "trainer", default={})
        listify = lambda v: [] if v is None else list(v) if isinstance(v, list) else [v]  # noqa: E731
        rng_state, lr_monitor, checkpoint_io = (cls for cls, _ in TRAINER_ADDS)
        callbacks = [*listify(trainer.get("callbacks")), rng_state()]
        if trainer.get("logger") is not False:
            callbacks.append(lr_monitor(logging_interval="step"))
        kwargs.setdefault("callbacks", callbacks)
        plugins = listify(trainer.get("plugins"))
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs.setdefault("plugins", [*plugins, checkpoint_io()])
        check_accelerator(trainer.get("accelerator"))
        kwargs.update(dict.fromkeys(getattr(self, "one_batch", []), 1))
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as e:  # Lightning's word for a setting that cannot work
            raise ConfigError(f"trainer: {e}") from e

    def before_instantiate_classes(self) -> None:
        """Locks the run folder for a fit, hands the seed to the DataModule and sets up W&B.

        LightningCLI calls this after it has resolved `seed_everything` (an int, or False for no
        seeding). That int becomes `data.init_args.loader_seed` when the DataModule takes one and
        the user left it unset, so the loaders' shuffling and augmentation follow the run's seed.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_optimizer_flags(config.get("optimizer"), config.get("lr_scheduler"))
        root = config.trainer.default_root_dir or "."
        # config.yaml: the settings as given, before this run's own values are filled in below
        self.run_config = config.clone() if self.subcommand == "fit" else None
        if self.run_config is not None:
            self.run_config.ckpt_path = None  # which weights to load is each command's choice
        if self.subcommand in ("fit", "validate", "test", "predict"):
            check_run_dir(root)
        ckpt = str(config.get("ckpt_path") or "")
        resuming = bool(ckpt) and get_filesystem(ckpt).isfile(ckpt)  # local, or a URL
        pretrained = config.get("model.pretrained")
        if pretrained and not resuming and (problem := local_problem(pretrained)):
            raise ConfigError(f"model.pretrained: {problem}")  # before anything is written
        # before anything writes there; a remote root has no flock (one writer is up to the user)
        if self.subcommand == "fit" and is_launching_process() and is_local(root):
            self.run_lock = RunLock(root).acquire()
        if self.subcommand == "fit" and self.new_run_dir is not None:
            check_new_run_dir(*self.new_run_dir)
        seed, data_args = config.get("seed_everything"), config.get("data.init_args")
        # no loader_seed key: a DataModule without that argument; False: the user turned seeding off
        if type(seed) is int and data_args is not None and data_args.get("loader_seed", 0) is None:
            data_args.loader_seed = seed
        loggers = config.trainer.logger
        self.new_run_ids = []  # written once the run has started: see instantiate_classes
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            if getattr(logger, "class_path", "").endswith("WandbLogger"):
                run_id = configure_logger(logger.init_args, root, self.subcommand, resuming)
                if run_id is not None:
                    self.new_run_ids.append((root, run_id))


BATCH_LIMITS = tuple(f"limit_{s}_batches" for s in ("train", "val", "test", "predict"))


def _one_batch_limits(args: list[str]) -> list[str]:
    """The `limit_*_batches` given as `1` (one batch, as `Trainer(limit_val_batches=1)` says).

    jsonargparse reads Lightning's `int | float` limits as floats, and Lightning takes 1.0 for
    100% of the batches; a 1 written without a decimal point (command line or config file, the
    later one winning) is passed to the Trainer as the int.
    """
    raw: dict[str, Any] = {}
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") or arg.startswith("--config="):
            path = arg.partition("=")[2] or (args[i + 1] if i + 1 < len(args) else "")
            try:
                trainer = (yaml.safe_load(Path(path).read_text()) or {}).get("trainer") or {}
            except (OSError, yaml.YAMLError, AttributeError):
                continue
            raw.update({k: trainer[k] for k in BATCH_LIMITS if k in trainer})
        for key in BATCH_LIMITS:
            flag = f"--trainer.{key}"
            if arg.startswith(f"{flag}="):
                raw[key] = arg.partition("=")[2]
            elif arg == flag and i + 1 < len(args):
                raw[key] = args[i + 1]
    return [key for key, value in raw.items() if str(value).strip() == "1"]


def _constructor_error(e: ValueError | TypeError) -> BaseException:
    """What a constructor raised while `instantiate_classes` built the classes.

    A class in a Union-typed group (`data`, `model.teacher`: Optional, so Union[cls, None]) is
    built inside jsonargparse's Union check, which reports any exception as a ValueError over the
    Union's subtypes, chained `from` the constructor's own; a class in any other group raises
    as it is. Ours raise a ConfigError naming the class (or a UserError, for a runtime problem);
    a ValueError or TypeError of another package's constructor (timm, torch) is a value it
    cannot take, so a setting as well. Anything else is a bug, shown with its traceback.
    """
    while type(e) is ValueError and e.__cause__ is not None:
        e = e.__cause__
    if isinstance(e, (ValueError, TypeError)) and not isinstance(e, UserError):
        error = ConfigError(f"invalid configuration: {e}")
        error.__cause__ = e
        return error
    return e


def parser_error(stderr: str) -> str:
    """jsonargparse's message, whole (it may span lines), from a failed parse's stderr."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
    if not starts:
        return stderr.strip() or "the command line did not parse"
    return "\n".join(lines[starts[-1] :]).removeprefix("error: ").strip()


def check_fit_args(args: list[str]) -> dict[str, Any]:
    """The resolved config of `fit *args` (its `--print_config`), parsed in this process; a bad
    setting raises ConfigError with the parser's message. multirun's `check`."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns of argv beside args
            try:
                ViTLightningCLI(args=["fit", *args, "--print_config"])
            finally:
                sys.argv = argv
    except SystemExit as e:
        if e.code:
            raise ConfigError(parser_error(err.getvalue())) from None
    return yaml.safe_load(out.getvalue()) or {}


def main(args: list[str] | None = None) -> ViTLightningCLI:
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["multirun"]:  # experiments sit below the CLI: they get its parser as `check`
        from vit_lightning.experiments import multirun

        raise SystemExit(multirun.main(argv[1:], check=check_fit_args))
    if argv[:1] == ["compare"]:
        from vit_lightning.experiments import compare

        raise SystemExit(compare.main(argv[1:]))
    try:
        return ViTLightningCLI(args=args)
    except UserError as e:  # a message that says what to do: no traceback needed
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from e
    except MisconfigurationException as e:  # Lightning's own, e.g. max_epochs below a resume's
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    finally:
        finish_run()  # a later run in this process starts afresh, with complete run files
