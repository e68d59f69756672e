"""VisionTransformer's variants: register tokens, no_embed_class, qk_norm and pos_embed='none' as
timm's same options (keys, seeded init, outputs, model API), and the fixed sin-cos position
embedding, which timm's ViT lacks, against timm's own builder."""

import numpy as np
import pytest
import torch
from helpers.parity import (
    assert_cls_only_matches_full,
    assert_loads_both_ways,
    close,
    images,
    pair,
    randomize_,
)
from timm.layers import build_sincos2d_pos_embed as timm_sincos
from timm.models import vision_transformer as timm_vit
from timm.optim._param_groups import param_groups_layer_decay

from vit_lightning.errors import ConfigError
from vit_lightning.models.layers import Block
from vit_lightning.models.vit import (
    VisionTransformer,
    build_sincos2d_pos_embed,
    checkpoint_filter_fn,
)

TINY = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=48, depth=2, num_heads=3)
VARIANTS = {
    "reg4": dict(TINY, reg_tokens=4),
    "reg2_no_embed_class": dict(TINY, reg_tokens=2, no_embed_class=True),
    "no_embed_class": dict(TINY, no_embed_class=True),
    "qk_norm": dict(TINY, qk_norm=True, qkv_bias=False),
    "pos_embed_none": dict(TINY, pos_embed="none"),
    "avg_reg_no_class_token": dict(
        TINY, global_pool="avg", class_token=False, reg_tokens=1, no_embed_class=True
    ),
    "reg_qk_norm_layerscale": dict(TINY, reg_tokens=3, qk_norm=True, init_values=0.1),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_state_dict_loads_strictly_both_ways_and_logits_match(name):
    assert_loads_both_ways(VisionTransformer, timm_vit.VisionTransformer, VARIANTS[name])


@pytest.mark.parametrize("name", VARIANTS)
def test_train_mode_outputs_and_gradients_match_timm(name):
    cfg = dict(VARIANTS[name], drop_path_rate=0.5, drop_rate=0.2, pos_drop_rate=0.1)
    ours, theirs = pair(VisionTransformer, timm_vit.VisionTransformer, cfg)
    x = images(8)
    outs = []
    for model in (theirs.train(), ours.train()):
        torch.manual_seed(1234)  # the same DropPath masks and dropout draws
        y = model(x)
        y.square().sum().backward()
        outs.append((y.detach(), {n: p.grad for n, p in model.named_parameters()}))
    close(outs[1][0], outs[0][0])
    assert outs[1][1].keys() == outs[0][1].keys()
    for n, g in outs[0][1].items():
        torch.testing.assert_close(outs[1][1][n], g, rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("name", VARIANTS)
def test_same_seed_builds_timms_exact_weights(name):
    torch.manual_seed(0)
    theirs = timm_vit.VisionTransformer(**VARIANTS[name]).state_dict()
    torch.manual_seed(0)
    ours = VisionTransformer(**VARIANTS[name]).state_dict()
    assert list(ours) == list(theirs)  # same keys in the same order
    for k in theirs:
        assert torch.equal(ours[k], theirs[k]), k


def test_prefix_tokens_are_cls_then_registers_with_timms_keys():
    model = VisionTransformer(**VARIANTS["reg4"])
    assert model.num_prefix_tokens == 5 and model.num_reg_tokens == 4
    assert model.reg_token.shape == (1, 4, 48) and model.pos_embed.shape == (1, 5 + 64, 48)
    no_embed = VisionTransformer(**VARIANTS["reg2_no_embed_class"])
    assert no_embed.pos_embed.shape == (1, 64, 48)  # patches only
    none = VisionTransformer(**VARIANTS["pos_embed_none"])
    assert none.pos_embed is None and "pos_embed" not in none.state_dict()
    assert {"q_norm.weight", "k_norm.bias"} <= set(
        VisionTransformer(**VARIANTS["qk_norm"]).blocks[0].attn.state_dict()
    )


@pytest.mark.parametrize("name", ["reg4", "reg2_no_embed_class", "pos_embed_none"])
def test_dynamic_img_size_resamples_around_every_prefix_token_like_timm(name):
    ours, theirs = pair(
        VisionTransformer, timm_vit.VisionTransformer, dict(VARIANTS[name], dynamic_img_size=True)
    )
    with torch.no_grad():
        for size in [(48, 40), (16, 16)]:
            x = images(2, size)
            close(ours(x), theirs(x))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(indices=2, return_prefix_tokens=True, output_fmt="NLC"),
        dict(indices=[0, 1], return_prefix_tokens=True, norm=True),
        dict(indices=[1], output_dict=True, return_prefix_tokens=True),
    ],
    ids=str,
)
@pytest.mark.parametrize("name", ["reg4", "avg_reg_no_class_token"])
def test_forward_intermediates_split_off_every_prefix_token_like_timm(name, kwargs):
    ours, theirs = pair(VisionTransformer, timm_vit.VisionTransformer, VARIANTS[name])
    x = images(2)
    with torch.no_grad():
        got = ours.forward_intermediates(x, **kwargs)
        close(got, theirs.forward_intermediates(x, **kwargs))
    prefix = got["image_intermediates_prefix"][0] if kwargs.get("output_dict") else got[1][0][1]
    assert prefix.shape == (2, ours.num_prefix_tokens, 48)


