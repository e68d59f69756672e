"""Our VisionTransformerDistilled (DeiT) is a drop-in for timm's: keys, seeded init, eval logits,
distilled training with its DropPath masks, and the model API with two prefix tokens and two heads."""

import inspect

import pytest
import timm
import torch
from helpers.parity import assert_loads_both_ways, close, images, pair, randomize_
from timm.models import deit as timm_deit
from timm.models import vision_transformer as timm_vit
from timm.optim._param_groups import param_groups_layer_decay

import vit_lightning
from vit_lightning.errors import ConfigError
from vit_lightning.models import deit
from vit_lightning.models.deit import VisionTransformerDistilled
from vit_lightning.models.layers import Block
from vit_lightning.models.vit import checkpoint_filter_fn

TimmDistilled = timm_deit.VisionTransformerDistilled
TINY = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=48, depth=2, num_heads=3)
CONFIGS = {
    "deit": dict(TINY),
    "qk_norm_layerscale": dict(TINY, qk_norm=True, init_values=0.1, qkv_bias=False),
    "dynamic_img_size": dict(TINY, dynamic_img_size=True),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_loads_strictly_both_ways_and_eval_logits_match(name):
    assert_loads_both_ways(VisionTransformerDistilled, TimmDistilled, CONFIGS[name])


@pytest.mark.parametrize("distilled", [True, False])
def test_training_outputs_masks_and_gradients_match_timm(distilled):
    cfg = dict(TINY, drop_path_rate=0.5, drop_rate=0.2)
    ours, theirs = pair(VisionTransformerDistilled, TimmDistilled, cfg)
    x = images(8)
    outs = []
    for model in (theirs, ours):
        model.train().set_distilled_training(distilled)
        torch.manual_seed(1234)  # the same DropPath masks and head dropout
        y = model(x)
        assert isinstance(y, tuple) == distilled  # (logits, logits_dist) only when distilling
        loss = sum(t.square().sum() for t in y) if distilled else y.square().sum()
        loss.backward()
        outs.append((y, {n: p.grad for n, p in model.named_parameters()}))
    close(outs[1][0], outs[0][0])
    for n, g in outs[0][1].items():
        torch.testing.assert_close(outs[1][1][n], g, rtol=1e-4, atol=1e-5, msg=n)
    if distilled:
        assert not torch.allclose(*outs[1][0])  # two heads, two different predictions
        with torch.no_grad():  # in eval the mean of the two, even with distilled training on
            y, feats = ours.eval()(x), ours.forward_features(x)
            close(y, theirs.eval()(x))
            close(y, (ours.head(feats[:, 0]) + ours.head_dist(feats[:, 1])) / 2)


def test_same_seed_builds_timms_exact_weights():
    for cfg in (CONFIGS["deit"], CONFIGS["qk_norm_layerscale"]):
        torch.manual_seed(0)
        theirs = TimmDistilled(**cfg).state_dict()
        torch.manual_seed(0)
        ours = VisionTransformerDistilled(**cfg).state_dict()
        assert list(ours) == list(theirs)  # dist_token after pos_embed, head_dist last
        for k in theirs:
            assert torch.equal(ours[k], theirs[k]), k
    assert ours["dist_token"].std() > 0.01  # timm's trunc_normal(0.02), not [CLS]'s 1e-6


def test_prefix_tokens_are_cls_then_distillation_then_registers():
    model = VisionTransformerDistilled(**TINY, reg_tokens=3).eval()
    assert model.num_prefix_tokens == 5 and model.pos_embed.shape == (1, 5 + 64, 48)
    tokens = model._pos_embed(model.patch_embed(images(1)), (8, 8))
    pe = model.pos_embed
    for i, t in enumerate([model.cls_token, model.dist_token, *model.reg_token.unbind(1)]):
        torch.testing.assert_close(tokens[0, i], t.reshape(48) + pe[0, i])
    no_embed = VisionTransformerDistilled(**TINY, no_embed_class=True)
    assert no_embed.pos_embed.shape == (1, 64, 48)  # timm's would be (1, 66, 48) and fail
    sincos = VisionTransformerDistilled(**TINY, pos_embed="sincos")
    assert not sincos.pos_embed.requires_grad and sincos.pos_embed.shape == (1, 66, 48)
    assert torch.equal(sincos.pos_embed[0, :2], torch.zeros(2, 48))


@pytest.mark.parametrize("reg_tokens", [0, 2])
def test_fast_path_computes_the_two_head_tokens_with_the_full_forwards_outputs(
    reg_tokens, monkeypatch
):
    cfg = dict(TINY, reg_tokens=reg_tokens, drop_path_rate=0.5, init_values=0.1)
    model = randomize_(VisionTransformerDistilled(**cfg)).train()
    model.set_distilled_training()
    x = images(6)
    outs = []
    for fn in (model, lambda x: model.forward_head(model.forward_features(x))):
        model.zero_grad()
        torch.manual_seed(5)
        y = fn(x)
        sum(t.square().sum() for t in y).backward()
        outs.append((y, [p.grad.clone() for p in model.parameters()]))
    close(outs[0][0], outs[1][0])
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    calls, seen = [], []
    block_forward = Block.forward
    monkeypatch.setattr(
        Block, "forward", lambda self, x, k=0: calls.append(k) or block_forward(self, x, k)
    )
    model(x)
    assert calls == [0, 2]  # [CLS] and the distillation token, not the registers
    handle = model.norm.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model(x)
    handle.remove()
    assert seen == [(6, 2 + reg_tokens + 64, 48)]  # a hook sees every token, as in timm


def test_reset_classifier_replaces_both_heads_like_timm():
    ours, theirs = pair(VisionTransformerDistilled, TimmDistilled, CONFIGS["deit"])
    sig = inspect.signature
    assert (
        sig(ours.reset_classifier).parameters.keys()
        == sig(theirs.reset_classifier).parameters.keys()
    )
    for pool in (None, "token", ""):
        ours.reset_classifier(5, pool)
        theirs.reset_classifier(5, pool)
        ours.head.load_state_dict(theirs.head.state_dict())
        ours.head_dist.load_state_dict(theirs.head_dist.state_dict())
        assert [h.out_features for h in ours.get_classifier()] == [5, 5]
        with torch.no_grad():
            close(ours(images()), theirs(images()))
    ours.train().to(torch.float64).reset_classifier(3)
    assert ours.head_dist.training and ours.head_dist.weight.dtype == torch.float64
    ours.reset_classifier(0)
    assert isinstance(ours.head, torch.nn.Identity) and isinstance(
        ours.head_dist, torch.nn.Identity
    )
    with pytest.raises(ConfigError, match="global_pool='avg'.*distillation tokens"):
        ours.reset_classifier(5, "avg")


def _scale_of(model: torch.nn.Module, name: str) -> float:
    gs = param_groups_layer_decay(model, 0.05, model.no_weight_decay(), layer_decay=0.5)
    return next(g["lr_scale"] for g in gs if any(p is getattr(model, name) for p in g["params"]))


def test_group_matcher_and_no_weight_decay_match_timm():
    ours, theirs = pair(VisionTransformerDistilled, TimmDistilled, CONFIGS["deit"])
    assert ours.group_matcher() == theirs.group_matcher()
    nwd = ours.no_weight_decay()
    assert nwd == {"pos_embed", "cls_token", "dist_token"} <= set(dict(ours.named_parameters()))

    def groups(m):
        gs = param_groups_layer_decay(m, 0.05, m.no_weight_decay(), layer_decay=0.5)
        names = {id(p): n for n, p in m.named_parameters()}
        return [(g["lr_scale"], g["weight_decay"], [names[id(p)] for p in g["params"]]) for g in gs]

    got = groups(ours)
    assert got == groups(theirs)
    scale = {n: s for s, _, names in got for n in names}
    assert scale["dist_token"] == scale["cls_token"] == pytest.approx(0.5**3)  # the stem
    assert scale["head_dist.weight"] == 1.0
    regs = VisionTransformerDistilled(**TINY, reg_tokens=2)
    assert _scale_of(regs, "reg_token") == _scale_of(regs, "dist_token")  # registers: stem too


def test_checkpoint_filter_fn_resamples_past_both_prefix_tokens_like_timm():
    src = randomize_(TimmDistilled(**TINY), seed=5).state_dict()
    cfg = dict(TINY, img_size=48)
    ours, theirs = VisionTransformerDistilled(**cfg).eval(), TimmDistilled(**cfg).eval()
    ours.load_state_dict(checkpoint_filter_fn({"model": src}, ours), strict=True)
    theirs.load_state_dict(timm_vit.checkpoint_filter_fn({"model": src}, theirs), strict=True)
    assert ours.pos_embed.shape == (1, 2 + 144, 48)
    assert torch.equal(ours.pos_embed[:, :2], src["pos_embed"][:, :2])  # [CLS], distillation
    with torch.no_grad():
        close(ours(images(2, (48, 48))), theirs(images(2, (48, 48))))


@pytest.mark.parametrize(
    "kwargs",
    [dict(indices=2, return_prefix_tokens=True, output_fmt="NLC"), dict(indices=[0], norm=True)],
    ids=str,
)
def test_forward_intermediates_split_off_both_prefix_tokens_like_timm(kwargs):
    ours, theirs = pair(VisionTransformerDistilled, TimmDistilled, CONFIGS["deit"])
    with torch.no_grad():
        got = ours.forward_intermediates(images(2), **kwargs)
        close(got, theirs.forward_intermediates(images(2), **kwargs))
    if kwargs.get("return_prefix_tokens"):
        assert got[1][0][1].shape == (2, 2, 48)


def test_attention_maps_include_both_prefix_tokens():
    maps = randomize_(VisionTransformerDistilled(**TINY)).attention_maps(images(2))
    assert len(maps) == 2 and maps[0].shape == (2, 3, 66, 66)
    torch.testing.assert_close(maps[-1].sum(-1), torch.ones(2, 3, 66))


@pytest.mark.parametrize(
    "name",
    [
        "deit_tiny_distilled_patch16_224",
        "deit_small_distilled_patch16_224",
        "deit_base_distilled_patch16_224",
    ],
)
def test_named_constructors_match_timm_architectures(name):
    with torch.device("meta"):  # shapes only
        ours = getattr(vit_lightning, name)().state_dict()
        theirs = timm.create_model(name, pretrained=False).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_exported_from_the_package_and_bad_configs_are_named():
    assert vit_lightning.VisionTransformerDistilled is deit.VisionTransformerDistilled
    with pytest.raises(ConfigError, match="global_pool='avg'.*use global_pool='token'"):
        VisionTransformerDistilled(**TINY, global_pool="avg")
    with pytest.raises(ConfigError, match="global_pool='token' needs class_token=True"):
        VisionTransformerDistilled(**TINY, class_token=False)
    with pytest.raises(ConfigError, match="weight_init='jax' is not supported"):
        VisionTransformerDistilled(**TINY, weight_init="jax")
