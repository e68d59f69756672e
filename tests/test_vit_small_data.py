"""The ViT's small-data options, each pinned to its paper's reference code: CCT's convolutional
tokenizer and sequence pooling (Hassani et al. 2021, SHI-Labs/Compact-Transformers), shifted patch
tokenization and locality self-attention (Lee et al. 2021, aanna0701/SPT_LSA_ViT). Then what the
plain ViT offers, with the options on: strict round trips, fine-tuning at another size, dynamic
sizes, intermediates, attention maps, gradient checkpointing, torch.compile and export."""

import re

import pytest
import torch
import torch.nn.functional as F
from helpers.parity import assert_cls_only_matches_full, randomize_

from vit_lightning.errors import ConfigError
from vit_lightning.models.layers import (
    Attention,
    ConvTokenizer,
    LocalitySelfAttention,
    PatchEmbed,
    SeqPool,
    ShiftedPatchEmbed,
)
from vit_lightning.models.pretrained import load_pretrained
from vit_lightning.models.vit import VisionTransformer, checkpoint_filter_fn
from vit_lightning.run.export import export_model

# Fashion-MNIST-shaped and small: each test builds its models in milliseconds.
FMNIST = dict(img_size=28, in_chans=1, num_classes=10, embed_dim=32, depth=2, num_heads=4)
CCT = dict(FMNIST, embed_layer="conv", conv_layers=2, global_pool="seq", class_token=False)
SPT_LSA = dict(FMNIST, patch_size=4, embed_layer="spt", attn_layer="lsa")
OPTIONS = {
    "conv": dict(FMNIST, embed_layer="conv", conv_layers=2, conv_channels=16),
    "conv_k7": dict(FMNIST, embed_layer="conv", conv_layers=1, conv_kernel=7),
    "seq": dict(FMNIST, patch_size=4, global_pool="seq", class_token=False),
    "seq_with_cls": dict(FMNIST, patch_size=4, global_pool="seq"),
    "spt": dict(FMNIST, patch_size=4, embed_layer="spt"),
    "lsa": dict(FMNIST, patch_size=4, attn_layer="lsa"),
    "cct": CCT,
    "cct_lsa": dict(CCT, attn_layer="lsa"),
    "spt_lsa": SPT_LSA,
}
NEW_KEYS = {  # what each option adds to the plain ViT's state_dict
    "conv": {"patch_embed.conv_layers.0.0.weight", "patch_embed.conv_layers.1.0.weight"},
    "seq": {"seq_pool.attention_pool.weight", "seq_pool.attention_pool.bias"},
    "spt": {"patch_embed.norm.weight", "patch_embed.norm.bias"},
    "lsa": {"blocks.0.attn.scale", "blocks.1.attn.scale"},
}


def images(batch: int = 3, size: tuple[int, int] = (28, 28), chans: int = 1) -> torch.Tensor:
    return torch.randn(batch, chans, *size, generator=torch.Generator().manual_seed(1))


def noisy(cfg: dict, seed: int = 0) -> VisionTransformer:
    return randomize_(VisionTransformer(**cfg), seed=seed).eval()


# --- the defaults: the plain ViT -----------------------------------------------------------------


def test_every_option_is_off_by_default():
    model = VisionTransformer(**FMNIST, patch_size=4)
    assert type(model.patch_embed) is PatchEmbed and model.seq_pool is None
    assert all(type(b.attn) is Attention for b in model.blocks)
    plain = set(model.state_dict())
    for name, keys in NEW_KEYS.items():
        assert not keys & plain, name


@pytest.mark.parametrize(
    "name,added,removed",
    [
        ("conv", NEW_KEYS["conv"], {"patch_embed.proj.weight", "patch_embed.proj.bias"}),
        ("seq", NEW_KEYS["seq"], {"cls_token"}),
        ("spt", NEW_KEYS["spt"], set()),
        ("lsa", NEW_KEYS["lsa"], set()),
    ],
)
def test_each_option_adds_only_its_own_keys(name, added, removed):
    plain = set(VisionTransformer(**FMNIST, patch_size=4).state_dict())
    ours = set(VisionTransformer(**{"patch_size": 4, **OPTIONS[name]}).state_dict())
    assert ours - plain == added and plain - ours == removed


