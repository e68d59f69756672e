"""`load_pretrained`: timm-format files, template checkpoints, timm names and Hub ids, fitted to
another image size, patch size, class count or channel count exactly as timm's own loader fits
them, and clear errors for everything else. Offline: Hub files come from a cache made in tmp."""

import time
from pathlib import Path

import huggingface_hub
import lightning
import pytest
import safetensors.torch
import torch
from helpers.trainer import quiet_trainer
from timm.models._manipulate import adapt_input_conv as timm_adapt_input_conv
from timm.models.vision_transformer import VisionTransformer as TimmViT
from timm.models.vision_transformer import checkpoint_filter_fn as timm_filter_fn

import vit_lightning.models.pretrained as pretrained
import vit_lightning.module
from vit_lightning.data import SyntheticDataModule
from vit_lightning.errors import ConfigError, UserError
from vit_lightning.models.pretrained import adapt_input_conv, load_pretrained
from vit_lightning.models.vit import VisionTransformer
from vit_lightning.module import ViTClassifier

TINY = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=48, depth=2, num_heads=3)
TARGETS = {  # what fine-tuning changes; each needs a resample or a fresh head
    "img_size": (dict(img_size=48), {"pos_embed"}),
    "patch_size": (dict(patch_size=8), {"pos_embed", "patch_embed.proj.weight"}),
    "num_classes": (dict(num_classes=5), set()),
    "all": (
        dict(img_size=48, patch_size=8, num_classes=5),
        {"pos_embed", "patch_embed.proj.weight"},
    ),
}
TIMM_NAME = "vit_small_patch16_224.augreg_in21k_ft_in1k"


def timm_weights(**overrides) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return TimmViT(**{**TINY, **overrides}).state_dict()


def save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        safetensors.torch.save_file(sd, path)
    else:
        torch.save({"model": sd}, path)  # timm's train checkpoints wrap the weights
    return path


def resampled_keys(report: pretrained.PretrainedReport) -> set[str]:
    return {line.split(":")[0] for line in report.resampled}


@pytest.mark.parametrize("target", TARGETS, ids=list(TARGETS))
@pytest.mark.parametrize("name", ["weights.safetensors", "weights.pth"])
def test_timm_weights_fit_like_timms_own_loader(tmp_path: Path, name: str, target: str) -> None:
    cfg, resampled = TARGETS[target]
    sd = timm_weights()
    ours = VisionTransformer(**{**TINY, **cfg})
    report = load_pretrained(ours, save(sd, tmp_path / name))

    reference = TimmViT(**{**TINY, **cfg})
    ref_sd = timm_filter_fn(sd, reference)
    if ref_sd["head.weight"].shape != reference.head.weight.shape:  # timm drops a misfit head
        del ref_sd["head.weight"], ref_sd["head.bias"]
    missing, unexpected = reference.load_state_dict(ref_sd, strict=False)
    assert not unexpected and set(missing) <= {"head.weight", "head.bias"}
    ours.head.load_state_dict(reference.head.state_dict())  # fresh heads differ by design

    x = torch.randn(2, 3, ours.patch_embed.img_size[0], ours.patch_embed.img_size[1])
    torch.testing.assert_close(ours.eval()(x), reference.eval()(x), atol=1e-5, rtol=0)
    assert resampled_keys(report) == resampled
    assert report.reinitialised == (list(missing) if "num_classes" in cfg else [])


def test_rgb_weights_into_one_channel_sum_the_kernels(tmp_path: Path) -> None:
    sd = timm_weights()
    source = TimmViT(**TINY).eval()
    source.load_state_dict(sd)
    grey = VisionTransformer(**TINY, in_chans=1).eval()
    report = load_pretrained(grey, save(sd, tmp_path / "rgb.safetensors"))

    kernels = sd["patch_embed.proj.weight"]
    torch.testing.assert_close(grey.patch_embed.proj.weight, kernels.sum(1, keepdim=True))
    # summed kernels on a grey image = the RGB model on that image replicated to 3 channels
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(grey(x), source(x.expand(-1, 3, -1, -1)), atol=1e-5, rtol=0)
    assert report.resampled == ["patch_embed.proj.weight: (48, 3, 4, 4) -> (48, 1, 4, 4)"]


@pytest.mark.parametrize("in_chans", [1, 2, 4])
def test_input_conv_adaptation_matches_timm(in_chans: int) -> None:
    w = torch.randn(48, 3, 4, 4)
    torch.testing.assert_close(adapt_input_conv(in_chans, w), timm_adapt_input_conv(in_chans, w))


def test_template_checkpoint_loads_the_network(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = ViTClassifier(VisionTransformer(**TINY), warmup_epochs=0)
    data = SyntheticDataModule(train_size=8, val_size=8, batch_size=8)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(path := tmp_path / "run.ckpt")

    fresh = VisionTransformer(**TINY)
    report = load_pretrained(fresh, path)
    assert report.loaded == list(module.net.state_dict())
    for k, v in module.net.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, atol=0, rtol=0)


def test_checkpoint_of_another_lightning_module_is_refused(tmp_path: Path) -> None:
    ckpt = {"state_dict": {"model.fc.weight": torch.zeros(2, 2)}}
    torch.save(
        {**ckpt, "pytorch-lightning_version": lightning.__version__}, path := tmp_path / "x.ckpt"
    )
    with pytest.raises(
        ConfigError, match=r"another LightningModule.*model\.fc\.weight.*ViTClassifier"
    ):
        load_pretrained(VisionTransformer(**TINY), path)


