"""Fine-tuning: optimizer parameter groups (layer-wise lr decay) and frozen layers.

Layer decay uses timm's own `param_groups_layer_decay` through the network's `group_matcher`,
so the groups and lr scales are timm's for any timm-API network (ours or timm's).
"""

from __future__ import annotations

import math
from typing import Literal

from torch import nn

from vit_lightning.errors import ConfigError

Freeze = int | Literal["none", "backbone"]


def param_groups(net: nn.Module, weight_decay: float, layer_decay: float | None) -> list[dict]:
    """AdamW groups: no decay for norms, biases and `net.no_weight_decay()`; with `layer_decay`,
    one group per (layer, decay) with `lr_scale` = layer_decay ** (depth from the head)."""
    no_decay_names = set(getattr(net, "no_weight_decay", set)())
    if layer_decay is None:
        decay, no_decay = [], []
        for name, p in net.named_parameters():
            if p.requires_grad:  # pos_embed/cls_token by name, norms/biases/gammas are 1-D
                (no_decay if p.ndim <= 1 or name in no_decay_names else decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay, "name": "decay", "lr_scale": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay", "lr_scale": 1.0},
        ]
    if not callable(getattr(net, "group_matcher", None)):
        raise ConfigError(
            f"model.layer_decay={layer_decay} needs a network with timm's group_matcher(); "
            f"{type(net).__name__} has none. Unset model.layer_decay"
        )
    from timm.models import group_parameters
    from timm.optim import param_groups_layer_decay

    groups = param_groups_layer_decay(
        net, weight_decay, no_weight_decay_list=no_decay_names, layer_decay=layer_decay
    )
    # timm keeps the group names only in a debug log: name them again for the lr logger
    layer = group_parameters(net, net.group_matcher(coarse=False), reverse=True)
    names = {id(p): n for n, p in net.named_parameters()}
    for g in groups:
        first = names[id(g["params"][0])]
        kind = "no_decay" if g["params"][0].ndim <= 1 or first in no_decay_names else "decay"
        g["name"] = f"layer_{layer.get(first, max(layer.values()))}_{kind}"
    return groups


def freeze(net: nn.Module, what: Freeze) -> list[nn.Module]:
    """Stop gradients to part of `net`; returns the frozen modules, which stay in eval mode.

    "backbone": everything but the head (a linear probe). k: the patch embedding, the prefix
    tokens, the position embedding and the first k blocks.
    """
    if what == "none" or what == 0:
        return []
    for attr in ("patch_embed", "blocks", "head"):
        if not hasattr(net, attr):
            raise ConfigError(
                f"model.freeze={what!r} needs a ViT with patch_embed, blocks and head; "
                f"{type(net).__name__} has no {attr!r}"
            )
    heads = ("head", "head_dist")  # a distilled ViT (DeiT) has two
    if what == "backbone":
        modules = [m for n, m in net.named_children() if n not in heads]
        params = [p for n, p in net.named_parameters() if n.split(".")[0] not in heads]
    else:
        if not isinstance(what, int) or not 0 <= what <= len(net.blocks):
            raise ConfigError(
                f"model.freeze={what!r} must be none, backbone or a block count in "
                f"0..{len(net.blocks)}"
            )
        modules = [net.patch_embed, *net.blocks[:what]]
        names = ("cls_token", "dist_token", "reg_token", "pos_embed")
        tokens = [getattr(net, n, None) for n in names]
        params = [p for m in modules for p in m.parameters()]
        params += [t for t in tokens if isinstance(t, nn.Parameter)]
    for p in params:
        p.requires_grad_(False)
    return modules


def check_layer_decay(layer_decay: float | None) -> None:
    if layer_decay is not None and not (0.0 < layer_decay <= 1.0 and math.isfinite(layer_decay)):
        raise ConfigError(f"model.layer_decay={layer_decay} must be in (0, 1], e.g. 0.65")