@pytest.mark.parametrize("name", ["reg4", "avg_reg_no_class_token"])
def test_registers_are_in_the_stem_group_and_not_decayed_like_timm(name):
    ours, theirs = pair(VisionTransformer, timm_vit.VisionTransformer, VARIANTS[name])
    assert ours.group_matcher() == theirs.group_matcher()
    nwd = ours.no_weight_decay()
    assert "reg_token" in nwd and nwd <= set(dict(ours.named_parameters()))
    assert nwd == theirs.no_weight_decay() & set(dict(theirs.named_parameters()))

    def groups(m):
        gs = param_groups_layer_decay(m, 0.05, m.no_weight_decay(), layer_decay=0.5)
        names = {id(p): n for n, p in m.named_parameters()}
        return [(g["lr_scale"], g["weight_decay"], [names[id(p)] for p in g["params"]]) for g in gs]

    got = groups(ours)
    assert got == groups(theirs)
    stem = next(names for scale, wd, names in got if "reg_token" in names)
    assert "patch_embed.proj.weight" not in stem  # the no-decay stem group: tokens, pos_embed
    assert next(s for s, _, names in got if "reg_token" in names) == pytest.approx(0.5**3)


@pytest.mark.parametrize("name", ["reg4", "reg_qk_norm_layerscale"])
def test_cls_only_fast_path_reads_cls_before_the_registers(name, monkeypatch):
    model = randomize_(VisionTransformer(**VARIANTS[name], drop_path_rate=0.5)).train()
    x = images(6)
    assert_cls_only_matches_full(model, x)
    calls = []
    block_forward = Block.forward
    monkeypatch.setattr(
        Block, "forward", lambda self, x, k=0: calls.append(k) or block_forward(self, x, k)
    )
    model(x)
    assert calls == [0, 1]  # the last block computes [CLS] alone, not the 4 registers


@pytest.mark.parametrize("name", ["reg4", "qk_norm"])
def test_attention_maps_cover_every_prefix_token_and_are_the_weights_used(name):
    model = randomize_(VisionTransformer(**VARIANTS[name])).eval()
    x = images(2)
    maps = model.attention_maps(x)
    n = model.num_prefix_tokens + 64
    assert len(maps) == 2 and maps[0].shape == (2, 3, n, n)
    attn = model.blocks[0].attn
    tokens = model.blocks[0].norm1(model._pos_embed(model.patch_embed(x), (8, 8)))
    _, _, v = attn._qkv(tokens)  # with qk_norm, the maps must be of the normed q and k
    manual = attn.proj((maps[0] @ v).transpose(1, 2).reshape(2, n, 48))
    with torch.no_grad():
        torch.testing.assert_close(attn(tokens), manual, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["reg4", "reg2_no_embed_class"])
def test_checkpoint_filter_fn_resamples_around_the_prefix_tokens_like_timm(name):
    src = randomize_(timm_vit.VisionTransformer(**VARIANTS[name]), seed=5).state_dict()
    cfg = dict(VARIANTS[name], img_size=48)
    ours, theirs = VisionTransformer(**cfg).eval(), timm_vit.VisionTransformer(**cfg).eval()
    ours.load_state_dict(checkpoint_filter_fn(src, ours), strict=True)
    theirs.load_state_dict(timm_vit.checkpoint_filter_fn(src, theirs), strict=True)
    n = 0 if ours.no_embed_class else ours.num_prefix_tokens
    assert torch.equal(ours.pos_embed[:, :n], src["pos_embed"][:, :n])  # prefix rows untouched
    with torch.no_grad():
        close(ours(images(2, (48, 48))), theirs(images(2, (48, 48))))


