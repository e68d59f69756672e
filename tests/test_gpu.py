"""CUDA only (marked gpu, skipped elsewhere): mixed precision, the fast paths on the device, and
no host sync inside a training step (CUDA's sync debug mode raises on any)."""

import lightning as L
import pytest
import torch

from vit_lightning import VisionTransformer
from vit_lightning.callbacks import NonFiniteGuard
from vit_lightning.data import SyntheticDataModule
from vit_lightning.data.device_pipeline import ResidentImages
from vit_lightning.module import ViTClassifier

pytestmark = pytest.mark.gpu


def _fit(precision: str, callbacks=(), **module_kw) -> tuple[ViTClassifier, L.Trainer]:
    torch.manual_seed(0)
    net = VisionTransformer(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4)
    model = ViTClassifier(net, warmup_epochs=0.5, **module_kw)
    dm = SyntheticDataModule(train_size=1024, val_size=256, batch_size=64)
    trainer = L.Trainer(
        accelerator="cuda",
        devices=1,
        precision=precision,
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        log_every_n_steps=1000,
        callbacks=list(callbacks),
    )
    trainer.fit(model, dm)
    return model, trainer


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_trains_and_keeps_fp32_weights(precision):
    model, trainer = _fit(precision)
    assert trainer.callback_metrics["val/acc"] > 0.5
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_compiled_model_trains_on_cuda():
    model, trainer = _fit("bf16-mixed", compile=True)
    assert trainer.callback_metrics["val/acc"] > 0.5
    assert not any("_orig_mod" in k for k in model.state_dict())


def test_device_pipeline_on_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    ds = ResidentImages(images, torch.arange(64) % 10, (0.5,) * 3, (0.25,) * 3, "train", 4, True)
    batch = ds.__getitems__([(i, 0) for i in range(0, 64, 2)])
    x_cpu, y_cpu = ds.batch(batch["index"], batch["shift"], batch["flip"])
    x_gpu, y_gpu = ds.batch(batch["index"].cuda(), batch["shift"].cuda(), batch["flip"].cuda())
    assert x_gpu.is_cuda and torch.equal(x_gpu.cpu(), x_cpu) and torch.equal(y_gpu.cpu(), y_cpu)


def test_device_policies_on_cuda_match_cpu():
    from torchvision.transforms import v2

    from vit_lightning.data.device_augment import Recipe

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=g)
    for policy in (v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10), v2.TrivialAugmentWide()):
        recipe = Recipe(policy, 0.25, (32, 32))
        ds = ResidentImages(images, torch.zeros(256), (0.5,) * 3, (0.25,) * 3, "train", 4, True,
                            0, recipe)  # fmt: skip
        batch = ds.__getitems__([(i, 0) for i in range(256)])
        draws = {k: v for k, v in batch.items() if k != "split"}
        x_cpu, _ = ds.batch(**draws)
        on_gpu = {k: v.cuda() if torch.is_tensor(v) else v for k, v in draws.items()}
        x_gpu, _ = ds.batch(**on_gpu)
        # CUDA may contract a blend's multiply-add differently: at most one grey level, rarely
        diff = (x_gpu.cpu() - x_cpu).abs() * 0.25 * 255
        assert diff.max() <= 1.0 + 1e-3 and (diff > 1e-3).float().mean() < 1e-3


class _NoSyncInSteps(L.Callback):
    """CUDA raises on any host sync from a step's start to the end of its batch callbacks."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= 2:  # after the first steps' one-time allocations and lazy init
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, *args) -> None:
        torch.cuda.set_sync_debug_mode("default")


def test_training_steps_never_sync_the_host():
    # listed last, so the NonFiniteGuard's deferred check runs inside the guarded window
    callbacks = [NonFiniteGuard(), _NoSyncInSteps()]
    _, trainer = _fit("bf16-mixed", callbacks, mixup_alpha=0.8, cutmix_alpha=1.0)
    assert trainer.global_step == 3 * 1024 // 64
