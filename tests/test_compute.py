"""Training compute counts: FLOPs per image of a training step, machine-independent."""

import torch
from torch import nn

from vit_lightning import VisionTransformer
from vit_lightning.analysis.compute import format_flops, train_flops_per_image


def test_linear_layers_cost_what_the_textbook_says_and_nothing_changes():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 20), nn.ReLU(), nn.Linear(20, 10))
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    # per layer: forward 2*in*out, the weight's gradient 2*in*out, the input's gradient 2*in*out
    # except for the first layer, whose input (the image) needs none
    expected = 4 * (48 * 20 + 20 * 10) + 2 * 20 * 10
    assert train_flops_per_image(net, (3, 4, 4), batch=5) == expected
    assert torch.equal(torch.rand(3), before)  # the RNG streams are where they were
    assert all(p.grad is None for p in net.parameters())


def test_vit_compute_scales_with_its_tokens():
    kw = dict(img_size=28, in_chans=1, num_classes=10, embed_dim=32, depth=2, num_heads=2)
    p4 = train_flops_per_image(
        VisionTransformer(**kw, patch_size=4, drop_path_rate=0.5), (1, 28, 28)
    )
    p7 = train_flops_per_image(VisionTransformer(**kw, patch_size=7), (1, 28, 28))
    assert 2.5 < p4 / p7 < 3.5  # 49 against 16 patch tokens, [CLS] and the head on both
    assert format_flops(1.234e15) == "1.23 PFLOP" and format_flops(45e6) == "45 MFLOP"
