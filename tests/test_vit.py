"""The ViT on its own terms: the seeds' patch-embedding identity, shapes, gradients, determinism, errors."""

import re

import pytest
import torch
import torch.nn.functional as F
from helpers.parity import assert_cls_only_matches_full

from vit_lightning import VisionTransformer, vit_small_patch4_32, vit_tiny_patch4_32
from vit_lightning.errors import ConfigError
from vit_lightning.models.vit import Attention, DropPath, drop_path_rates

TINY = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=48, depth=2, num_heads=3)


def test_unfold_matmul_equals_conv_patch_embedding():
    model = VisionTransformer(**TINY)
    pe = model.patch_embed
    x = torch.randn(2, 3, 32, 32)
    p, D = 4, TINY["embed_dim"]
    patches = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, 64, 3*4*4), row-major grid
    tokens = patches @ pe.proj.weight.reshape(D, -1).T + pe.proj.bias  # (B, 64, D)
    torch.testing.assert_close(pe(x), tokens, rtol=1e-5, atol=1e-5)
    assert pe(x).shape == (2, 64, D)


@pytest.mark.parametrize(
    "global_pool,class_token", [("token", True), ("avg", True), ("avg", False)]
)
def test_shapes(global_pool, class_token):
    model = VisionTransformer(**TINY, global_pool=global_pool, class_token=class_token)
    x = torch.randn(5, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (5, 64 + int(class_token), 48)
    assert model.forward_head(feats, pre_logits=True).shape == (5, 48)
    assert model(x).shape == (5, 10)
    headless = VisionTransformer(**dict(TINY, num_classes=0))
    assert headless(x).shape == (5, 48)


@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_gradients_reach_every_parameter(global_pool):
    model = VisionTransformer(**TINY, global_pool=global_pool, init_values=0.1, drop_path_rate=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    F.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_eval_is_deterministic_and_train_is_stochastic():
    rates = dict(
        drop_rate=0.2, pos_drop_rate=0.2, proj_drop_rate=0.2, attn_drop_rate=0.2, drop_path_rate=0.2
    )
    model = VisionTransformer(**TINY, **rates)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_drop_path_is_identity_in_eval_and_scales_kept_samples():
    x = torch.ones(10_000, 3)
    dp = DropPath(0.3)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    kept = y[:, 0] != 0
    assert torch.equal(y[kept], torch.full_like(y[kept], 1 / 0.7))  # rescaled by 1/keep
    assert (y[~kept] == 0).all() and (y == y[:, :1]).all()  # whole samples dropped
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.02)
    assert drop_path_rates(0.3, 4) == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_attention_maps_are_the_weights_the_fused_path_uses():
    model = VisionTransformer(**TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = model.attention_maps(x)
    assert len(maps) == 2 and maps[0].shape == (2, 3, 65, 65)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 3, 65))
    # the explicit weights times v reproduce the fused SDPA output of the first block
    attn: Attention = model.blocks[0].attn
    tokens = model.blocks[0].norm1(model._pos_embed(model.patch_embed(x), (8, 8)))
    _, _, v = attn._qkv(tokens)
    manual = attn.proj((maps[0] @ v).transpose(1, 2).reshape(2, 65, 48))
    with torch.no_grad():
        torch.testing.assert_close(attn(tokens), manual, rtol=1e-5, atol=1e-5)


def test_no_weight_decay_names_real_parameters():
    model = VisionTransformer(**TINY)
    assert model.no_weight_decay() <= set(dict(model.named_parameters()))


def test_cifar_presets_run_on_32px_images():
    for factory, dim in [(vit_tiny_patch4_32, 192), (vit_small_patch4_32, 384)]:
        model = factory(depth=1)  # preset arguments can be overridden, as with timm.create_model
        assert model.embed_dim == dim and model.patch_embed.grid_size == (8, 8)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(embed_dim=50, num_heads=3), "embed_dim=50 must be divisible by num_heads=3"),
        (dict(img_size=30, patch_size=4), "img_size=30 must be divisible by patch_size=4"),
        (dict(drop_path_rate=-0.1), "drop_path_rate=-0.1 must be in [0, 1)"),
        (dict(attn_drop_rate=1.0), "attn_drop_rate=1.0 must be in [0, 1)"),
        (
            dict(global_pool="token", class_token=False),
            "global_pool='token' needs class_token=True",
        ),
        (dict(depth=0), "depth=0 must be >= 1"),
    ],
)
def test_bad_config_fails_at_construction_naming_the_argument(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        VisionTransformer(**{**TINY, **kwargs})


def test_wrong_input_shape_names_the_expected_shape():
    model = VisionTransformer(**TINY)
    with pytest.raises(
        ValueError, match=r"expected input of shape \(B, 3, 32, 32\), got \(2, 3, 64, 64\)"
    ):
        model(torch.randn(2, 3, 64, 64))
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\), got \(2, 1, 32, 32\)"):
        model(torch.randn(2, 1, 32, 32))
    dyn = VisionTransformer(**TINY, dynamic_img_size=True)
    with pytest.raises(ConfigError, match="not divisible by patch_size 4x4"):
        dyn(torch.randn(2, 3, 30, 32))


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_cls_only_last_block_gives_the_full_forward(qkv_bias):
    # forward() runs the last block for the [CLS] token only; the logits, the gradients and the
    # DropPath draws must be those of forward_head(forward_features(x)), which keeps every token
    model = VisionTransformer(**TINY, drop_path_rate=0.5, qkv_bias=qkv_bias, init_values=0.1)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)  # no zero-init head or bias can hide a miswiring
    x = torch.randn(6, 3, 32, 32)
    assert_cls_only_matches_full(model, x)
    blk = model.blocks[-1].eval()
    tokens = torch.randn(2, 65, 48)
    torch.testing.assert_close(blk(tokens, first_only=True), blk(tokens)[:, :1], rtol=0, atol=1e-6)
