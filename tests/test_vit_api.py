"""timm's model API on our VisionTransformer, for fine-tuning and analysis: layer-wise lr decay,
gradient checkpointing, intermediate features, fx feature extraction, hooks that see every token,
reset_classifier and checkpoint_filter_fn, each against timm's own model with the same weights."""

import inspect

import pytest
import torch
import torch.nn.functional as F
from helpers.parity import close, images, pair, randomize_
from timm.models import vision_transformer as timm_vit
from timm.optim import create_optimizer_v2
from timm.optim._param_groups import param_groups_layer_decay
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vit_lightning.errors import ConfigError
from vit_lightning.models import layers, vit
from vit_lightning.models.vit import (
    Block,
    VisionTransformer,
    checkpoint_filter_fn,
    resample_patch_embed,
)

TINY = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=48, depth=3, num_heads=3)
CONFIGS = {
    "token": dict(TINY),
    "avg_no_class_token": dict(TINY, global_pool="avg", class_token=False),
    "dynamic_layerscale": dict(TINY, dynamic_img_size=True, init_values=0.1),
}


# --- layer-wise lr decay -------------------------------------------------------------------------


def _groups_by_name(model: torch.nn.Module, groups: list[dict]) -> list[tuple]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [
        (g.get("lr_scale"), g["weight_decay"], [names[id(p)] for p in g["params"]]) for g in groups
    ]


@pytest.mark.parametrize("name", CONFIGS)
def test_layer_decay_param_groups_match_timm(name):
    ours, theirs = pair(VisionTransformer, timm_vit.VisionTransformer, CONFIGS[name])
    assert ours.group_matcher() == theirs.group_matcher()

    def groups(m):
        g = param_groups_layer_decay(
            m, weight_decay=0.05, no_weight_decay_list=m.no_weight_decay(), layer_decay=0.65
        )
        return _groups_by_name(m, g)

    ours_groups = groups(ours)
    assert ours_groups == groups(theirs)
    # stem, 3 blocks, then norm and head: 5 distinct scales, not the 1.0 of an ungrouped model
    assert sorted({s for s, _, _ in ours_groups}) == pytest.approx(
        [0.65**k for k in range(4, -1, -1)]
    )


