"""Our VisionTransformer against timm's, same config and same weights: train-step and inference
throughput (img/s), eager and torch.compile'd, all four interleaved in one process; and our
[CLS]-only last block against the every-token forward it replaces when nothing observes it."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn

from benchmarks.common import cifar_net_kwargs, interleaved, table
from vit_lightning import VisionTransformer


def configs(device: str) -> list[tuple[str, dict, int]]:
    """(name, VisionTransformer kwargs, batch size): the CIFAR recipe's net and a patch-16 one."""
    cuda = device == "cuda"
    p16 = dict(
        img_size=224,
        patch_size=16,
        embed_dim=384 if cuda else 192,
        depth=12,
        num_heads=6 if cuda else 3,
        num_classes=1000,
    )
    return [
        ("CIFAR net (configs/cifar10.yaml), 32px", cifar_net_kwargs(), 512 if cuda else 64),
        (f"ViT-{'S' if cuda else 'Ti'}/16, 224px", p16, 128 if cuda else 16),
    ]


def train_steps(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, amp: torch.dtype | None
) -> Callable[[], None]:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), fused=x.is_cuda)

    def run() -> None:
        for _ in range(steps):
            with torch.autocast(x.device.type, amp or torch.float32, enabled=amp is not None):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    return run


def infer_steps(
    model: nn.Module, x: torch.Tensor, steps: int, amp: torch.dtype | None
) -> Callable[[], None]:
    model.eval()

    @torch.no_grad()
    def run() -> None:
        for _ in range(steps):
            with torch.autocast(x.device.type, amp or torch.float32, enabled=amp is not None):
                model(x)

    return run


def forward_backward(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, amp: torch.dtype | None
) -> Callable[[], None]:
    model.train()

    def run() -> None:
        for _ in range(steps):
            with torch.autocast(x.device.type, amp or torch.float32, enabled=amp is not None):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            model.zero_grad(set_to_none=True)

    return run


def cls_only_vs_all_tokens(
    kwargs: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    amp: torch.dtype | None,
    repeats: int,
) -> tuple[float, float]:
    """Seconds per forward + backward of ours as forward() runs it, and with every token computed:
    a forward hook on `norm` could see the tokens, so forward() then keeps them all, as timm."""
    torch.manual_seed(0)
    cls_only = VisionTransformer(**kwargs).to(x.device)
    all_tokens = copy.deepcopy(cls_only)
    all_tokens.norm.register_forward_hook(lambda *_: None)
    fns = {
        k: forward_backward(m, x, y, steps, amp)
        for k, m in [("cls", cls_only), ("all", all_tokens)]
    }
    t = interleaved(fns, repeats, x.device)
    return t["cls"] / steps, t["all"] / steps


def variants(kwargs: dict, compiled: bool, device: str) -> dict[str, nn.Module]:
    """Ours and timm's with identical weights (seed 0), plus compiled-in-place copies."""
    torch.manual_seed(0)
    ours, theirs = VisionTransformer(**kwargs), TimmViT(**kwargs)
    theirs.load_state_dict(ours.state_dict())
    models = {"ours": ours, "timm": theirs}
    if compiled:
        for name, m in list(models.items()):
            models[f"{name} compiled"] = copy.deepcopy(m)
            models[f"{name} compiled"].compile()
    return {k: m.to(device) for k, m in models.items()}


def run(device: str, repeats: int, compiled: bool, amp: torch.dtype | None) -> str:
    train_rows, infer_rows, cls_rows = [], [], []
    for name, kwargs, batch in configs(device):
        x = torch.randn(
            batch, kwargs.get("in_chans", 3), kwargs["img_size"], kwargs["img_size"], device=device
        )
        y = torch.randint(0, kwargs["num_classes"], (batch,), device=device)
        steps = 3 if device == "cuda" else 2
        train = {
            k: train_steps(m, x, y, steps, amp)
            for k, m in variants(kwargs, compiled, device).items()
        }
        infer = {
            k: infer_steps(m, x, 2 * steps, amp)
            for k, m in variants(kwargs, compiled, device).items()
        }
        for rows, fns, per_call in ((train_rows, train, steps), (infer_rows, infer, 2 * steps)):
            t = interleaved(fns, repeats, device)
            ips = {k: batch * per_call / v for k, v in t.items()}
            row = [name, batch, ips["ours"], ips["timm"], ips["ours"] / ips["timm"]]
            if compiled:
                row += [
                    ips["ours compiled"],
                    ips["timm compiled"],
                    ips["ours compiled"] / ips["timm compiled"],
                    ips["ours compiled"] / ips["ours"],
                ]
            rows.append(row)
        cls_s, all_s = cls_only_vs_all_tokens(kwargs, x, y, steps, amp, repeats)
        cls_rows.append([name, batch, 1e3 * cls_s, 1e3 * all_s, all_s / cls_s])
        print(f"  {name}: done", flush=True)
    head = ["config", "batch", "ours img/s", "timm img/s", "**ours / timm**"]
    if compiled:
        head += ["ours compiled", "timm compiled", "**ours / timm, compiled**", "compiled / eager"]
    return (
        "**Train step** (forward, backward, AdamW step):\n\n"
        + table(head, train_rows)
        + "\n\n**Inference** (eval mode, no_grad):\n\n"
        + table(head, infer_rows)
        + "\n\n**[CLS]-only last block** (ours, forward + backward): `forward()` computes the last "
        "block for the [CLS] token alone; a hook on the last block or `norm` makes it compute every "
        "token, as timm does:\n\n"
        + table(
            ["config", "batch", "[CLS]-only ms", "all tokens ms", "**all tokens / [CLS]-only**"],
            cls_rows,
        )
    )
