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
