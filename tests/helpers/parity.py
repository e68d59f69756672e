"""What the timm parity tests share: noisy weights, seeded inputs, a timm/ours pair, a tolerance."""

import torch


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Noise in every parameter, so a miswired norm, scale or bias cannot hide at its init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def images(batch: int = 4, size: tuple[int, int] = (32, 32), chans: int = 3) -> torch.Tensor:
    return torch.randn(batch, chans, *size, generator=torch.Generator().manual_seed(1))


def pair(ours_cls: type, theirs_cls: type, cfg: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, timm's) in eval mode with timm's noisy weights loaded strictly into ours."""
    theirs = randomize_(theirs_cls(**cfg)).eval()
    ours = ours_cls(**cfg).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def assert_loads_both_ways(ours_cls: type, theirs_cls: type, cfg: dict) -> torch.nn.Module:
    """timm's weights load strictly into ours and ours into timm's, with the same eval logits and
    pre-logits features; returns the second model of ours."""
    ours, theirs = pair(ours_cls, theirs_cls, cfg)  # timm -> ours
    x = images()
    with torch.no_grad():
        close(ours(x), theirs(x))
    ours2 = randomize_(ours_cls(**cfg), seed=3).eval()
    theirs.load_state_dict(ours2.state_dict(), strict=True)  # ours -> timm
    with torch.no_grad():
        close(ours2(x), theirs(x))
        feats = ours2.forward_head(ours2.forward_features(x), pre_logits=True)
        close(feats, theirs.forward_head(theirs.forward_features(x), pre_logits=True))
        if getattr(ours2, "dynamic_img_size", False):
            close(ours2(images(2, (48, 40))), theirs(images(2, (48, 40))))
    return ours2


def assert_cls_only_matches_full(model: torch.nn.Module, x: torch.Tensor) -> None:
    """`model(x)` (its last block computes [CLS] alone) against
    `forward_head(forward_features(x))` (every token): the same logits, gradients and DropPath
    draws, from the same seed."""
    outs = []
    for fn in (model, lambda x: model.forward_head(model.forward_features(x))):
        model.zero_grad()
        torch.manual_seed(5)
        y = fn(x)
        y.square().sum().backward()
        outs.append((y.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=1e-5)
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