def test_pos_embed_none_makes_avg_pooling_blind_to_patch_order():
    model = randomize_(VisionTransformer(**VARIANTS["pos_embed_none"], global_pool="avg")).eval()
    x = images(2)
    swapped = x.clone()  # two 4x4 patches exchanged
    swapped[..., 0:4, 0:4], swapped[..., 8:12, 4:8] = x[..., 8:12, 4:8], x[..., 0:4, 0:4]
    learned = randomize_(VisionTransformer(**TINY, global_pool="avg")).eval()
    with torch.no_grad():
        learned.pos_embed.mul_(5)  # as large as the patch tokens: its effect shows clearly
        torch.testing.assert_close(model(swapped), model(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(learned(swapped), learned(x), atol=1e-3)


# --- the fixed sin-cos position embedding --------------------------------------------------------


@pytest.mark.parametrize("grid", [(8, 8), (6, 10), (1, 3)])
def test_sincos_equals_timms_build_sincos2d_pos_embed(grid):
    ours = build_sincos2d_pos_embed(grid, 48)
    assert ours.shape == (grid[0] * grid[1], 48)
    theirs = timm_sincos(list(grid), dim=48, temperature=10000, interleave_sin_cos=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_sincos_is_moco_v3s_layout_and_maes_with_halves_swapped():
    s, dim = 5, 32
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim // 4))  # the frequencies of both papers
    row, col = np.divmod(np.arange(s * s), s)  # patch tokens are row-major
    a_row, a_col = np.outer(row, omega), np.outer(col, omega)
    moco = np.concatenate([np.sin(a_row), np.cos(a_row), np.sin(a_col), np.cos(a_col)], axis=1)
    mae = np.concatenate([np.sin(a_col), np.cos(a_col), np.sin(a_row), np.cos(a_row)], axis=1)
    ours = build_sincos2d_pos_embed((s, s), dim).double().numpy()
    np.testing.assert_allclose(ours, moco, atol=1e-5)
    np.testing.assert_allclose(np.roll(ours, dim // 2, axis=1), mae, atol=1e-5)


@pytest.mark.parametrize("no_embed_class", [False, True])
def test_sincos_model_holds_the_embedding_with_zero_prefix_rows(no_embed_class):
    model = VisionTransformer(
        **TINY, pos_embed="sincos", reg_tokens=1, no_embed_class=no_embed_class
    )
    n = 0 if no_embed_class else 2  # [CLS] and the register: rows of zeros, as in MoCo v3 and MAE
    assert model.pos_embed.shape == (1, n + 64, 48)
    assert torch.equal(model.pos_embed[0, :n], torch.zeros(n, 48))
    torch.testing.assert_close(
        model.pos_embed[0, n:], timm_sincos([8, 8], 48, interleave_sin_cos=True), rtol=0, atol=0
    )
    with pytest.raises(ConfigError, match=r"embed_dim=6 must be divisible by 4 for pos_embed='sin"):
        VisionTransformer(**dict(TINY, embed_dim=6), pos_embed="sincos")


def test_sincos_pos_embed_is_not_trained_by_an_optimizer_step():
    model = VisionTransformer(**TINY, pos_embed="sincos").train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert not model.pos_embed.requires_grad and "pos_embed" in model.state_dict()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    model(images()).logsumexp(-1).mean().backward()
    opt.step()
    assert model.pos_embed.grad is None
    assert torch.equal(model.pos_embed, before["pos_embed"])
    assert not torch.equal(model.cls_token, before["cls_token"])  # the step did train the rest


def test_sincos_state_dict_loads_into_timms_learned_model_with_the_same_logits():
    cfg = dict(TINY, dynamic_img_size=True)
    ours = randomize_(VisionTransformer(**cfg, pos_embed="sincos")).eval()
    with torch.no_grad():  # the noise filled the table too: put the sin-cos one back
        ours.pos_embed.copy_(VisionTransformer(**cfg, pos_embed="sincos").pos_embed)
    theirs = timm_vit.VisionTransformer(**cfg).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        for size in [(32, 32), (48, 40)]:  # the table resamples as a learned one does
            close(ours(images(2, size)), theirs(images(2, size)))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(pos_embed="rope"), "pos_embed='rope' must be 'learn', 'sincos' or 'none'"),
        (dict(reg_tokens=-1), "reg_tokens=-1 must be >= 0"),
        (dict(weight_init="jax"), "weight_init='jax' is not supported; use ''"),
    ],
)
def test_bad_variant_config_fails_at_construction_naming_the_argument(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        VisionTransformer(**TINY, **kwargs)
