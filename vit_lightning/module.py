"""The LightningModule: wraps any image classifier (our ViT by default, timm's plugs in unchanged)."""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BatchSizeFinder, LearningRateFinder
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from vit_lightning import compat
from vit_lightning.errors import ConfigError
from vit_lightning.models.pretrained import check_state_dict_fits, load_pretrained
from vit_lightning.training.distill import (
    Distillation,
    check_teacher,
    check_teacher_weights,
    distillation_loss,
    load_teacher,
)
from vit_lightning.training.finetune import Freeze, check_layer_decay, param_groups
from vit_lightning.training.finetune import freeze as freeze_layers
from vit_lightning.training.schedule import Schedule, plan


class ViTClassifier(L.LightningModule):
    """Image classification with AdamW, per-step warmup + cosine LR, label smoothing, Mixup/CutMix.

    Args:
        net: The network, (B, C, H, W) -> (B, num_classes) logits. The CLI fills its num_classes,
            in_chans and img_size from the DataModule.
        lr: Peak learning rate, reached after warmup.
        weight_decay: AdamW decay for weight matrices; norms, biases and `net.no_weight_decay()`
            parameters are not decayed.
        betas: AdamW betas.
        warmup_epochs: Linear warmup length, in (fractional) epochs; counted in optimizer steps.
        min_lr: Learning rate at the end of the cosine decay.
        label_smoothing: Cross-entropy label smoothing.
        mixup_alpha: Mixup Beta(α, α); 0 disables.
        cutmix_alpha: CutMix Beta(α, α); 0 disables.
        mixup_prob: Probability of applying Mixup or CutMix to a batch.
        mixup_switch_prob: Probability of CutMix instead of Mixup when both are enabled.
        lr_scaling: How `lr` and `min_lr` follow the global batch size (per-device batch x
            devices x nodes x gradient accumulation): "none" uses them as given; "linear" or
            "sqrt" treats them as tuned for `base_batch_size` and scales by the ratio (or its
            square root). The global batch size and the lr used are printed at the start of fit.
        base_batch_size: The global batch size `lr` was tuned for; only used with lr_scaling.
        compile: Compile `net` with torch.compile: true for the defaults, or a dict of its
            keyword arguments, e.g. `{mode: max-autotune}`. The module is compiled in place
            (`nn.Module.compile`), so state_dict keys and checkpoints are unchanged, and DDP
            wraps the module as usual.
        pretrained: Initial weights of `net` for fine-tuning: a file in timm's format (.pth,
            .pt, .bin, .safetensors), a checkpoint of this template (.ckpt), a timm model name
            or an `hf-hub:` id (see `vit_lightning.models.pretrained`). Position embeddings and the
            patch kernel are resampled, a head of another class count is re-initialised. Loaded
            at the start of a run that does not resume (`--ckpt_path` unset or none), so a
            resumed run keeps its own weights.
        layer_decay: Layer-wise lr decay (e.g. 0.65): each block's lr is scaled by
            layer_decay ** (its distance from the head), with timm's groups (`group_matcher`).
        freeze: "none"; "backbone" trains the head only (a linear probe); k freezes the patch
            embedding, position embedding and first k blocks. Frozen layers stay in eval mode.
        grad_checkpointing: Recompute each block's activations in the backward pass
            (`net.set_grad_checkpointing()`): less memory, same gradients, more compute.
        teacher: Knowledge distillation's teacher (DeiT), any classifier of the data's input
            and classes, e.g. `vit_lightning.models.teachers.ResNet`. Frozen, in eval mode, not saved
            in checkpoints (see `vit_lightning.training.distill`).
        teacher_checkpoint: The teacher's weights: a state_dict file or a template `.ckpt`;
            "none" distils from its random initial weights on purpose. Required unless the
            teacher loads its own weights and says so (`has_weights = True`).
        distillation: "none", "soft" (KL at temperature distillation_tau) or "hard" (the
            teacher's argmax, DeiT's best). It trains the distillation head of a distilled
            student (`VisionTransformerDistilled`), else the class token's logits.
        distillation_alpha: Weight of the distillation loss; the label loss gets 1 - alpha.
        distillation_tau: Temperature of soft distillation.
        tta: Test-time augmentation of `test` and `predict`: "flip" averages the logits of each
            image and its left-right mirror (airbench's), for data where a mirror is still the
            same class; test then also logs `test/acc_no_tta`, the plain prediction's accuracy.
            Validation stays plain, so the val curve and the best checkpoint do not depend on it.
    """

    def __init__(
        self,
        net: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_epochs: float = 5.0,
        min_lr: float = 1e-5,
        label_smoothing: float = 0.1,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        lr_scaling: Literal["none", "linear", "sqrt"] = "none",
        base_batch_size: int = 256,
        compile: bool | dict[str, Any] = False,
        pretrained: str | None = None,
        layer_decay: float | None = None,
        freeze: Freeze = "none",
        grad_checkpointing: bool = False,
        teacher: nn.Module | None = None,
        teacher_checkpoint: str | None = None,
        distillation: Distillation = "none",
        distillation_alpha: float = 0.5,
        distillation_tau: float = 1.0,
        tta: Literal["none", "flip"] = "none",
    ) -> None:
        super().__init__()
        non_negative = {
            "lr": lr,
            "weight_decay": weight_decay,
            "warmup_epochs": warmup_epochs,
            "min_lr": min_lr,
            "mixup_alpha": mixup_alpha,
            "cutmix_alpha": cutmix_alpha,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ConfigError.of(self, f"model.{name}={value} must be >= 0")
        if lr_scaling not in ("none", "linear", "sqrt"):
            raise ConfigError.of(
                self, f"model.lr_scaling={lr_scaling!r} must be none, linear or sqrt"
            )
        if base_batch_size < 1:
            raise ConfigError.of(self, f"model.base_batch_size={base_batch_size} must be >= 1")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError.of(self, f"model.label_smoothing={label_smoothing} must be in [0, 1)")
        check_layer_decay(layer_decay)
        if (teacher is None) != (distillation == "none"):
            raise ConfigError.of(
                self,
                f"model.distillation={distillation!r} needs model.teacher, and a teacher needs "
                "model.distillation soft or hard: set both, or neither",
            )
        if not 0.0 <= distillation_alpha <= 1.0 or distillation_tau <= 0:
            raise ConfigError.of(
                self,
                f"model.distillation_alpha={distillation_alpha} must be in [0, 1] and "
                f"model.distillation_tau={distillation_tau} > 0",
            )
        if tta not in ("none", "flip"):
            raise ConfigError.of(self, f"model.tta={tta!r} must be none or flip")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            # AdamW would only object inside fit, after config.yaml and the W&B run exist
            raise ConfigError.of(
                self, f"model.betas={list(betas)} must be two numbers in [0, 1), e.g. [0.9, 0.999]"
            )
        # Built by the CLI, hparams hold net's class_path/init_args (linked values included), so
        # `ViTClassifier.load_from_checkpoint(path)` rebuilds it. A net built in Python is not a
        # hyperparameter: its weights are in the state_dict, and pickling it would bloat hparams.
        cli = compat.given_hyperparameters()
        self.save_hyperparameters(ignore=[] if cli else ["net", "teacher"])
        self.net = net
        self.pretrained_loaded = False  # see setup
        # what LearningRateFinder / BatchSizeFinder found ("lr", "batch_size"): saved in
        # checkpoints beside the hparams, which keep the configured values (see on_fit_start)
        self.tuned: dict[str, float | int] = {}
        self._built_for: tuple[float, int | None] | None = None  # (lr, batch size) of the optimizer
        self._saved_shape: dict[str, Any] | None = None  # the checkpoint's `_run_shape()`
        self._schedule: Schedule | None = None  # the lr schedule in use
        self._resuming = False  # this fit resumes a checkpoint (set in on_load_checkpoint)
        if teacher is not None:
            check_teacher_weights(teacher, teacher_checkpoint)
            check_teacher(teacher, net)
            if hasattr(net, "set_distilled_training"):
                net.set_distilled_training(True)  # training returns (logits, logits_dist)
        # not a submodule: out of the state_dict, checkpoints and DDP; loaded in setup
        self.__dict__["teacher"] = teacher
        self.frozen = freeze_layers(net, freeze)
        if grad_checkpointing:
            if not callable(getattr(net, "set_grad_checkpointing", None)):
                raise ConfigError.of(
                    self,
                    f"model.grad_checkpointing needs net.set_grad_checkpointing() (timm's API); "
                    f"{type(net).__name__} has none",
                )
            net.set_grad_checkpointing(True)
        if compile:
            # in place: no `_orig_mod.` wrapper, and the first forward pays the compile time
            net.compile(**(compile if isinstance(compile, dict) else {}))
        num_classes = net.num_classes
        self.mixup_fn = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            from timm.data import (
                Mixup,  # only needed for Mixup/CutMix; the model never imports timm
            )

            self.mixup_fn = Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                prob=mixup_prob,
                switch_prob=mixup_switch_prob,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
        # one metric object per stage: they keep separate state across interleaved train/val
        top5 = min(5, num_classes)
        # nan_strategy="disable": the default NaN check reads a tensor on the host every update,
        # a device sync per step; a NaN loss then shows in the mean (NonFiniteGuard stops on it)
        self.train_loss, self.val_loss, self.test_loss = (
            MeanMetric(nan_strategy="disable") for _ in range(3)
        )
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_acc_no_tta = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        self.val_confmat = MulticlassConfusionMatrix(num_classes)  # for ValPictures

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def train(self, mode: bool = True) -> ViTClassifier:
        super().train(mode)
        for m in self.frozen:  # no dropout or DropPath in frozen layers: their features are fixed
            m.eval()
        return self

    def setup(self, stage: str) -> None:
        # once per module, and not under a checkpoint: a resumed run, or `test` after `fit` in
        # the same process, keeps the weights it has
        pretrained = self.hparams.get("pretrained")
        # trainer.ckpt_path is set only after setup; the CLI's Trainer knows the checkpoint now
        restoring = getattr(self.trainer, "restoring", None) or self.trainer.ckpt_path
        if pretrained and restoring is None and not self.pretrained_loaded:
            rank_zero_info(load_pretrained(self.net, pretrained).summary())
            self.pretrained_loaded = True
        if self.teacher is not None and stage == "fit":  # every run, resumed or not
            load_teacher(self.teacher, self.hparams.get("teacher_checkpoint"))
        if stage == "fit":  # see on_load_checkpoint
            self._built_for, self._resuming, self._saved_shape = None, False, None

    def on_fit_start(self) -> None:
        # LearningRateFinder / BatchSizeFinder (callbacks, which run first) changed hparams.lr
        # or the DataModule's batch_size after configure_optimizers: record what they found,
        # keep the configured lr in hparams (a resume then sees no conflict), and rebuild the
        # optimizer and schedule for the found values. The optimizer has no state yet: a
        # resumed run's is restored after this hook.
        configured = self.hparams_initial.get("lr", self.hparams.lr)
        if self.hparams.lr != configured:
            self.tuned["lr"] = float(self.hparams.lr)
            self.hparams.lr = configured
        batch_size = getattr(self.trainer.datamodule, "batch_size", None)
        if self._built_for is not None and batch_size != self._built_for[1]:
            self.tuned["batch_size"] = batch_size
        if self._built_for is not None and self._built_for != (self.tuned.get("lr"), batch_size):
            rank_zero_info(f"Tuned by Lightning's tuner callbacks: {_show_tuned(self.tuned)}")
            self.trainer.strategy.setup_optimizers(self.trainer)

    def on_train_start(self) -> None:
        if self.teacher is not None:  # where Lightning put the student, in its dtype
            dtype = next(self.net.parameters()).dtype
            self.teacher.to(device=self.device, dtype=dtype)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a checkpoint of a `torch.compile(net)` wrapper (other code, older runs) carries the
        # prefix `_orig_mod.` in its keys; ours never do, so strip it to load either kind
        sd = checkpoint.get("state_dict", {})
        if any("_orig_mod." in k for k in sd):
            checkpoint["state_dict"] = sd = {k.replace("_orig_mod.", ""): v for k, v in sd.items()}
        check_state_dict_fits(self, sd)  # another architecture or class count
        # a fit's checkpoint loaded before its optimizer is built: a resume (the tuner callbacks
        # also reload their own temporary checkpoint, later, in on_fit_start)
        t = self._trainer
        self._resuming = t is not None and t.state.fn == "fit" and self._built_for is None
        if not self._resuming:
            return
        self.tuned = dict(checkpoint.get(TUNED_KEY, {}))
        shape = checkpoint.get(RUN_SHAPE_KEY)
        self._saved_shape = {**shape, "step": checkpoint.get("global_step", 0)} if shape else None
        _skip_tuners_on_resume(t)
        dm = t.datamodule
        if "batch_size" in self.tuned and hasattr(dm, "batch_size"):
            if dm.batch_size != self.tuned["batch_size"]:
                rank_zero_info(
                    f"Resuming with data.batch_size={self.tuned['batch_size']}, which "
                    f"BatchSizeFinder found for this run (configured: {dm.batch_size})"
                )
            dm.batch_size = int(self.tuned["batch_size"])  # before any train loader is built

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[TUNED_KEY] = dict(self.tuned)
        if self._trainer is not None:
            checkpoint[RUN_SHAPE_KEY] = self._run_shape()

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        hp = self.hparams
        if self.mixup_fn is not None:
            x, target = self.mixup_fn(x, y)  # soft targets, smoothing already applied
            logits, kd_logits = _pair(self(x))
            loss = F.cross_entropy(logits, target)
        else:
            logits, kd_logits = _pair(self(x))
            loss = F.cross_entropy(logits, y, label_smoothing=hp.label_smoothing)
        if self.teacher is not None:  # the same (mixed) batch, under the same autocast
            with torch.no_grad():
                teacher_logits = self.teacher(x)
            kd = distillation_loss(hp.distillation, kd_logits, teacher_logits, hp.distillation_tau)
            loss = (1 - hp.distillation_alpha) * loss + hp.distillation_alpha * kd
        # Metrics accumulate on the device with update(); self.log() runs only on the steps whose
        # row the logger writes and at epoch end. Every self.log() call of a Metric costs host
        # time (Lightning moves it to the device on every call), and a float logged every step
        # becomes a blocking host-to-device copy on CUDA.
        self.train_loss.update(loss.detach())
        self.train_acc.update(logits.detach(), y)  # against the unmixed labels
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False)
            peak = max(self.lr_schedulers().get_last_lr())  # the head's, under layer decay
            self.log("train/lr", peak, on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_end(self) -> None:
        # a Metric logged here is computed (synced across ranks) and reset by Lightning
        self.log("train/loss_epoch", self.train_loss)
        self.log("train/acc", self.train_acc)

    def _tta(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The logits of `tta`: the mean over the image and its mirror, or `logits` as they are."""
        if self.hparams.tta == "none":
            return logits
        return (logits + self(x.flip(-1))) / 2

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        logits = self(x)
        if stage == "test" and self.hparams.tta != "none":
            self.test_acc_no_tta.update(logits, y)
            logits = self._tta(x, logits)
        # per-sample losses: the mean weighs every image once, whatever the batch (or rank) split
        getattr(self, f"{stage}_loss").update(F.cross_entropy(logits, y, reduction="none"))
        getattr(self, f"{stage}_acc").update(logits, y)
        getattr(self, f"{stage}_acc_top5").update(logits, y)
        if stage == "val":
            self.val_confmat.update(logits, y)

    def _log_eval(self, stage: str) -> None:
        """Once per eval epoch (see training_step): Lightning computes, syncs and resets them."""
        for key in ("loss", "acc", "acc_top5"):
            self.log(f"{stage}/{key}", getattr(self, f"{stage}_{key}"), prog_bar=key == "acc")

    def on_validation_epoch_start(self) -> None:
        self.val_confmat.reset()  # not logged through self.log, so nobody else resets it

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")
        if self.trainer.sanity_checking:
            return  # a few sanity batches are not a score worth remembering
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")
        if self.hparams.tta != "none":
            self.log("test/acc_no_tta", self.test_acc_no_tta)

    def predict_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x = batch[0]
        return self._tta(x, self(x)).softmax(dim=-1)  # (B, num_classes) class probabilities

    @property
    def global_batch_size(self) -> int | None:
        """Samples per optimizer step over all devices, when the DataModule's batch_size is known."""
        batch_size = getattr(self.trainer.datamodule, "batch_size", None)
        if batch_size is None:
            return None
        return batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def _scaled_lr(self) -> tuple[float, float]:
        """(lr, min_lr) after `lr_scaling` for the global batch size; logged once on rank 0."""
        hp, gbs = self.hparams, self.global_batch_size
        if hp.lr_scaling == "none" or gbs is None:
            if hp.lr_scaling != "none":
                raise ConfigError.of(
                    self,
                    f"model.lr_scaling={hp.lr_scaling!r} needs the DataModule's batch_size to "
                    "compute the global batch size; set model.lr_scaling=none and scale lr by hand",
                )
            factor = 1.0
        else:
            factor = gbs / hp.base_batch_size
            factor = factor if hp.lr_scaling == "linear" else math.sqrt(factor)
        t = self.trainer
        if gbs is not None:
            rank_zero_info(
                f"Global batch size {gbs} = {t.datamodule.batch_size} per device x "
                f"{t.world_size} devices x {t.accumulate_grad_batches} accumulation; lr "
                f"{hp.lr:g} -> {hp.lr * factor:g} (lr_scaling={hp.lr_scaling}"
                + (f", base_batch_size={hp.base_batch_size})" if hp.lr_scaling != "none" else ")")
            )
        return hp.lr * factor, hp.min_lr * factor

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        lr, min_lr = self._scaled_lr()
        if "lr" in self.tuned:  # LearningRateFinder tried real lrs at this batch size: no scaling
            lr = float(self.tuned["lr"])
        self._built_for = (
            self.tuned.get("lr"),
            getattr(self.trainer.datamodule, "batch_size", None),
        )
        groups = param_groups(self.net, hp.weight_decay, hp.get("layer_decay"))
        for g in groups:
            g["lr"] = lr * g["lr_scale"]  # the schedule below multiplies each group's own lr
        fused = self.device.type == "cuda"  # one kernel for all parameters on GPU
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(hp.betas), fused=fused)

        floor = min_lr / lr if lr > 0 else 0.0
        self._schedule = schedule = self._plan_schedule(lr, floor)
        rank_zero_info(schedule.describe(lr, min_lr))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor(floor))
        return {
            "optimizer": optimizer,
            # "lr": every group's lr is logged as lr/<group> (LearningRateMonitor, see cli.py)
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
        }

    def _run_shape(self) -> dict[str, Any]:
        """The settings a resumed run's meaning depends on, as this run has them, plus the
        schedule in use and the position in the epoch (saved in checkpoints, see
        `_plan_schedule`)."""
        t = self.trainer
        dm = t.datamodule
        train = getattr(dm, "train_set", None)
        batch_size = getattr(dm, "batch_size", None)
        schedule = self._schedule or plan(t, self.hparams.warmup_epochs)
        done = compat.train_batches_done(t) * (batch_size or 0) * t.world_size
        return {
            "data.batch_size": batch_size,
            "trainer.world_size": t.world_size,
            "trainer.accumulate_grad_batches": t.accumulate_grad_batches,
            "training images": len(train) if train is not None else None,
            "trainer.max_epochs": t.max_epochs,
            "trainer.max_steps": t.max_steps,
            "trainer.limit_train_batches": t.limit_train_batches,
            "schedule": [schedule.warmup, schedule.total],
            "position": [t.current_epoch, done],  # epoch, its images trained
        }

    def _plan_schedule(self, lr: float, floor: float) -> Schedule:
        """This fit's schedule. A resumed fit keeps its checkpoint's, unless settings it depends
        on changed (batch size, devices, accumulation, training set, epoch or step limits): then
        it is re-derived for the new settings from the resume step on (the steps still to come
        at the new sizes), and that is said once, with the lr at the resume step.

        The data position is kept in images (see `ResumableLoader.load_state_dict`): an
        epoch-boundary resume starts the next epoch, a mid-epoch one continues at the same
        image, or is refused when that is no whole batch at the new size.
        """
        schedule = plan(self.trainer, self.hparams.warmup_epochs)
        saved = self._saved_shape if self._resuming else None
        if not saved or "schedule" not in saved:
            return schedule
        old = Schedule(*saved["schedule"], schedule.per_epoch, schedule.ends_by)
        now = self._run_shape()
        changed = [
            f"{k} {saved[k]} -> {now[k]}"
            for k in now
            if k not in ("schedule", "position") and saved.get(k, now[k]) != now[k]
        ]
        if not changed:
            return old  # the run's own schedule, as it was planned
        step = int(saved.get("step", 0))
        new = plan(self.trainer, self.hparams.warmup_epochs, (step, *saved["position"]))
        lines = [f"Resuming {self.trainer.ckpt_path} with other settings: " + "; ".join(changed)]
        if (old.warmup, old.total) != (new.warmup, new.total):
            lines.append(
                f"the lr schedule is re-derived for them: warmup {old.warmup} -> {new.warmup}, "
                f"total {old.total} -> {new.total} steps; at the resume step {step} the lr is "
                f"{lr * new.factor(floor)(step):.3g} (the checkpoint's schedule: "
                f"{lr * old.factor(floor)(step):.3g})"
            )
        rank_zero_info("\n  ".join(lines))
        return new