def test_create_optimizer_v2_layer_decay_matches_timm():
    ours, theirs = pair(VisionTransformer, timm_vit.VisionTransformer, CONFIGS["token"])

    def groups(m):
        opt = create_optimizer_v2(m, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
        return _groups_by_name(m, opt.param_groups)

    ours_groups = groups(ours)
    assert ours_groups == groups(theirs)
    scales = dict((n, s) for s, _, names in ours_groups for n in names)
    assert scales["pos_embed"] == pytest.approx(0.75**4) and scales["head.weight"] == 1.0
    assert scales["blocks.0.attn.qkv.weight"] < scales["blocks.2.attn.qkv.weight"] < 1.0


# --- gradient checkpointing ----------------------------------------------------------------------


def _loss_and_grads(model: torch.nn.Module, x: torch.Tensor, seed: int = 7):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = model(x).square().mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("global_pool", ["token", "avg"])  # the [CLS]-only path, the full one
def test_grad_checkpointing_gives_bit_identical_gradients_and_droppath_masks(global_pool):
    model = randomize_(VisionTransformer(**TINY, global_pool=global_pool, drop_path_rate=0.5))
    model.train()
    x = images(8)
    calls = []
    model.blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    loss, grads = _loss_and_grads(model, x)
    assert len(calls) == 1
    model.set_grad_checkpointing()
    assert model.grad_checkpointing
    loss_ckpt, grads_ckpt = _loss_and_grads(model, x)
    assert len(calls) == 3  # forward, then recomputed in backward: checkpointing is on
    assert torch.equal(loss, loss_ckpt)
    for n in grads:
        assert torch.equal(grads[n], grads_ckpt[n]), n
    # the masks drew: another seed gives another loss, so equal gradients are not trivial
    assert not torch.equal(_loss_and_grads(model, x, seed=8)[0], loss)


class _Retained(TorchDispatchMode):
    """Every storage an op allocates under the mode, weakly: after the forward, the ones still alive
    are what autograd keeps for the backward."""

    def __init__(self) -> None:
        super().__init__()
        self.storages: dict[int, tuple[StorageWeakRef, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                s = t.untyped_storage()
                seen = self.storages.get(s.data_ptr())
                if seen is None or seen[0].expired():  # a freed address can be reused
                    self.storages[s.data_ptr()] = (StorageWeakRef(s), s.nbytes())
        return out

    def alive_bytes(self, exclude: set[int]) -> int:
        return sum(n for p, (r, n) in self.storages.items() if not r.expired() and p not in exclude)


def saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes the autograd graph holds after model(x): the activations saved for backward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    mode = _Retained()
    with mode:
        loss = model(x).square().mean()
    held = mode.alive_bytes(params)
    loss.backward()
    return held


def test_grad_checkpointing_keeps_only_the_block_inputs():
    model = VisionTransformer(**dict(TINY, depth=4), drop_path_rate=0.1).train()
    x = images(8)
    full = saved_activation_bytes(model, x)
    model.set_grad_checkpointing()
    kept = saved_activation_bytes(model, x)
    block_input = 8 * 65 * 48 * 4  # (B, N, D) float32
    assert kept < full / 4
    assert 4 * block_input <= kept < 4 * block_input + full / 10


# --- intermediates and feature_info --------------------------------------------------------------

INTERMEDIATE_KWARGS = [
    dict(),
    dict(indices=2, output_fmt="NLC"),
    dict(indices=[0, -1], norm=True),
    dict(indices=[1], stop_early=True, intermediates_only=True),
    dict(indices=2, return_prefix_tokens=True, output_fmt="NLC"),
    dict(indices=[-2], return_prefix_tokens=True, norm=True),
    dict(indices=[0, 2], output_dict=True, return_prefix_tokens=True),
    dict(indices=1, output_dict=True, intermediates_only=True),
]


@pytest.mark.parametrize("kwargs", INTERMEDIATE_KWARGS, ids=str)
@pytest.mark.parametrize("name", CONFIGS)
def test_forward_intermediates_match_timm(name, kwargs):
    ours, theirs = pair(VisionTransformer, timm_vit.VisionTransformer, CONFIGS[name])
    size = (48, 40) if ours.dynamic_img_size else (32, 32)  # non-square: the NCHW reshape shows
    x = images(2, size)
    with torch.no_grad():
        got = ours.forward_intermediates(x, **kwargs)
        close(got, theirs.forward_intermediates(x, **kwargs))
    if kwargs.keys() <= {"indices", "norm", "stop_early", "intermediates_only"}:  # NCHW maps
        maps = got if kwargs.get("intermediates_only") else got[1]
        assert maps[0].shape == (2, 48, size[0] // 4, size[1] // 4)


@pytest.mark.parametrize("n,reshape", [(1, False), (2, True), ([0, 2], False)])
@pytest.mark.parametrize("prefix", [False, True])
def test_get_intermediate_layers_match_timm(n, reshape, prefix):
    ours, theirs = pair(VisionTransformer, timm_vit.VisionTransformer, CONFIGS["token"])
    x = images(2)
    kw = dict(n=n, reshape=reshape, return_prefix_tokens=prefix, norm=True)
    with torch.no_grad():
        close(ours.get_intermediate_layers(x, **kw), theirs.get_intermediate_layers(x, **kw))
    assert inspect.signature(ours.get_intermediate_layers).parameters.keys() <= set(
        inspect.signature(theirs.get_intermediate_layers).parameters
    )


def test_forward_intermediates_signature_is_timms():
    ours = inspect.signature(VisionTransformer.forward_intermediates).parameters
    theirs = inspect.signature(timm_vit.VisionTransformer.forward_intermediates).parameters
    for name, p in ours.items():
        assert name in theirs and p.default == theirs[name].default, name


@pytest.mark.parametrize("indices", [1, [0, 1], [-2]])
def test_prune_intermediate_layers_matches_timm(indices):
    ours, theirs = pair(VisionTransformer, timm_vit.VisionTransformer, CONFIGS["token"])
    taken = ours.prune_intermediate_layers(indices, prune_norm=True)
    assert taken == theirs.prune_intermediate_layers(indices, prune_norm=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = images(2)
    with torch.no_grad():
        close(ours(x), theirs(x))  # no head, no pooling: every token's features
        close(ours.forward_intermediates(x), theirs.forward_intermediates(x))


def test_feature_info_matches_timm():
    for cfg in [
        CONFIGS["token"],
        dict(TINY, img_size=64, patch_size=16, embed_dim=64, num_heads=4),
    ]:
        assert (
            VisionTransformer(**cfg).feature_info == timm_vit.VisionTransformer(**cfg).feature_info
        )


@pytest.mark.parametrize(
    "indices,message",
    [(4, r"indices=4: take the last 1 to 3 blocks"), ([0, 3], r"indices=\[0, 3\].*depth 3")],
)
def test_out_of_range_indices_name_the_depth(indices, message):
    with pytest.raises(ConfigError, match=message):
        VisionTransformer(**TINY).forward_intermediates(images(2), indices)


# --- fx ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_fx_feature_extractor_matches_the_eager_intermediates(name):
    from torchvision.models.feature_extraction import create_feature_extractor

    model = randomize_(VisionTransformer(**CONFIGS[name], drop_path_rate=0.3))
    extractor = create_feature_extractor(model, return_nodes=["blocks.1", "norm"])
    x = images(2, (48, 40) if model.dynamic_img_size else (32, 32))
    n = model.num_prefix_tokens
    for train in (False, True):  # torchvision traces each mode; train draws DropPath masks
        model.train(train), extractor.train(train)
        torch.manual_seed(3)
        out = extractor(x)
        torch.manual_seed(3)
        final, (mid,) = model.forward_intermediates(
            x, [1], return_prefix_tokens=bool(n), output_fmt="NLC"
        )
        mid = torch.cat([mid[1], mid[0]], dim=1) if n else mid  # prefix tokens back in front
        assert torch.equal(out["blocks.1"], mid) and torch.equal(out["norm"], final)
        assert out["norm"].shape[1] == x.shape[-2] * x.shape[-1] // 16 + n  # every token


def test_fx_symbolic_trace_gives_the_eager_logits_and_eager_keeps_its_errors():
    model = randomize_(VisionTransformer(**TINY)).eval()
    traced = torch.fx.symbolic_trace(model)
    x = images(2)
    with torch.no_grad():
        assert torch.equal(traced(x), model.forward_head(model.forward_features(x)))
    with pytest.raises(ConfigError, match=r"expected input of shape \(B, 3, 32, 32\)"):
        model(images(size=(64, 64)))


# --- hooks see every token -----------------------------------------------------------------------


def _watch(model: VisionTransformer, where: str, kind: str) -> tuple[list, object]:
    """A hook of `kind` on module `where` ('global' for every module) recording what it sees."""
    seen = []
    if where == "global":
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda m, i, o: seen.append(o.shape) if m is model.norm else None
        )
        return seen, handle
    module = model.get_submodule(where)
    if kind == "pre":
        return seen, module.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    if kind == "backward":
        return seen, module.register_full_backward_hook(lambda m, gi, go: seen.append(go[0].shape))
    return seen, module.register_forward_hook(lambda m, i, o: seen.append(o.shape))


@pytest.mark.parametrize(
    "where,kind",
    [
        ("blocks.2", "forward"),
        ("blocks.2.mlp.fc2", "forward"),
        ("blocks.2.ls2", "pre"),
        ("norm", "forward"),
        ("norm", "backward"),
        ("global", "forward"),
    ],
)
def test_hooks_on_the_last_block_or_norm_see_every_token_with_the_same_logits(where, kind):
    model = randomize_(VisionTransformer(**TINY, drop_path_rate=0.5, init_values=0.1)).train()
    x = images(6)
    torch.manual_seed(11)
    fast = model(x)
    after_fast = torch.get_rng_state()
    seen, handle = _watch(model, where, kind)
    try:
        torch.manual_seed(11)
        hooked = model(x)
        hooked.sum().backward()
    finally:
        handle.remove()
    assert seen and seen[0] == (6, 65, 48)  # (B, N, D) as in timm, not the [CLS]-only (B, 1, D)
    torch.testing.assert_close(hooked, fast, rtol=0, atol=1e-5)
    assert torch.equal(torch.get_rng_state(), after_fast)  # the same DropPath draws, in order


def test_without_hooks_forward_runs_the_cls_only_last_block(monkeypatch):
    calls = []
    block_forward = Block.forward

    def spy(self, x, first_only=False):
        calls.append(first_only)
        return block_forward(self, x, first_only)

    monkeypatch.setattr(Block, "forward", spy)
    model = VisionTransformer(**TINY)
    model(images(2))
    assert calls == [False, False, True]
    handle = model.blocks[0].register_forward_hook(lambda *_: None)  # an earlier block: unaffected
    calls.clear()
    model(images(2))
    handle.remove()
    assert calls == [False, False, True]


def test_hook_on_blocks_fires_once_with_every_token():
    model = VisionTransformer(**TINY)
    seen, handle = _watch(model, "blocks", "forward")
    model(images(2))
    handle.remove()
    assert seen == [(2, 65, 48)]


# --- reset_classifier ----------------------------------------------------------------------------


def test_reset_classifier_signature_is_timms():
    ours = inspect.signature(VisionTransformer.reset_classifier).parameters
    theirs = inspect.signature(timm_vit.VisionTransformer.reset_classifier).parameters
    assert [(n, p.default) for n, p in ours.items()] == [(n, p.default) for n, p in theirs.items()]


@pytest.mark.parametrize(
    "name,global_pool",
    [("token", p) for p in (None, "token", "avg", "")]
    + [("avg_no_class_token", p) for p in (None, "avg", "")],  # 'token' needs [CLS]: see below
)
def test_reset_classifier_matches_timm(name, global_pool):
    ours, theirs = pair(VisionTransformer, timm_vit.VisionTransformer, CONFIGS[name])
    ours.reset_classifier(5, global_pool)
    theirs.reset_classifier(5, global_pool)
    ours.head.load_state_dict(theirs.head.state_dict())
    x = images(2)
    with torch.no_grad():
        out = ours(x)
        close(out, theirs(x))
    per_token = global_pool == ""
    assert out.shape == ((2, 64 + ours.num_prefix_tokens, 5) if per_token else (2, 5))
    assert ours.global_pool == theirs.global_pool and ours.num_classes == 5


def test_reset_classifier_keeps_mode_device_and_dtype():
    model = VisionTransformer(**TINY).eval()
    model.reset_classifier(5)
    assert not model.head.training and model.head.out_features == 5
    model.train().reset_classifier(7)
    assert model.head.training
    model.to(torch.float64).reset_classifier(3)
    assert model.head.weight.dtype == torch.float64
    with torch.device("meta"):
        meta = VisionTransformer(**TINY)
    meta.reset_classifier(4)
    assert meta.head.weight.device.type == "meta"
    model.reset_classifier(0)
    assert isinstance(model.head, torch.nn.Identity)


def test_reset_classifier_rejects_unsupported_pools_by_name():
    model = VisionTransformer(**TINY)
    with pytest.raises(
        ValueError, match=r"global_pool='max' is not supported; use 'token', 'avg' or ''"
    ):
        model.reset_classifier(5, "max")
    no_cls = VisionTransformer(**CONFIGS["avg_no_class_token"])
    with pytest.raises(ConfigError, match="global_pool='token' needs class_token=True"):
        no_cls.reset_classifier(5, "token")
    assert model.global_pool == "token" and no_cls.global_pool == "avg"  # left unchanged


# --- checkpoint_filter_fn ------------------------------------------------------------------------

SOURCE = dict(img_size=32, patch_size=4, depth=2, embed_dim=48, num_heads=3, num_classes=10)


@pytest.fixture(scope="module")
def timm_checkpoints(tmp_path_factory) -> dict[str, object]:
    """A timm ViT's weights as .safetensors and as DeiT/MAE's torch.save({'model': sd}) .pth."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("timm_ckpt")
    sd = randomize_(timm_vit.VisionTransformer(**SOURCE), seed=5).state_dict()
    save_file(sd, root / "vit.safetensors")
    torch.save({"model": sd, "epoch": 300}, root / "vit.pth")
    return {"safetensors": root / "vit.safetensors", "pth": root / "vit.pth"}


def _load(path) -> dict:
    from safetensors.torch import load_file

    return load_file(path) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
@pytest.mark.parametrize(
    "target",
    [dict(img_size=48), dict(img_size=64, patch_size=8), dict(img_size=48, patch_size=8)],
    ids=["grid 12", "patch 8", "grid 6 patch 8"],
)
def test_checkpoint_filter_fn_fine_tunes_like_timms(timm_checkpoints, fmt, target):
    cfg = dict(SOURCE, **target, num_classes=5)
    ours = VisionTransformer(**cfg).eval()
    theirs = timm_vit.VisionTransformer(**cfg).eval()
    head = torch.nn.Linear(48, 5)  # the same fresh head in both
    for model, filter_fn in ((ours, checkpoint_filter_fn), (theirs, timm_vit.checkpoint_filter_fn)):
        sd = filter_fn(_load(timm_checkpoints[fmt]), model)
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        assert sorted(missing) == ["head.bias", "head.weight"] and not unexpected
        model.head.load_state_dict(head.state_dict())
    x = images(2, (cfg["img_size"],) * 2)
    with torch.no_grad():
        close(ours(x), theirs(x))


def test_checkpoint_filter_fn_unwraps_state_dict_and_drops_pre_logits():
    model = VisionTransformer(**SOURCE)
    sd = randomize_(VisionTransformer(**SOURCE)).state_dict()
    out = checkpoint_filter_fn({"state_dict": {**sd, "pre_logits.fc.weight": torch.ones(2)}}, model)
    assert list(out) == list(sd) and all(out[k] is sd[k] for k in sd)  # same size: untouched


@pytest.mark.parametrize("new", [(8, 8), (2, 2), (6, 10)])
def test_resample_patch_embed_matches_timm(new):
    from timm.layers import resample_patch_embed as timm_resample_patch_embed

    w = torch.randn(16, 3, 4, 4)
    assert torch.equal(resample_patch_embed(w, new), timm_resample_patch_embed(w, list(new)))


def test_resampled_kernel_embeds_a_resized_patch_to_the_same_token():
    # FlexiViT: upsampling a patch and embedding it with the pinv-resampled kernel is exact
    w, patch = torch.randn(16, 3, 4, 4), torch.randn(1, 3, 4, 4)
    big = F.interpolate(patch, size=(8, 8), mode="bicubic", antialias=True)
    close(F.conv2d(big, resample_patch_embed(w, (8, 8))), F.conv2d(patch, w))


def test_checkpoint_filter_fn_names_bad_input():
    model = VisionTransformer(**SOURCE)
    with pytest.raises(TypeError, match="expected a state_dict .* got list"):
        checkpoint_filter_fn([torch.ones(1)], model)
    odd = {"pos_embed": torch.randn(1, 1 + 6 * 4, 48)}  # 24 patch positions: no square grid
    with pytest.raises(ConfigError, match=r"pos_embed of shape \(1, 25, 48\).*not a square grid"):
        checkpoint_filter_fn(odd, model)


# --- the layers module ---------------------------------------------------------------------------


def test_layers_are_reexported_from_vit():
    for name in layers.__all__:
        assert getattr(vit, name) is getattr(layers, name), name
    assert vit._pair is layers._pair  # export.py's size rule