# --- CCT's convolutional tokenizer ---------------------------------------------------------------


def test_conv_tokenizer_stages_are_ccts_conv_relu_maxpool():
    model = VisionTransformer(**OPTIONS["conv"])
    stages = model.patch_embed.conv_layers
    assert len(stages) == 2
    for stage, (c_in, c_out) in zip(stages, [(1, 16), (16, 32)], strict=True):
        conv, act, pool = stage
        assert (conv.in_channels, conv.out_channels) == (c_in, c_out)  # CCT's in_planes inside
        assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
        assert conv.bias is None and isinstance(act, torch.nn.ReLU)
        assert (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    shapes = []
    for stage in stages:
        for m in stage:
            m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
    x = images()
    tokens = model.patch_embed(x)
    assert shapes == [(16, 28, 28)] * 2 + [(16, 14, 14)] + [(32, 14, 14)] * 2 + [(32, 7, 7)]
    assert tokens.shape == (3, 49, 32) and model.patch_embed.grid_size == (7, 7)
    expected = x
    for conv, _, _ in stages:  # the paper's tokenizer written out: MaxPool(ReLU(Conv(x)))
        expected = F.max_pool2d(F.relu(F.conv2d(expected, conv.weight, None, 1, 1)), 3, 2, 1)
    torch.testing.assert_close(tokens, expected.flatten(2).transpose(1, 2), rtol=0, atol=0)
    assert model(x).shape == (3, 10)


def test_conv_tokenizer_kernel_7_has_ccts_stride_2():
    pe = VisionTransformer(**dict(OPTIONS["conv_k7"], img_size=32)).patch_embed
    conv = pe.conv_layers[0][0]
    assert (conv.kernel_size, conv.stride, conv.padding) == ((7, 7), (2, 2), (3, 3))
    assert pe.grid_size == (8, 8) and pe.patch_size == (4, 4)  # 32 -> 16 (conv) -> 8 (pool)
    assert pe(images(2, (32, 32))).shape == (2, 64, 32)


@pytest.mark.parametrize("kernel", [3, 5, 7, 9])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_conv_tokenizer_grid_rule_is_its_output_at_any_size(kernel, layers):
    pe = ConvTokenizer(28, in_chans=1, embed_dim=4, num_layers=layers, kernel_size=kernel)
    for size in [(28, 28), (29, 17), (32, 31), (9, 12)]:
        out = pe.conv_layers(torch.zeros(1, 1, *size))
        assert pe.dynamic_feat_size(size) == tuple(out.shape[-2:]), size


def test_conv_tokenizer_weights_are_kaiming_normal():
    torch.manual_seed(0)
    conv = ConvTokenizer(28, 1, 256, num_layers=2, hidden_chans=256).conv_layers[1][0]
    fan_in = 256 * 3 * 3
    assert abs(conv.weight.std().item() / (2 / fan_in) ** 0.5 - 1) < 0.02  # torch's default: 0.41


# --- sequence pooling ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["seq", "seq_with_cls", "cct"])
def test_seq_pool_weights_sum_to_1_and_pool_the_final_normed_patch_tokens(name):
    model = noisy(OPTIONS[name])
    assert isinstance(model.norm, torch.nn.LayerNorm)  # CCT: norm every token, pool, then fc
    assert isinstance(model.fc_norm, torch.nn.Identity)
    x = images()
    with torch.no_grad():
        tokens = model.forward_features(x)  # (B, N, D), after the final norm
        patches = tokens[:, model.num_prefix_tokens :]  # [CLS] is not pooled, as in timm's pools
        w = model.seq_pool.weights(patches)
        pooled = model.forward_head(tokens, pre_logits=True)
        logits = model(x)
    assert w.shape == (3, 49) and (w > 0).all()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(pooled, (w.unsqueeze(-1) * patches).sum(dim=1))
    # the reference's line: matmul(softmax(attention_pool(x), dim=1).transpose(-1, -2), x)
    fc = model.seq_pool.attention_pool
    reference = torch.matmul(F.softmax(fc(patches), dim=1).transpose(-1, -2), patches).squeeze(-2)
    torch.testing.assert_close(pooled, reference)
    torch.testing.assert_close(logits, model.head(reference))


def test_seq_pool_is_trained_from_the_loss():
    model = VisionTransformer(**CCT)
    model(images()).logsumexp(dim=1).sum().backward()
    assert model.seq_pool.attention_pool.weight.grad.abs().sum() > 0


def test_reset_classifier_keeps_or_drops_seq_pool_as_timm_does_its_attention_pool():
    model = VisionTransformer(**CCT)
    model.reset_classifier(5, "seq")
    assert isinstance(model.seq_pool, SeqPool) and model(images()).shape == (3, 5)
    model.reset_classifier(4, "avg")
    assert model.seq_pool is None and model(images()).shape == (3, 4)
    plain = VisionTransformer(**FMNIST, patch_size=4)
    with pytest.raises(ConfigError, match="global_pool='seq' needs the model built with"):
        plain.reset_classifier(5, "seq")
    assert plain.global_pool == "token"


# --- shifted patch tokenization ------------------------------------------------------------------


def shifted_by(x: torch.Tensor, di: int, dj: int) -> torch.Tensor:
    """y[i, j] = x[i + di, j + dj] where that pixel exists, else 0: a pixel-by-pixel reference."""
    H, W = x.shape[-2:]
    y = torch.zeros_like(x)
    for i in range(H):
        for j in range(W):
            if 0 <= i + di < H and 0 <= j + dj < W:
                y[..., i, j] = x[..., i + di, j + dj]
    return y


@pytest.mark.parametrize("patch,chans", [(4, 1), (3, 2), ((4, 2), 3)])
def test_spt_stacks_the_image_and_its_4_diagonal_half_patch_shifts(patch, chans):
    pe = ShiftedPatchEmbed(12, patch, chans, embed_dim=8)
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    sh, sw = pe.shift
    assert (sh, sw) == (ph // 2, pw // 2)  # the reference's int(patch_size * 1/2)
    x = torch.randn(2, chans, 12, 12)
    out = pe.shifted(x)
    assert out.shape == (2, 5 * chans, 12, 12)
    copies = out.split(chans, dim=1)
    # the reference's order: x, x_lu, x_ru, x_lb, x_rb
    for got, (di, dj) in zip(
        copies, [(0, 0), (-sh, -sw), (-sh, sw), (sh, -sw), (sh, sw)], strict=True
    ):
        torch.testing.assert_close(got, shifted_by(x, di, dj), rtol=0, atol=0)


def test_spt_tokens_are_layernorm_linear_of_row_column_channel_patches():
    pe = ShiftedPatchEmbed(8, 4, in_chans=2, embed_dim=16)
    patch_dim = 5 * 2 * 4 * 4
    assert pe.norm.normalized_shape == (patch_dim,) and pe.norm.eps == 1e-5  # torch's, as theirs
    assert (pe.proj.in_features, pe.proj.out_features) == (patch_dim, 16)
    randomize_(pe)
    x = torch.randn(3, 2, 8, 8)
    s = pe.shifted(x)
    # 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)', element by element
    vec = torch.empty(3, 4, patch_dim)
    for r in range(2):
        for c in range(2):
            for p1 in range(4):
                for p2 in range(4):
                    for ch in range(10):
                        vec[:, r * 2 + c, (p1 * 4 + p2) * 10 + ch] = s[
                            :, ch, r * 4 + p1, c * 4 + p2
                        ]
    expected = pe.proj(F.layer_norm(vec, (patch_dim,), pe.norm.weight, pe.norm.bias, 1e-5))
    torch.testing.assert_close(pe(x), expected)
    assert pe(x).shape == (3, 4, 16) and pe.grid_size == (2, 2)


# --- locality self-attention ---------------------------------------------------------------------


def lsa_reference(attn: LocalitySelfAttention, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The reference's LSA forward: dots * scale per head, the diagonal set to -987654321."""
    B, N, D = x.shape
    h = attn.num_heads
    q, k, v = attn.qkv(x).reshape(B, N, 3, h, D // h).permute(2, 0, 3, 1, 4)
    dots = (q @ k.transpose(-2, -1)) * attn.scale.view(1, h, 1, 1)
    idx = torch.arange(N)
    dots[:, :, idx, idx] = -987654321
    a = dots.softmax(dim=-1)
    return attn.proj((a @ v).transpose(1, 2).reshape(B, N, D)), a


def test_lsa_temperature_is_a_trained_parameter_per_head_started_at_1_over_sqrt_d():
    model = VisionTransformer(**OPTIONS["lsa"])
    attn = model.blocks[0].attn
    assert isinstance(attn, LocalitySelfAttention) and isinstance(attn.scale, torch.nn.Parameter)
    assert attn.scale.requires_grad and attn.scale.shape == (4,)
    torch.testing.assert_close(attn.scale.detach(), torch.full((4,), 8**-0.5))  # head_dim 8
    assert "blocks.0.attn.scale" in dict(model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    randomize_(model)
    before = attn.scale.detach().clone()
    model(images()).logsumexp(dim=1).sum().backward()
    assert (attn.scale.grad != 0).all()  # every head's temperature gets a gradient
    opt.step()
    assert not torch.equal(attn.scale.detach(), before)


def test_lsa_masks_the_diagonal_and_matches_the_reference():
    model = noisy(OPTIONS["lsa"])
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.scale.copy_(torch.tensor([0.1, 0.3, 0.7, 1.5]))  # heads differ: pins the broadcast
        x = torch.randn(2, 50, 32)
        out, weights = lsa_reference(attn, x)
        torch.testing.assert_close(attn(x), out)
        amap = attn.attention_map(x)
    torch.testing.assert_close(amap, weights)
    diag = amap.diagonal(dim1=-2, dim2=-1)
    assert torch.equal(diag, torch.zeros_like(diag))  # no token attends to itself, [CLS] included
    torch.testing.assert_close(amap.sum(-1), torch.ones(2, 4, 50))
    off = amap.masked_select(~torch.eye(50, dtype=torch.bool))
    assert (off > 0).all()  # only the diagonal is masked


def test_attention_maps_of_an_lsa_model_show_0_on_the_diagonal():
    model = noisy(SPT_LSA)
    maps = model.attention_maps(images())
    assert len(maps) == 2 and maps[0].shape == (3, 4, 50, 50)
    for a in maps:
        assert torch.equal(a.diagonal(dim1=-2, dim2=-1), torch.zeros(3, 4, 50))


def test_lsa_cls_only_last_block_gives_the_full_forward():
    model = noisy(dict(OPTIONS["lsa"], drop_path_rate=0.3)).train()
    x = images()
    assert_cls_only_matches_full(model, x)


# --- what the plain ViT offers, with the options on ----------------------------------------------


@pytest.mark.parametrize("name", OPTIONS)
def test_strict_state_dict_round_trip_gives_the_same_outputs(name):
    a = noisy(OPTIONS[name], seed=0)
    b = VisionTransformer(**OPTIONS[name]).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    c = VisionTransformer(**FMNIST, patch_size=4)  # the plain ViT refuses them, naming the keys
    if set(c.state_dict()) != set(a.state_dict()):
        with pytest.raises(RuntimeError, match="Missing key|Unexpected key"):
            c.load_state_dict(a.state_dict(), strict=True)


@pytest.mark.parametrize("name,grid", [("cct", (9, 9)), ("spt_lsa", (9, 9))])
def test_fine_tuning_at_another_size_resamples_pos_embed(tmp_path, name, grid):
    src = noisy(OPTIONS[name])
    cfg = dict(OPTIONS[name], img_size=36, num_classes=5)
    dst = VisionTransformer(**cfg)
    dst.load_state_dict(
        {k: v for k, v in checkpoint_filter_fn(src.state_dict(), dst).items() if "head" not in k},
        strict=False,
    )
    assert (
        dst.patch_embed.grid_size == grid and dst.pos_embed.shape[1] == 81 + dst.num_prefix_tokens
    )
    torch.save(src.state_dict(), tmp_path / "w.pth")
    fresh = VisionTransformer(**cfg)
    report = load_pretrained(fresh, tmp_path / "w.pth")  # strict: every other key fits
    assert any(r.startswith("pos_embed:") for r in report.resampled)
    assert report.reinitialised == ["head.weight", "head.bias"]
    torch.testing.assert_close(fresh.pos_embed, dst.pos_embed)
    assert fresh(images(2, (36, 36))).shape == (2, 5)


@pytest.mark.parametrize("name", ["cct", "spt_lsa"])
def test_dynamic_img_size_resamples_as_a_model_built_for_that_size(name):
    model = noisy(dict(OPTIONS[name], dynamic_img_size=True))
    at_36 = VisionTransformer(**dict(OPTIONS[name], img_size=36)).eval()
    at_36.load_state_dict(checkpoint_filter_fn(model.state_dict(), at_36), strict=True)
    x = images(2, (36, 36))
    with torch.no_grad():
        torch.testing.assert_close(model(x), at_36(x))


def test_a_fixed_size_cct_names_the_size_and_spt_keeps_the_divisibility_rule():
    with pytest.raises(ConfigError, match=r"expected input of shape \(B, 1, 28, 28\)"):
        VisionTransformer(**CCT)(images(2, (32, 32)))
    cct = VisionTransformer(**dict(CCT, dynamic_img_size=True)).eval()
    assert cct(images(2, (30, 27))).shape == (2, 10)  # any size: the grid is computed
    spt = VisionTransformer(**dict(SPT_LSA, dynamic_img_size=True))
    with pytest.raises(ConfigError, match="not divisible by patch_size 4x4"):
        spt(images(2, (30, 28)))


@pytest.mark.parametrize("name", ["cct", "spt_lsa"])
def test_forward_intermediates_are_grid_maps_ending_in_the_features(name):
    model = noisy(OPTIONS[name])
    x = images()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, norm=True)
        feats = model.forward_features(x)
    assert [tuple(t.shape) for t in inter] == [(3, 32, 7, 7)] * 2
    torch.testing.assert_close(final, feats)
    n = model.num_prefix_tokens
    torch.testing.assert_close(inter[-1].flatten(2).transpose(1, 2), feats[:, n:])
    assert model.feature_info[0]["reduction"] == 4


@pytest.mark.parametrize("name", ["cct_lsa", "spt_lsa"])
def test_grad_checkpointing_gives_bit_identical_gradients(name):
    cfg = dict(OPTIONS[name], drop_path_rate=0.3)
    grads = []
    for enable in (False, True):
        model = noisy(cfg).train()
        model.set_grad_checkpointing(enable)
        torch.manual_seed(3)
        model(images()).square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_torch_compile_captures_cct_and_spt_lsa_in_one_graph():
    torch._dynamo.reset()
    for cfg in (dict(CCT, attn_layer="lsa"), SPT_LSA):
        model = noisy(cfg)
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # no graph break
        x = images()
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cct_lsa", "spt_lsa"])
def test_bf16_autocast_trains_with_the_float32_temperature(name):
    model = VisionTransformer(**OPTIONS[name]).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16-mixed: q is bf16, scale float32
        y = model(images())
    assert y.dtype == torch.bfloat16
    y.float().logsumexp(dim=1).sum().backward()
    scale = model.blocks[0].attn.scale
    assert (
        scale.dtype == torch.float32 and scale.grad.isfinite().all() and scale.grad.abs().sum() > 0
    )


@pytest.mark.parametrize("fmt", ["onnx", "torch.export"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_a_cct_style_model_exports_and_matches(tmp_path, fmt, dynamic):
    model = noisy(dict(CCT, attn_layer="lsa", dynamic_img_size=dynamic))
    out = tmp_path / f"cct.{fmt}"
    checked = export_model(model, (1, 28, 28), out, fmt)  # compares at batch 1 and 3 itself
    assert out.is_file() and "batch 1 and 3" in checked
    assert ("height and width" in checked) == dynamic  # and at 36x32 when dynamic
    if fmt == "torch.export":
        program = torch.export.load(out).module()
        sizes = [(28, 28), (44, 36)] if dynamic else [(28, 28)]
        for size in sizes:
            x = images(2, size)
            with torch.no_grad():
                torch.testing.assert_close(program(x), model(x), rtol=1e-4, atol=1e-4)


def test_spt_model_exports_to_onnx(tmp_path):
    export_model(noisy(SPT_LSA), (1, 28, 28), tmp_path / "spt.onnx", "onnx")
    assert (tmp_path / "spt.onnx").is_file()


# --- bad combinations fail at construction -------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            dict(embed_layer="conv", conv_layers=5),
            "conv_layers=5 with conv_kernel=3 reduces img_size=28 to a 1x1 token grid; use fewer "
            "conv_layers or a larger img_size",
        ),
        (
            dict(patch_size=4, conv_layers=2),
            "conv_layers=2 set with embed_layer='patch', which has no conv stages; use "
            "embed_layer='conv'",
        ),
        (dict(embed_layer="conv", conv_kernel=4), "conv_kernel=4 must be odd and >= 3"),
        (dict(embed_layer="conv", conv_layers=0), "conv_layers=0 must be >= 1"),
        (
            dict(embed_layer="spt", patch_size=1),
            "embed_layer='spt' with patch_size=1: the shift is half a patch",
        ),
        (dict(embed_layer="cct"), "embed_layer='cct' must be 'patch', 'conv' or 'spt'"),
        (dict(attn_layer="local"), "attn_layer='local' must be 'attn' (or '') or 'lsa'"),
        (
            dict(patch_size=28, attn_layer="lsa", class_token=False, global_pool="avg"),
            "attn_layer='lsa' with one token",
        ),
        (dict(patch_size=4, global_pool="map"), "global_pool='map' is not supported"),
    ],
)
def test_bad_small_data_settings_fail_at_construction_naming_the_fix(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        VisionTransformer(**{**FMNIST, **kwargs})


def test_conv_tokenizer_ignores_patch_size_and_any_image_size_works():
    model = VisionTransformer(**dict(CCT, img_size=30, patch_size=16))  # 30: not a multiple of 16
    assert model.patch_embed.grid_size == (8, 8)
    assert model(images(2, (30, 30))).shape == (2, 10)


def test_the_cli_builds_the_options_from_their_keys():
    from helpers import SMOKE

    from vit_lightning.cli import ViTLightningCLI

    keys = dict(embed_layer="conv", conv_layers=2, global_pool="seq", class_token="false")
    args = [f"--model.net.init_args.{k}={v}" for k, v in {**keys, "attn_layer": "lsa"}.items()]
    cli = ViTLightningCLI(args=["--config", SMOKE, *args, "--trainer.logger=false"], run=False)
    net = cli.model.net
    assert isinstance(net.patch_embed, ConvTokenizer) and len(net.patch_embed.conv_layers) == 2
    assert isinstance(net.seq_pool, SeqPool) and net.cls_token is None
    assert all(isinstance(b.attn, LocalitySelfAttention) for b in net.blocks)


def test_pictures_and_deit_heads_follow_a_conv_tokenizer_grid():
    """28 px through 3 conv stages is a 4x4 grid (ceil halvings), not 28 // patch_size."""
    from vit_lightning.analysis.viz import attention_rollout, cls_attention
    from vit_lightning.models.deit import VisionTransformerDistilled

    kw = dict(img_size=28, in_chans=1, num_classes=10, embed_dim=32, depth=2, num_heads=2)
    net = VisionTransformer(**kw, embed_layer="conv", conv_layers=3).eval()
    x = torch.randn(2, 1, 28, 28)
    assert cls_attention(net, x).shape == (2, 2, 4, 4)
    rollout = attention_rollout(net, x)
    assert rollout.shape == (2, 4, 4)
    assert torch.allclose(rollout.sum(dim=(-2, -1)), torch.ones(2))
    deit = VisionTransformerDistilled(**kw, embed_layer="conv", conv_layers=2)
    deit.reset_classifier(5)
    assert deit.head.out_features == deit.head_dist.out_features == 5
    assert deit.eval()(x).shape == (2, 5)