def test_ddp_prefixes_are_stripped(tmp_path: Path) -> None:
    sd = timm_weights()
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path := tmp_path / "ddp.pt"
    )
    model = VisionTransformer(**TINY)
    load_pretrained(model, path)
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight, sd["blocks.1.mlp.fc2.weight"])


def test_headless_model_skips_the_head(tmp_path: Path) -> None:
    report = load_pretrained(
        VisionTransformer(**{**TINY, "num_classes": 0}), save(timm_weights(), tmp_path / "w.pth")
    )
    assert [s.split(":")[0] for s in report.skipped] == ["head.weight", "head.bias"]
    assert report.reinitialised == []


def test_depth_mismatch_fails_naming_keys_and_both_depths(tmp_path: Path) -> None:
    path = save(timm_weights(), tmp_path / "w.safetensors")
    with pytest.raises(ConfigError) as e:
        load_pretrained(VisionTransformer(**{**TINY, "depth": 3}), path)
    msg = str(e.value)
    assert "weights: depth 2, embed_dim 48; model: depth 3, embed_dim 48" in msg
    assert "missing from the weights (12): blocks.2.norm1.weight" in msg and "and 8 more" in msg


def test_width_mismatch_lists_both_shapes(tmp_path: Path) -> None:
    path = save(timm_weights(), tmp_path / "w.safetensors")
    with pytest.raises(ConfigError, match=r"cls_token: weights \(1, 1, 48\), model \(1, 1, 64\)"):
        load_pretrained(VisionTransformer(**{**TINY, "embed_dim": 64, "num_heads": 4}), path)


def test_non_strict_loads_what_fits_and_reports_the_rest(tmp_path: Path) -> None:
    sd = timm_weights()
    model = VisionTransformer(**{**TINY, "depth": 3})
    report = load_pretrained(model, save(sd, tmp_path / "w.safetensors"), strict=False)
    torch.testing.assert_close(model.blocks[1].attn.qkv.weight, sd["blocks.1.attn.qkv.weight"])
    assert len(report.reinitialised) == 12 and all(
        k.startswith("blocks.2.") for k in report.reinitialised
    )
    assert len(report.loaded) == len(sd)


def test_summary_is_logged_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_pretrained returns the report (the model code has no Lightning to log with); the
    LightningModule logs its summary once, on rank 0."""
    logged: list[str] = []
    monkeypatch.setattr(vit_lightning.module, "rank_zero_info", logged.append)
    path = save(timm_weights(), tmp_path / "w.pth")
    report = load_pretrained(VisionTransformer(**{**TINY, "num_classes": 5}), path)
    assert logged == []
    model = ViTClassifier(net=VisionTransformer(**{**TINY, "num_classes": 5}), pretrained=str(path))
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(
        model,
        SyntheticDataModule(
            num_classes=5, img_size=TINY["img_size"], train_size=8, val_size=8, batch_size=4
        ),
    )
    said = [m for m in logged if m.startswith("Pretrained")]  # beside the lr and schedule lines
    assert said == [report.summary()]
    assert f"{path}" in said[0] and "reinitialised: head.weight; head.bias" in said[0]


def test_missing_file_fails_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path}/nope.pth: no such file"):
        load_pretrained(VisionTransformer(**TINY), tmp_path / "nope.pth")


def test_unknown_hub_id_fails_fast_offline() -> None:
    start = time.monotonic()
    with pytest.raises(UserError, match="nobody-xyz/no-such-vit") as e:
        load_pretrained(VisionTransformer(**TINY), "hf-hub:nobody-xyz/no-such-vit")
    assert time.monotonic() - start < 10
    # offline: how to fetch it; with network the Hub's answer (no such repo)
    assert "hf download nobody-xyz/no-such-vit" in str(e.value) or "refused" in str(e.value)


def test_unknown_timm_name_fails_naming_it_and_close_names() -> None:
    with pytest.raises(
        UserError, match=r"'vit_smal_patch16_224'.*did you mean vit_small_patch16_224,"
    ):
        load_pretrained(VisionTransformer(**TINY), "vit_smal_patch16_224")


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, offline: nothing is read from or written to the real one."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_timm_name_loads_from_the_hugging_face_cache(hf_cache: Path) -> None:
    repo = hf_cache / f"models--timm--{TIMM_NAME}"  # huggingface_hub's cache layout
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit := "0" * 40)
    (snapshot := repo / "snapshots" / commit).mkdir(parents=True)
    sd = timm_weights()  # tiny weights under the real name: the resolution is what is tested
    save(sd, snapshot / "model.safetensors")

    model = VisionTransformer(**TINY)
    report = load_pretrained(model, TIMM_NAME)
    assert report.file == str(snapshot / "model.safetensors")
    torch.testing.assert_close(model.pos_embed, sd["pos_embed"], atol=0, rtol=0)


def test_timm_name_not_cached_offline_says_how_to_fetch(hf_cache: Path) -> None:
    with pytest.raises(UserError, match=f"hf download timm/{TIMM_NAME} model.safetensors"):
        load_pretrained(VisionTransformer(**TINY), TIMM_NAME)
