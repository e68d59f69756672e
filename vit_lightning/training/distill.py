"""Knowledge distillation (DeiT, Touvron et al. 2021): a frozen teacher and the distillation loss.

The teacher is any classifier. It is frozen, in eval mode, runs without grad on the student's
(mixed) batch under the same autocast, and is not a submodule of the LightningModule: it stays
out of checkpoints and out of DDP, and every run loads it from `model.teacher_checkpoint`.

A teacher must have weights, since distilling from random ones trains the student toward noise
without a word: `model.teacher_checkpoint` names them, `none` opts in to the teacher's initial
(random) weights on purpose, and a teacher class that loads its own weights in its constructor
says so with `has_weights = True`. Anything else is a ConfigError at construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from vit_lightning.errors import ConfigError
from vit_lightning.models.pretrained import read_state_dict

Distillation = Literal["none", "soft", "hard"]
RANDOM_TEACHER = "none"  # model.teacher_checkpoint=none: the teacher's initial weights, on purpose


def check_teacher_weights(teacher: nn.Module, checkpoint: str | None) -> None:
    """A teacher with no weights (no checkpoint, none of its own, no opt-in) is refused at once,
    before config.yaml or a W&B run is written."""
    if not checkpoint and not getattr(teacher, "has_weights", False):
        raise ConfigError(
            f"model.teacher ({type(teacher).__name__}) has no weights, and distilling from "
            "random ones teaches noise: set model.teacher_checkpoint to its state_dict file or "
            "a .ckpt of this template (e.g. the teacher run's checkpoints/last.ckpt), or "
            f"model.teacher_checkpoint={RANDOM_TEACHER} to distil from its random initial "
            "weights on purpose"
        )


def check_teacher(teacher: nn.Module, student: nn.Module) -> None:
    """A teacher that cannot read the student's input or has another class count fails at
    construction, naming both: one forward of a zero image, on random weights."""
    in_chans = getattr(student, "in_chans", 3)
    img = getattr(getattr(student, "patch_embed", None), "img_size", None) or (32, 32)
    shape = (1, in_chans, *img)
    try:
        with torch.no_grad():
            out = teacher.eval()(torch.zeros(shape))
    except Exception as e:
        raise ConfigError(
            f"model.teacher ({type(teacher).__name__}) cannot take the data's input {shape}: "
            f"{str(e).splitlines()[0]}. Build the teacher for in_chans={in_chans} and this size"
        ) from e
    classes = getattr(student, "num_classes", None)
    if out.ndim != 2 or (classes is not None and out.shape[1] != classes):
        raise ConfigError(
            f"model.teacher ({type(teacher).__name__}) gives {tuple(out.shape[1:])} logits, the "
            f"data has {classes} classes: set the teacher's num_classes to {classes}"
        )


def load_teacher(teacher: nn.Module, checkpoint: str | None) -> nn.Module:
    """The teacher with its weights (a state_dict file or a template .ckpt), frozen, in eval."""
    if checkpoint == RANDOM_TEACHER:
        rank_zero_info(
            f"model.teacher_checkpoint={RANDOM_TEACHER}: distilling from "
            f"{type(teacher).__name__}'s random initial weights, as asked"
        )
    elif checkpoint:
        sd = read_state_dict(Path(checkpoint), what="model.teacher_checkpoint")
        try:
            teacher.load_state_dict(sd)
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()][:3]
            raise ConfigError(
                f"model.teacher_checkpoint {checkpoint} does not fit model.teacher "
                f"({type(teacher).__name__}): {' '.join(lines)}"
            ) from e
    return teacher.eval().requires_grad_(False)


def distillation_loss(
    kind: Distillation, student: torch.Tensor, teacher: torch.Tensor, tau: float
) -> torch.Tensor:
    """DeiT's: "hard" is cross-entropy to the teacher's argmax; "soft" the KL divergence between
    the tau-softened distributions, scaled by tau^2 (Hinton et al.), per logit as DeiT does."""
    if kind == "hard":
        return F.cross_entropy(student, teacher.argmax(dim=1))
    s, t = F.log_softmax(student / tau, dim=1), F.log_softmax(teacher / tau, dim=1)
    return F.kl_div(s, t, reduction="sum", log_target=True) * tau * tau / student.numel()