TUNED_KEY = "vit_lightning_tuned"  # checkpoint key: what the tuner callbacks found
RUN_SHAPE_KEY = "vit_lightning_run_shape"  # checkpoint key: ViTClassifier._run_shape()
TUNERS = (LearningRateFinder, BatchSizeFinder)


def check_optimizer_flags(optimizer: Any, lr_scheduler: Any) -> None:
    """LightningCLI's `--optimizer` / `--lr_scheduler` would replace `configure_optimizers`: its
    parameter groups (no decay on norms, biases, position embeddings), layer decay, the
    warmup/cosine schedule and `lr_scaling` would be lost, and the training step's lr logging
    fails on a run without a scheduler. Refused at startup, with the settings that exist."""
    given = [f"--{k}" for k, v in (("optimizer", optimizer), ("lr_scheduler", lr_scheduler)) if v]
    if given:
        raise ConfigError(
            f"{' and '.join(given)} would replace ViTClassifier's AdamW, its parameter groups, "
            "layer decay and warmup/cosine schedule, so they are not supported. Set model.lr, "
            "model.weight_decay, model.betas, model.warmup_epochs, model.min_lr, "
            "model.layer_decay; for another optimizer, subclass ViTClassifier, override "
            "configure_optimizers and pass --model=<your class>"
        )


def _show_tuned(tuned: dict[str, float | int]) -> str:
    parts = []
    if "lr" in tuned:
        parts.append(f"lr {tuned['lr']:g} (replaces model.lr; lr_scaling does not apply to it)")
    if "batch_size" in tuned:
        parts.append(f"data.batch_size {tuned['batch_size']}")
    return ", ".join(parts) + "; saved in checkpoints, kept by a resumed fit"


def _skip_tuners_on_resume(trainer: L.Trainer) -> None:
    """A resumed fit keeps what the tuner callbacks found at the start of the run (saved in the
    checkpoint); searching again would train on the restored weights and then reload them,
    dropping the resumed optimizer and loop state."""
    tuners = [c for c in trainer.callbacks if isinstance(c, TUNERS)]
    if tuners:
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, TUNERS)]
        names = ", ".join(type(c).__name__ for c in tuners)
        rank_zero_info(f"Resuming: {names} not run again; the run keeps the values it found")


def _pair(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """(class logits, distillation logits): a distilled ViT in training returns both; any other
    network's logits serve as both."""
    return out if isinstance(out, tuple) else (out, out)
