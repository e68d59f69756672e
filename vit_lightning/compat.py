"""Every use of a private or undocumented Lightning or torchvision name, in one place.

Each helper says why Lightning's public API is not enough. `check()` lists the names that the
installed Lightning no longer has; `tests/test_compat.py` fails with that list, so a Lightning
upgrade that breaks one of them is caught here and fixed here.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from contextvars import ContextVar
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.core.mixins import hparams_mixin

try:
    # A DistributedSampler that does not pad the eval set to a multiple of the world size, so
    # every sample is counted once (the default sampler repeats some and skews val/acc under DDP).
    # Lightning uses it for its own distributed eval but does not document it.
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
except ImportError:  # check() names it; the data package fails when it builds the sampler
    UnrepeatedDistributedSampler = None  # type: ignore[assignment,misc]


def given_hyperparameters() -> bool:
    """Whether the LightningModule is being built by LightningCLI, which records its init args.

    LightningCLI then passes the parsed config (with `class_path`/`init_args` for nested modules)
    through a context variable that `save_hyperparameters` reads; there is no public way to ask
    whether it is set, and the module must know it to decide whether `net` is a hyperparameter.
    """
    return bool(hparams_mixin._given_hyperparameters.get())


def dump_checkpoint(trainer: L.Trainer, weights_only: bool | None = None) -> dict[str, Any]:
    """The checkpoint dict `trainer.save_checkpoint` would write.

    `vit_lightning.run.trainer.Trainer` saves it with its ranks agreeing on success; Lightning's
    `save_checkpoint` builds it and saves in one call, with no public way to get the dict alone.
    """
    return trainer._checkpoint_connector.dump_checkpoint(weights_only)


def disable_version_counter(callback: ModelCheckpoint) -> None:
    """Make `callback` overwrite a file of the name it saves to instead of adding `-v1`.

    A resumed fit saves again files that its dead attempt wrote (`Trainer.fit` says why);
    `enable_version_counter` is a constructor argument only, with no public setter.
    """
    callback._enable_version_counter = False


class RestoringMixin(L.Trainer):
    """`trainer.restoring`: the checkpoint a run restores, already known in `setup`.

    Lightning sets `trainer.ckpt_path` only while it restores, after the module's `setup`; a hook
    there (loading `model.pretrained`) cannot tell a resume from a fresh start. `Trainer._run`
    gets the selected path (`--ckpt_path`, or SLURM's hpc checkpoint) before it calls setup.
    """

    restoring: str | None = None

    def _run(self, model: L.LightningModule, ckpt_path: Any = None, **kwargs: Any) -> Any:
        self.restoring = None if ckpt_path is None else str(ckpt_path)
        return super()._run(model, ckpt_path=ckpt_path, **kwargs)


def _batch_progress(trainer: L.Trainer) -> Any:
    return trainer.fit_loop.epoch_loop.batch_progress


def train_batches_done(trainer: L.Trainer) -> int:
    """Training batches consumed so far in the current epoch, restored on a mid-epoch resume.

    The loop's progress counter is the only record of it: `trainer.global_step` counts optimizer
    steps (not batches, under gradient accumulation) and is not per epoch.
    """
    return _batch_progress(trainer).current.processed


def set_train_batches_done(trainer: L.Trainer, done: int) -> None:
    """Make a resumed epoch continue as if `done` of its batches had been trained.

    A mid-epoch resume at another batch size continues at the same image of the epoch, which is
    another batch count; Lightning's progress counter (it ends the epoch after
    `num_training_batches`) has no public setter.
    """
    progress = _batch_progress(trainer)
    shift = done - progress.current.processed  # what train_batches_done saved
    for tracker in (progress.current, progress.total):
        for name in ("ready", "started", "processed", "completed"):
            setattr(tracker, name, getattr(tracker, name) + shift)


def is_last_train_batch(trainer: L.Trainer) -> bool:
    """Whether the batch that just ended is the last of its training epoch.

    Callbacks are not told; the training loop's progress tracker knows (it also handles
    `limit_train_batches` and iterable datasets).
    """
    return _batch_progress(trainer).is_last_batch


def cluster_environment(trainer: L.Trainer) -> Any:
    """The trainer's ClusterEnvironment (e.g. SLURMEnvironment, to read `auto_requeue`).

    `trainer.strategy.cluster_environment` exists only on parallel strategies; a single-device
    SLURM job has one too, and only the accelerator connector holds it.
    """
    return trainer._accelerator_connector.cluster_environment


def request_stop(trainer: L.Trainer) -> None:
    """Make Lightning stop after the current batch exactly as it does on SIGTERM.

    `trainer.should_stop` ends the fit as if it had finished (and waits for `min_epochs` or
    `min_steps`); the signal connector's flag makes the training loop raise SIGTERMException, so
    the run saves and exits like a preempted one. `trainer.received_sigterm` reads the flag but
    has no setter.
    """
    trainer._signal_connector.received_sigterm = True


class CkptPathErrorsMixin(LightningCLI):
    """LightningCLI's reading of the checkpoint's hyperparameters, with hooks around it.

    LightningCLI loads `--ckpt_path`'s hyperparameters into the config in `_parse_ckpt_path`,
    right after `parse_arguments` returns and before any public hook runs, and lets them replace
    what the user set, silently. So the project's checks wrap it: `resolve_ckpt_path` turns a
    name such as `last` into a file first (so a named and an explicit path behave alike), and
    `check_ckpt_hparams` sees the config from before and after. A damaged file is named in a
    one-line error instead of a torch.load traceback.
    """

    def resolve_ckpt_path(self, subcommand: str, config: Any) -> None:
        """Hook: set `config.ckpt_path` to the file to load (or None) before its hparams are read."""

    def check_ckpt_hparams(self, path: str, before: Any) -> None:
        """Hook: `self.config` holds the checkpoint's hyperparameters, `before` the user's."""

    def unreadable_checkpoint(self, path: str, e: Exception) -> Exception:
        """Hook: the error to raise for a checkpoint whose hyperparameters cannot be read."""
        return e

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        self.resolve_ckpt_path(subcommand, config)
        path, before = config.get("ckpt_path"), self.config.clone()
        try:
            super()._parse_ckpt_path()
        except Exception as e:
            raise self.unreadable_checkpoint(path, e) from e
        if path and os.path.isfile(path):  # Lightning reads hparams from local files only
            self.check_ckpt_hparams(str(path), before)


# -- Lightning's loggers import their package only when built, so a missing one surfaces inside
# jsonargparse's validation of `trainer.logger` as an unrelated message. The requirement flags of
# each logger's module are the only record of what it needs: {class: (module, flags)}; the logger
# works when any one flag is met (TensorBoard's: tensorboard or tensorboardX).
_LOGGER_REQUIREMENTS = {
    "TensorBoardLogger": (
        "lightning.fabric.loggers.tensorboard",
        ("_TENSORBOARD_AVAILABLE", "_TENSORBOARDX_AVAILABLE"),
    ),
    "WandbLogger": ("lightning.pytorch.loggers.wandb", ("_WANDB_AVAILABLE",)),
    "CometLogger": ("lightning.pytorch.loggers.comet", ("_COMET_AVAILABLE",)),
    "MLFlowLogger": ("lightning.pytorch.loggers.mlflow", ("_MLFLOW_AVAILABLE",)),
    "LitLogger": ("lightning.pytorch.loggers.litlogger", ("_LITLOGGER_AVAILABLE",)),
}


def _requirement_flags(module: str, flags: tuple[str, ...]) -> list[Any]:
    try:
        mod = importlib.import_module(module)
    except ImportError:  # check() names the flags; without them nothing is known to be missing
        return []
    return [getattr(mod, f) for f in flags if hasattr(getattr(mod, f, None), "requirement")]


def missing_logger_requirements(cls: type) -> list[str]:
    """The pip requirements of a Lightning logger class (or a subclass of one) when none of them
    is installed, e.g. ['tensorboard', 'tensorboardX']; [] when the logger can be built."""
    for base in cls.__mro__:
        module, flags = _LOGGER_REQUIREMENTS.get(base.__name__, ("", ()))
        if flags and base.__module__.startswith("lightning."):
            caches = _requirement_flags(module, flags)
            return [] if not caches or any(caches) else [str(c.requirement) for c in caches]
    return []


# -- torchvision: the device pipeline's policies read torchvision's own tables, so its draws
# cannot drift from the loader's (`data/device_augment.py`); v2 has no public accessors for them


def augmentation_space(policy: Any) -> dict[str, tuple[Any, bool]]:
    """{op: (magnitudes(num_bins, height, width), signed)} of an AutoAugment-family transform."""
    return type(policy)._AUGMENTATION_SPACE


def autoaugment_policies(policy: Any) -> list[tuple[tuple[str, float, int | None], ...]]:
    """AutoAugment's sub-policies: ((op, probability, magnitude bin), (op, ...))."""
    return policy._policies


