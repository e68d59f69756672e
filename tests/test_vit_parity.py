"""Our VisionTransformer is a drop-in for timm's: same constructor, keys, init, outputs, DropPath."""

import inspect

import pytest
import timm
import torch
from helpers.parity import randomize_
from timm.layers import resample_abs_pos_embed as timm_resample
from timm.models.vision_transformer import VisionTransformer as TimmViT

import vit_lightning
from vit_lightning.models.vit import (
    SMALL_DATA_OPTIONS,
    VisionTransformer,
    checkpoint_filter_fn,
    resample_abs_pos_embed,
)

# Small but complete models: each config exercises one option of the contract.
TINY = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=48, depth=2, num_heads=3)
CONFIGS = {
    "token": dict(TINY),
    "avg": dict(TINY, global_pool="avg"),
    "avg_no_class_token": dict(TINY, global_pool="avg", class_token=False),
    "no_qkv_bias": dict(TINY, qkv_bias=False),
    "layerscale": dict(TINY, init_values=1e-5),
    "one_channel": dict(TINY, img_size=28, patch_size=7, in_chans=1),
    "patch16": dict(TINY, img_size=64, patch_size=16, embed_dim=64, num_heads=4),
    "mlp_ratio_2": dict(TINY, mlp_ratio=2.0),
    "dynamic_img_size": dict(TINY, dynamic_img_size=True),
}


def _input(cfg: dict, batch: int = 4, size: tuple[int, int] | None = None) -> torch.Tensor:
    s = size or (cfg["img_size"],) * 2
    return torch.randn(
        batch, cfg.get("in_chans", 3), *s, generator=torch.Generator().manual_seed(1)
    )


@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_loads_strictly_both_ways_and_logits_match(name):
    cfg = CONFIGS[name]
    theirs = randomize_(TimmViT(**cfg)).eval()
    ours = VisionTransformer(**cfg).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # timm -> ours
    x = _input(cfg)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)

    ours2 = randomize_(VisionTransformer(**cfg), seed=3).eval()
    theirs.load_state_dict(ours2.state_dict(), strict=True)  # ours -> timm
    with torch.no_grad():
        torch.testing.assert_close(ours2(x), theirs(x), rtol=0, atol=1e-5)
        # the split API agrees too: pooled features before the head
        feats = ours2.forward_head(ours2.forward_features(x), pre_logits=True)
        torch.testing.assert_close(
            feats,
            theirs.forward_head(theirs.forward_features(x), pre_logits=True),
            rtol=0,
            atol=1e-5,
        )


def test_dynamic_img_size_resamples_pos_embed_like_timm():
    cfg = CONFIGS["dynamic_img_size"]
    theirs = randomize_(TimmViT(**cfg)).eval()
    ours = VisionTransformer(**cfg).eval()
    ours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        for size in [(48, 40), (16, 16), (32, 64)]:  # up, down, and non-square
            x = _input(cfg, size=size)
            torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["token", "avg_no_class_token", "layerscale", "patch16"])
def test_same_seed_builds_timms_exact_weights(name):
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    theirs = TimmViT(**cfg).state_dict()
    torch.manual_seed(0)
    ours = VisionTransformer(**cfg).state_dict()
    assert list(ours) == list(theirs)  # same keys in the same order
    for k in theirs:
        assert torch.equal(ours[k], theirs[k]), k


def test_constructor_names_and_defaults_match_timm():
    ours = inspect.signature(VisionTransformer).parameters
    theirs = inspect.signature(TimmViT).parameters
    for name, p in ours.items():
        if name in SMALL_DATA_OPTIONS:  # ours, off by default (tests/test_vit_small_data.py)
            assert p.default == SMALL_DATA_OPTIONS[name], name
            continue
        assert name in theirs, f"{name} is not a timm VisionTransformer argument"
        assert p.default == theirs[name].default, name
    required = {
        "img_size",
        "patch_size",
        "in_chans",
        "num_classes",
        "global_pool",
        "embed_dim",
        "depth",
        "num_heads",
        "mlp_ratio",
        "qkv_bias",
        "class_token",
        "init_values",
        "drop_rate",
        "pos_drop_rate",
        "proj_drop_rate",
        "attn_drop_rate",
        "drop_path_rate",
        "dynamic_img_size",
    }
    assert required <= set(ours)


