"""DeiT (Touvron et al., 2021): a ViT with a distillation token and head, state_dict-compatible with
timm's `timm.models.deit.VisionTransformerDistilled`.

The distillation token is a second learned prefix token, after [CLS]; its output feeds `head_dist`,
which training matches to a teacher's predictions while `head` matches the labels. At inference
the two heads' logits are averaged. Names, init order and outputs follow timm, so a seed gives
timm's weights and a state_dict moves both ways; `tests/test_deit_parity.py` checks it.

Shapes: B batch, N tokens ([CLS], distillation, registers, patches), D embed dim.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vit_lightning.errors import ConfigError
from vit_lightning.models.vit import VisionTransformer, trunc_normal_

__all__ = [
    "VisionTransformerDistilled",
    "deit_tiny_distilled_patch16_224",
    "deit_small_distilled_patch16_224",
    "deit_base_distilled_patch16_224",
]


class VisionTransformerDistilled(VisionTransformer):
    """ViT with a distillation token and head (DeiT), a drop-in for timm's class of the same name.

    Takes VisionTransformer's arguments; needs class_token=True and global_pool='token'. The
    prefix tokens are [CLS], the distillation token, then any registers (timm's DeiT has none).
    Call `set_distilled_training()` to have forward return (logits, logits_dist) in training.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        weight_init = kwargs.pop("weight_init", "")
        if weight_init not in ("", "skip"):
            raise ConfigError.of(
                self, f"weight_init={weight_init!r} is not supported; use '' or 'skip'"
            )
        super().__init__(*args, **kwargs, weight_init="skip")  # init once every parameter exists
        if self.global_pool != "token":
            raise ConfigError.of(
                self,
                f"global_pool={self.global_pool!r}: VisionTransformerDistilled's heads read the "
                f"[CLS] and distillation tokens; use global_pool='token'",
            )
        self.num_prefix_tokens += 1
        self.dist_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        if self.pos_embed is not None and not self.no_embed_class:  # one more prefix row
            shape = (1, self.patch_embed.num_patches + self.num_prefix_tokens, self.embed_dim)
            self.pos_embed = nn.Parameter(torch.zeros(shape), self.pos_embed.requires_grad)
        n = self.num_classes
        self.head_dist = nn.Linear(self.embed_dim, n) if n > 0 else nn.Identity()
        self.distilled_training = False  # set_distilled_training() to train with the teacher
        if weight_init != "skip":
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """timm's order: the distillation token first, then VisionTransformer's init."""
        trunc_normal_(self.dist_token, std=0.02)
        super().init_weights()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's groups for DeiT; the registers, if any, join the stem."""
        stem = r"^cls_token|pos_embed|patch_embed|dist_token"
        return dict(
            stem=stem + ("|reg_token" if self.reg_token is not None else ""),
            blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        )

    @torch.jit.ignore
    def set_distilled_training(self, enable: bool = True) -> None:
        """In training, return both heads' logits for the two losses instead of their mean."""
        self.distilled_training = enable

    def get_classifier(self) -> tuple[nn.Module, nn.Module]:
        return self.head, self.head_dist

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace both heads, on the model's device and dtype and in its train/eval mode."""
        if global_pool not in (None, "", "token"):
            raise ConfigError.of(
                self,
                f"global_pool={global_pool!r}: VisionTransformerDistilled's heads read the [CLS] "
                f"and distillation tokens; leave global_pool unset",
            )
        self.num_classes = num_classes
        w = next(self.patch_embed.parameters())  # its device and dtype; any tokenizer
        dd = dict(device=w.device, dtype=w.dtype)
        for name in ("head", "head_dist"):
            head = (
                nn.Linear(self.embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
            )
            setattr(self, name, head.train(self.training))

    def _prefix_tokens(self) -> list[torch.Tensor]:
        return [t for t in (self.cls_token, self.dist_token, self.reg_token) if t is not None]

    def forward_head(
        self, x: torch.Tensor, pre_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, N, D) tokens -> (B, num_classes) logits, the mean of the two heads'; in training
        with distilled training on, the pair (logits, logits_dist); the mean (B, D) token if
        pre_logits."""
        x, x_dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])  # [CLS], distillation
        if pre_logits:
            return (x + x_dist) / 2
        x, x_dist = self.head(x), self.head_dist(x_dist)
        if self.distilled_training and self.training:
            return x, x_dist
        return (x + x_dist) / 2


# Named constructors, timm's DeiT architectures. Keyword arguments override the preset.
def deit_tiny_distilled_patch16_224(**kwargs) -> VisionTransformerDistilled:
    """DeiT-Ti/16 with distillation at 224×224 (5.9M params)."""
    cfg = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return VisionTransformerDistilled(**{**cfg, **kwargs})


def deit_small_distilled_patch16_224(**kwargs) -> VisionTransformerDistilled:
    """DeiT-S/16 with distillation at 224×224 (22M params)."""
    cfg = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return VisionTransformerDistilled(**{**cfg, **kwargs})


def deit_base_distilled_patch16_224(**kwargs) -> VisionTransformerDistilled:
    """DeiT-B/16 with distillation at 224×224 (87M params)."""
    cfg = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return VisionTransformerDistilled(**{**cfg, **kwargs})