def inverse_affine_matrix(
    center: list[float], angle: float, translate: list[float], scale: float, shear: list[float]
) -> list[float]:
    """The 6 coefficients torchvision's affine/rotate kernels sample with."""
    from torchvision.transforms.v2.functional._geometry import _get_inverse_affine_matrix

    return _get_inverse_affine_matrix(center, angle, translate, scale, shear)


def _torchvision_missing() -> list[str]:
    from torchvision.transforms import v2

    missing = []
    for cls in (v2.AutoAugment, v2.RandAugment, v2.TrivialAugmentWide):
        if not isinstance(getattr(cls, "_AUGMENTATION_SPACE", None), dict):
            missing.append(f"torchvision.transforms.v2.{cls.__name__}._AUGMENTATION_SPACE")
    if not isinstance(getattr(v2.AutoAugment(), "_policies", None), list):
        missing.append("torchvision.transforms.v2.AutoAugment._policies")
    try:
        inverse_affine_matrix([0.0, 0.0], 0.0, [0.0, 0.0], 1.0, [0.0, 0.0])
    except (ImportError, TypeError):
        missing.append("torchvision.transforms.v2.functional._geometry._get_inverse_affine_matrix")
    return missing


def check() -> list[str]:
    """One line per private Lightning or torchvision name used above that the installed
    version lacks."""
    missing = _torchvision_missing()
    if UnrepeatedDistributedSampler is None:
        missing.append("lightning.pytorch.overrides.distributed.UnrepeatedDistributedSampler")
    if not isinstance(getattr(hparams_mixin, "_given_hyperparameters", None), ContextVar):
        missing.append("lightning.pytorch.core.mixins.hparams_mixin._given_hyperparameters")
    if not isinstance(getattr(ModelCheckpoint(), "_enable_version_counter", None), bool):
        missing.append("lightning.pytorch.callbacks.ModelCheckpoint._enable_version_counter")
    if "ckpt_path" not in inspect.signature(getattr(L.Trainer, "_run", lambda: 0)).parameters:
        missing.append("lightning.pytorch.Trainer._run(model, ckpt_path)")
    if not callable(getattr(LightningCLI, "_parse_ckpt_path", None)):
        missing.append("lightning.pytorch.cli.LightningCLI._parse_ckpt_path")
    for module, flags in _LOGGER_REQUIREMENTS.values():
        if len(_requirement_flags(module, flags)) != len(flags):
            missing += [f"{module}.{f}" for f in flags]
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)  # the probe's "GPU available: ..." lines would only be noise
    try:
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)  # never fits
    finally:
        log.setLevel(level)
    probes = [
        ("trainer._accelerator_connector.cluster_environment", cluster_environment),
        ("trainer.fit_loop.epoch_loop.batch_progress.current.processed", train_batches_done),
        ("trainer.fit_loop.epoch_loop.batch_progress.is_last_batch", is_last_train_batch),
        ("trainer._signal_connector.received_sigterm", _stops),
        (
            "trainer._checkpoint_connector.dump_checkpoint",
            lambda t: t._checkpoint_connector.dump_checkpoint,
        ),
    ]
    for name, probe in probes:
        try:
            probe(trainer)
        except AttributeError:
            missing.append(name)
    return missing


def _stops(trainer: L.Trainer) -> None:
    request_stop(trainer)
    if not trainer.received_sigterm:
        raise AttributeError("trainer.received_sigterm no longer reads the flag request_stop sets")
