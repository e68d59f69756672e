"""`python -m vit_lightning {fit,validate,test,predict}`: LightningCLI with the project's wiring.

What this adds to a bare LightningCLI:
- the DataModule's num_classes, in_chans and img_size are linked into the network's arguments;
- checkpoints go to `<default_root_dir>/checkpoints`: the best by val/acc, and a last.ckpt kept
  current every epoch, so `--ckpt_path=last` in a new process finds them;
- W&B writes under default_root_dir, runs offline when there are no credentials, and receives the
  full resolved config (model, data, trainer, optimiser), which LightningCLI does not send itself;
- the saved config.yaml may be overwritten, so a requeued run can write into the same directory;
- `--ckpt_path=last` means the newest of last.ckpt, on_exception.ckpt and SLURM's hpc_ckpt_*.ckpt;
- a fit that resumes keeps its W&B run (the id is persisted in default_root_dir), a fresh fit
  gets a new one; a W&B sweep agent's WANDB_RUN_ID always wins;
- every run's summary holds its parameter count, devices, precision, git commit, throughput.
"""

from __future__ import annotations

import netrc
import os
import socket
import sys
from urllib.parse import urlparse

import lightning as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from vit_lightning.callbacks import LastCheckpoint, PredictionWriter, RunSummary
from vit_lightning.data import ImageDataModule
from vit_lightning.faults import (
    AtomicCheckpointIO,
    NonFiniteGuard,
    Preemption,
    UserError,
    corrupt_checkpoint,
    preempted_by,
)
from vit_lightning.module import ViTClassifier
from vit_lightning.pictures import ValPictures
from vit_lightning.resume import RNGState, newest_checkpoint, wandb_run_id

LINKED_DATA_ARGS = ("num_classes", "in_chans", "img_size")


def checkpoint_dir(default_root_dir: str | None) -> str:
    return os.path.join(default_root_dir or ".", "checkpoints")


def wandb_has_credentials() -> bool:
    """True if W&B could log in without prompting: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(wandb_url()).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def wandb_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the W&B server opens within `timeout` seconds."""
    url = urlparse(wandb_url())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Saves config.yaml, and also sends the whole resolved config to every logger (e.g. W&B)."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        # instantiation links are resolved only now: record the values the network really got
        net_args = config["model"]["net"].setdefault("init_args", {})
        net_args.update({k: getattr(trainer.datamodule, k) for k in LINKED_DATA_ARGS})
        for logger in trainer.loggers:
            logger.log_hyperparams(config)


class ViTLightningCLI(LightningCLI):
    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("save_config_callback", LoggerSaveConfigCallback)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(ViTClassifier, ImageDataModule, subclass_mode_data=True, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best-epoch{epoch:03d}-acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,  # else "val/acc" makes a subfolder
            }
        )
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(RunSummary, "run_summary")
        parser.add_lightning_class_args(Preemption, "preemption")
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite_guard")
        parser.add_lightning_class_args(ValPictures, "val_pictures")
        for key in ("checkpoint.dirpath", "last_checkpoint.dirpath", "preemption.dirpath"):
            parser.link_arguments("trainer.default_root_dir", key, compute_fn=checkpoint_dir)
        for key in LINKED_DATA_ARGS:
            parser.link_arguments(
                f"data.{key}", f"model.net.init_args.{key}", apply_on="instantiate"
            )

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyperparameters first: name the file if it is damaged
        try:
            super()._parse_ckpt_path()
        except Exception as e:
            config = self.config[self.config.subcommand]
            raise corrupt_checkpoint(config.get("ckpt_path"), e) from e

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as e:
            # a value out of range, caught by a constructor: report it like a parse error
            self.parser.error(f"invalid configuration: {_origin(e)}{e}")

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = self._get(self.config_init, "trainer", default={})
        listify = lambda v: [] if v is None else list(v) if isinstance(v, list) else [v]  # noqa: E731
        kwargs.setdefault("callbacks", [*listify(trainer.get("callbacks")), RNGState()])
        plugins = listify(trainer.get("plugins"))
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs.setdefault("plugins", [*plugins, AtomicCheckpointIO()])
        return super().instantiate_trainer(**kwargs)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.trainer.default_root_dir or "."
        if self.subcommand and config.get("ckpt_path") == "last":
            newest = newest_checkpoint(root, config.last_checkpoint.dirpath)
            if newest is not None:
                rank_zero_info(f"ckpt_path=last: resuming from {newest} (the newest checkpoint)")
                config.ckpt_path = str(newest)
        resuming = bool(config.get("ckpt_path")) and os.path.isfile(str(config.ckpt_path))
        loggers = config.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            if getattr(logger, "class_path", "").endswith("WandbLogger"):
                args = logger.init_args
                if args.get("save_dir") in (None, "."):  # W&B's default is the cwd, not the run dir
                    args.save_dir = root
                if not wandb_has_credentials() and os.environ.get("WANDB_MODE") != "online":
                    args.offline = True  # never wait on a login or a server
                elif not args.get("offline") and not wandb_reachable():
                    rank_zero_warn(
                        f"W&B server {wandb_url()} is unreachable: logging offline to "
                        f"{root}/wandb. Upload later with `wandb sync {root}/wandb/offline-run-*`."
                    )
                    args.offline = True  # wandb.init would wait 90 s, then fail the run
                if args.get("id") or args.get("version"):
                    continue  # the user's choice
                if os.environ.get("WANDB_RUN_ID"):  # set by a sweep agent: its run wins
                    args.id = os.environ["WANDB_RUN_ID"]
                elif self.subcommand == "fit":
                    args.id = wandb_run_id(root, resuming)
                    args.resume = "allow"


def _origin(e: BaseException) -> str:
    """'VisionTransformer: ' for an error raised in VisionTransformer's constructor, etc."""
    tb, name = e.__traceback__, ""
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "__init__" and "self" in frame.f_locals:
            name = type(frame.f_locals["self"]).__name__
        tb = tb.tb_next
    return f"{name}: " if name else ""


def main(args: list[str] | None = None) -> ViTLightningCLI:
    try:
        return ViTLightningCLI(args=args)
    except UserError as e:  # a message that says what to do: no traceback needed
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from e
    except SystemExit as e:
        if preempted_by() is not None and not e.code:  # Lightning exits 0 on SIGTERM
            raise SystemExit(128 + preempted_by()) from e
        raise
    finally:
        # WandbLogger leaves its run open; close it so a later run in this process starts afresh,
        # and stop W&B's service so the run files are complete when main() returns (finish()
        # alone can return before the offline writer has flushed: seen as missing records)
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:
            wandb.finish()
            wandb.teardown()