@pytest.mark.parametrize(
    "name", ["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224"]
)
def test_named_constructors_match_timm_architectures(name):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        ours = getattr(vit_lightning, name)().state_dict()
        theirs = timm.create_model(name, pretrained=False).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_drop_path_schedule_matches_timm():
    cfg = dict(TINY, depth=6, drop_path_rate=0.3)
    ours, theirs = VisionTransformer(**cfg), TimmViT(**cfg)

    def rates(m):
        return [getattr(b.drop_path1, "drop_prob", 0.0) for b in m.blocks]

    assert rates(ours) == rates(theirs)
    assert rates(ours)[0] == 0.0 and rates(ours)[-1] == pytest.approx(0.3)
    for b_ours, b_theirs in zip(ours.blocks, theirs.blocks, strict=True):
        # a rate of 0 is an Identity module in both, not a DropPath(0.0)
        assert type(b_ours.drop_path1).__name__ == type(b_theirs.drop_path1).__name__
        assert getattr(b_ours.drop_path2, "drop_prob", 0.0) == getattr(
            b_theirs.drop_path2, "drop_prob", 0.0
        )


def test_drop_path_train_mode_masks_match_timm():
    cfg = dict(TINY, depth=4, drop_path_rate=0.5)
    theirs = randomize_(TimmViT(**cfg)).train()
    ours = VisionTransformer(**cfg).train()
    ours.load_state_dict(theirs.state_dict())
    x = _input(cfg, batch=16)
    outs = []
    for model in (theirs, ours):
        torch.manual_seed(1234)
        y = model(x)
        y.square().sum().backward()
        outs.append((y.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=1e-5)
    for g_t, g_o in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(g_o, g_t, rtol=1e-4, atol=1e-5)
    # and the masks really drew: a different seed gives different outputs
    torch.manual_seed(99)
    assert not torch.allclose(ours(x), outs[1][0])


def test_drop_path_function_matches_timm_per_sample():
    from timm.layers import drop_path as timm_drop_path

    from vit_lightning.models.vit import drop_path

    x = torch.randn(64, 5, 8)
    torch.manual_seed(7)
    a = drop_path(x, 0.25, training=True)
    torch.manual_seed(7)
    b = timm_drop_path(x, 0.25, training=True)
    assert torch.equal(a, b)


@pytest.mark.parametrize("new", [(12, 12), (6, 6), (8, 12)])
def test_resample_abs_pos_embed_matches_timm(new):
    pe = torch.randn(1, 1 + 8 * 8, 16)
    torch.testing.assert_close(
        resample_abs_pos_embed(pe, new, (8, 8), num_prefix_tokens=1),
        timm_resample(pe, list(new), [8, 8], num_prefix_tokens=1),
        rtol=0,
        atol=0,
    )


def test_checkpoint_filter_fn_fine_tunes_at_new_resolution_like_timm():
    cfg = dict(TINY)
    src = randomize_(VisionTransformer(**cfg)).state_dict()
    ours = VisionTransformer(**dict(cfg, img_size=48)).eval()
    ours.load_state_dict(checkpoint_filter_fn(src, ours), strict=True)
    # timm at 48 fed the same checkpoint through its own resampling must agree
    theirs = TimmViT(**dict(cfg, img_size=48)).eval()
    sd = dict(src, pos_embed=timm_resample(src["pos_embed"], [12, 12], [8, 8], num_prefix_tokens=1))
    theirs.load_state_dict(sd, strict=True)
    x = _input(dict(cfg, img_size=48))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)
