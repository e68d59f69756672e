"""The fast paths, on CPU: the device-resident pipeline (same pixels and same augmentation
distribution as torchvision's), torch.compile (checkpoints, DDP), and no host sync per step."""

import collections
import csv
import os
import traceback
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from helpers import smoke_args
from helpers.trainer import quiet_trainer
from lightning.pytorch.loggers import CSVLogger
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from vit_lightning import VisionTransformer
from vit_lightning.data import CIFAR10DataModule, SyntheticDataModule
from vit_lightning.data.device_pipeline import ResidentImages
from vit_lightning.data.sampling import ResumableSampler
from vit_lightning.errors import ConfigError
from vit_lightning.module import ViTClassifier

CELLS = 9 * 9 * 2  # RandomCrop(32, padding=4): top, left in [0, 8]; flip or not


def _dm(root: Path, **kw) -> CIFAR10DataModule:
    kw = {"download": False, "val_size": 20, "batch_size": 8, "num_workers": 0, **kw}
    dm = CIFAR10DataModule(str(root), **kw)
    dm.setup()
    return dm


def test_device_pipeline_gives_torchvisions_pixels(cifar10):
    tv, dev = _dm(cifar10.root), _dm(cifar10.root, device_pipeline=True)
    assert isinstance(dev.train_set, ResidentImages) and len(dev.train_set) == len(tv.train_set)
    # eval splits: the same normalised tensors, bit for bit, through the loader + transfer hook
    for split in ("val", "test"):
        loader = getattr(dev, f"{split}_dataloader")()
        x, y = dev.on_after_batch_transfer(next(iter(loader)), 0)
        ref = getattr(tv, f"{split}_set")
        assert torch.equal(x, torch.stack([ref[i][0] for i in range(len(x))]))
        assert y.tolist() == [ref[i][1] for i in range(len(x))]
    # train: each image is torchvision's pad + crop (+ flip) at the drawn parameters, then the
    # same ToDtype + Normalize kernels
    batch = next(iter(dev.train_dataloader()))
    x, y = dev.on_after_batch_transfer(batch, 0)
    ds = dev.train_set
    assert batch["flip"].any() and not batch["flip"].all()  # both branches in one batch
    for j, i in enumerate(batch["index"].tolist()):
        top, left = batch["shift"][j].tolist()
        ref = TF.crop(TF.pad(ds.images[i], [4]), top, left, 32, 32)
        ref = TF.horizontal_flip(ref) if batch["flip"][j] else ref
        assert torch.equal(x[j], ds.normalize(ref)), f"image {j}: top {top} left {left}"
        assert y[j] == tv.train_set[i][1]


def _position_coded() -> torch.Tensor:
    """A 3x32x32 uint8 image whose every crop/flip of the padded image differs."""
    r, c = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    return torch.stack([r + 1, c + 1, (r * 7 + c * 3) % 200 + 1]).to(torch.uint8)


def _chi2(counts: torch.Tensor) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def test_device_augmentation_has_torchvisions_distribution():
    img, n = _position_coded(), 50 * CELLS
    images, labels = img.expand(n, -1, -1, -1), torch.zeros(n)
    ds = ResidentImages(images, labels, (0.5,) * 3, (0.25,) * 3, "train", pad=4, flip=True, seed=3)
    # every outcome as an exact tensor, so each draw is decoded to its (top, left, flip) cell
    padded, keys = TF.pad(img, [4]), {}
    for top in range(9):
        for left in range(9):
            crop = TF.crop(padded, top, left, 32, 32)
            for flip in (0, 1):
                out = ds.normalize(TF.horizontal_flip(crop) if flip else crop)
                keys[out.numpy().tobytes()] = (top * 9 + left) * 2 + flip
    assert len(keys) == CELLS

    ours = torch.zeros(CELLS)
    sampler = ResumableSampler(ds, shuffle=True, seed=3)
    order = list(sampler)
    for start in range(0, n, 128):  # the loader's batches
        draws = ds.__getitems__(order[start : start + 128])
        x, _ = ds.batch(draws["index"], draws["shift"], draws["flip"])
        for xi in x:
            ours[keys[xi.numpy().tobytes()]] += 1

    dm = CIFAR10DataModule(augment="none")  # RandomCrop(32, padding=4) + flip, then normalise
    dm.mean, dm.std = (0.5,) * 3, (0.25,) * 3
    transform, theirs = dm.train_transform(), torch.zeros(CELLS)
    torch.manual_seed(0)
    for _ in range(n):
        theirs[keys[transform(img).numpy().tobytes()]] += 1

    # 161 degrees of freedom: mean 161, sd 18; 260 is beyond p = 1e-6. Seeds are fixed, so this
    # cannot flake; it fails if a cell is missing or the draws are skewed.
    assert (ours > 0).all() and (theirs > 0).all()
    assert _chi2(ours) < 260 and _chi2(theirs) < 260
    pooled = (ours + theirs) / 2  # homogeneity: the two samples come from one distribution
    assert float(((ours - pooled) ** 2 / pooled + (theirs - pooled) ** 2 / pooled).sum()) < 260
    flips = ours.view(81, 2).sum(0)
    assert abs(flips[1] / n - 0.5) < 0.03


def test_device_draws_depend_on_seed_epoch_and_indices_only():
    images, labels = torch.zeros(64, 3, 8, 8, dtype=torch.uint8), torch.zeros(64)
    ds = ResidentImages(images, labels, (0.0,) * 3, (1.0,) * 3, "train", pad=2, flip=True, seed=1)
    keys = [(i, 5) for i in range(10, 42)]
    a, b = ds.__getitems__(keys), ds.__getitems__(keys)
    assert torch.equal(a["shift"], b["shift"]) and torch.equal(a["flip"], b["flip"])
    other_epoch = ds.__getitems__([(i, 6) for i in range(10, 42)])
    assert not torch.equal(a["shift"], other_epoch["shift"])
    assert a["shift"].min() >= 0 and a["shift"].max() <= 4


def test_device_pipeline_refuses_transforms_it_cannot_batch(cifar10, monkeypatch):
    from vit_lightning.data import augment

    table = {"jitter": augment.Policy("colour jitter", lambda: [v2.ColorJitter(0.4)])}
    monkeypatch.setattr(CIFAR10DataModule, "AUGMENT", table)
    with pytest.raises(ConfigError, match=r"cannot run ColorJitter.*--data.device_pipeline=false"):
        CIFAR10DataModule(str(cifar10.root), augment="jitter", device_pipeline=True)
    bilinear = {
        "ta": augment.Policy(
            "bilinear", lambda: [v2.TrivialAugmentWide(interpolation=v2.InterpolationMode.BILINEAR)]
        )
    }
    monkeypatch.setattr(CIFAR10DataModule, "AUGMENT", bilinear)
    with pytest.raises(ConfigError, match="nearest interpolation and zero fill"):
        CIFAR10DataModule(str(cifar10.root), augment="ta", device_pipeline=True)


def test_the_sweeps_augment_values_run_on_both_paths(cifar10, repo_root):
    sweep = yaml.safe_load((repo_root / "configs" / "sweeps" / "cifar10.yaml").read_text())
    values = sweep["parameters"]["data.init_args.augment"]["values"]
    assert len(values) >= 3
    for augment in values:
        for device_pipeline in (False, True):
            dm = _dm(
                cifar10.root, augment=augment, random_erasing=0.25, device_pipeline=device_pipeline
            )
            x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
            assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (8,)


def test_device_pipeline_trains_through_the_trainer(cifar10):
    torch.manual_seed(0)
    net = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    model = ViTClassifier(net, warmup_epochs=0)
    dm = CIFAR10DataModule(
        str(cifar10.root),
        download=False,
        val_size=20,
        batch_size=16,
        num_workers=4,
        device_pipeline=True,
    )
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model, dm)
    assert trainer.global_step == 2 * (80 // 16)
    assert trainer.train_dataloader.num_workers == 0  # index batches need no workers
    (res,) = trainer.test(model, dm, verbose=False)
    assert 0.0 <= res["test/acc"] <= 1.0 and res["test/loss"] > 0


# -- torch.compile ------------------------------------------------------------------------------


def _tiny_net(img_size: int = 16, num_classes: int = 4) -> VisionTransformer:
    shape = dict(patch_size=4, embed_dim=32, depth=2, num_heads=2)
    return VisionTransformer(img_size, **shape, num_classes=num_classes, drop_path_rate=0.1)


def test_compiled_model_trains_and_checkpoints_without_orig_mod(tmp_path):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = ViTClassifier(_tiny_net(), warmup_epochs=0, compile=True)  # inductor, C++ on CPU
    dm = SyntheticDataModule(num_classes=4, img_size=16, train_size=64, val_size=32, batch_size=16)
    trainer = quiet_trainer(max_epochs=1, default_root_dir=tmp_path, enable_checkpointing=True)
    trainer.fit(model, dm)
    from torch._dynamo.utils import counters

    assert counters["stats"]["unique_graphs"] >= 2  # train and eval forward were compiled
    (ckpt,) = (tmp_path / "checkpoints").glob("*.ckpt")
    sd = torch.load(ckpt, weights_only=False)["state_dict"]
    assert sd and not any("_orig_mod" in k for k in sd)
    # an eager module loads it strictly and computes the same logits
    eager = ViTClassifier.load_from_checkpoint(ckpt, net=_tiny_net()).eval()
    model.eval()
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), eager(x), atol=1e-5, rtol=1e-5)


def test_checkpoints_of_a_torch_compile_wrapper_load(tmp_path):
    net = _tiny_net()
    wrapped = torch.compile(net, backend="eager")  # others' code: keys gain `_orig_mod.`
    sd = {f"net.{k}": v for k, v in wrapped.state_dict().items()}
    assert all("_orig_mod." in k for k in sd)
    model = ViTClassifier(_tiny_net())
    ckpt = {"state_dict": sd}
    model.on_load_checkpoint(ckpt)
    model.load_state_dict(ckpt["state_dict"])  # strict
    assert torch.equal(model.net.pos_embed, net.pos_embed)


def test_compiled_model_under_ddp(tmp_path, run_cli):
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2"]
    data = ["--data.train_size=128", "--data.val_size=32"]
    quiet = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    args = smoke_args("fit", tmp_path, "--trainer.max_epochs=1", *ddp, *data, *quiet)
    proc = run_cli(*args, "--model.compile={backend: aot_eager}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 128 // 2 // 64  # 2 ranks share the epoch (smoke batch 64)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])
    assert ckpt["hyper_parameters"]["compile"] == {"backend": "aot_eager"}


# -- host syncs ---------------------------------------------------------------------------------

# ops that make the host wait for the device: a value read back, or an output size that depends
# on the data
TORCH = f"site-packages{os.sep}torch{os.sep}"
SYNC_OPS = {
    "_local_scalar_dense",
    "nonzero",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "masked_select",
    "equal",
    "is_nonzero",
    "repeat_interleave",
}


HOST_SIDE = [f"{TORCH}optim{os.sep}", f"{TORCH}utils{os.sep}data{os.sep}"]


class HostSyncs(TorchDispatchMode):
    """Counts sync ops per training step, with the call site that caused each.

    CPU stands in for the GPU here, so reads that stay on the host whatever the device are
    skipped: non-fused AdamW's step counters (CPU tensors; the CUDA path uses fused AdamW, which
    keeps them on the device) and the DataLoader's seeds. So is `one_hot`'s class-range check,
    which torch runs with `.item()` on CPU tensors only (on CUDA it relies on device asserts).
    """

    def __init__(self) -> None:
        super().__init__()
        self.step: int | None = None
        self.per_step: collections.Counter = collections.Counter()
        self.where: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.step is not None and func._schema.name.split("::")[-1] in SYNC_OPS:
            stack = traceback.extract_stack()[:-1]
            site = next(f for f in reversed(stack) if TORCH not in f.filename)
            host_side = any(h in f.filename for f in stack for h in HOST_SIDE)
            if not host_side and "one_hot(" not in (site.line or ""):
                self.per_step[self.step] += 1
                self.where[(self.step, f"{Path(site.filename).name}:{site.lineno}")] += 1
        return func(*args, **(kwargs or {}))


class _StepTag(L.Callback):
    def __init__(self, syncs: HostSyncs) -> None:
        self.syncs = syncs

    def on_train_batch_start(self, trainer, *args) -> None:
        self.syncs.step = trainer.global_step

    def on_validation_batch_start(self, trainer, *args) -> None:
        self.syncs.step = -1  # eval batches: must not sync either

    def on_validation_batch_end(self, trainer, *args) -> None:
        self.syncs.step = None  # epoch-end reductions are once per epoch

    def on_train_epoch_end(self, trainer, *args) -> None:
        self.syncs.step = None


@pytest.mark.parametrize("mixup", [False, True])
def test_training_and_logging_do_not_sync_every_step(mixup, tmp_path):
    torch.manual_seed(0)
    extra = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0} if mixup else {}
    model = ViTClassifier(_tiny_net(), warmup_epochs=0, **extra)
    dm = SyntheticDataModule(
        num_classes=4, img_size=16, train_size=24 * 8, val_size=32, batch_size=8
    )
    syncs = HostSyncs()
    trainer = quiet_trainer(
        max_epochs=1,
        log_every_n_steps=10,
        logger=CSVLogger(tmp_path),
        enable_progress_bar=True,
        callbacks=[_StepTag(syncs)],
    )
    with syncs:
        trainer.fit(model, dm)
    assert trainer.global_step == 24
    # the logger reads values on its rows (steps 9 and 19) only; every other step stays async
    assert set(syncs.per_step) <= {9, 19}, dict(syncs.where)
    assert -1 not in syncs.per_step


@pytest.mark.parametrize("augment", ["autoaugment", "trivialaugment"])
def test_the_device_pipelines_policies_do_not_sync_every_step(augment, cifar10, tmp_path):
    torch.manual_seed(0)
    model = ViTClassifier(_tiny_net(img_size=32, num_classes=10), warmup_epochs=0)
    dm = CIFAR10DataModule(
        str(cifar10.root), download=False, val_size=20, batch_size=8, augment=augment,
        random_erasing=0.5, device_pipeline=True,
    )  # fmt: skip
    syncs = HostSyncs()
    trainer = quiet_trainer(
        max_epochs=1, log_every_n_steps=5, logger=CSVLogger(tmp_path), callbacks=[_StepTag(syncs)]
    )
    with syncs:
        trainer.fit(model, dm)
    assert trainer.global_step == 10
    assert set(syncs.per_step) <= {4, 9}, dict(syncs.where)  # the logger's rows only
    assert -1 not in syncs.per_step


def test_fast_overlay_switches_on_every_fast_path(capsys, repo_root):
    from vit_lightning.cli import main

    configs = repo_root / "configs"
    overlay = ["--config", str(configs / "overlays" / "fast.yaml")]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(configs / "cifar10.yaml"), *overlay, "--print_config"])
    assert exit_info.value.code == 0

    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["trainer"]["precision"] == "bf16-mixed" and cfg["model"]["compile"] is True
    data = cfg["data"]["init_args"]
    recipe = yaml.safe_load((configs / "cifar10.yaml").read_text())["data"]["init_args"]
    assert data["device_pipeline"] is True
    # the recipe underneath is kept: its policy, erasing and Mixup/CutMix
    assert (data["augment"], data["random_erasing"]) == (
        recipe["augment"],
        recipe["random_erasing"],
    )
    assert data["augment"] == "autoaugment" and data["random_erasing"] > 0
    assert cfg["model"]["mixup_alpha"] == 0.8


def test_steps_call_self_log_only_on_logger_rows(monkeypatch, tmp_path):
    # each self.log() of a Metric costs ~0.7 ms of host time in Lightning; steps must only
    # update() their metrics and leave logging to the logger's rows and epoch ends
    calls: collections.Counter = collections.Counter()
    step = {"now": None}
    log = ViTClassifier.log

    def counting_log(self, name, *args, **kwargs):
        calls[(step["now"], name)] += 1
        return log(self, name, *args, **kwargs)

    monkeypatch.setattr(ViTClassifier, "log", counting_log)

    class Tag(L.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            step["now"] = trainer.global_step

        def on_validation_batch_start(self, *args) -> None:
            step["now"] = "val"

        def on_validation_batch_end(self, *args) -> None:
            step["now"] = None

        def on_train_batch_end(self, *args) -> None:
            step["now"] = None

    model = ViTClassifier(_tiny_net(), warmup_epochs=0)
    dm = SyntheticDataModule(
        num_classes=4, img_size=16, train_size=12 * 8, val_size=32, batch_size=8
    )
    trainer = quiet_trainer(
        max_epochs=1, log_every_n_steps=5, logger=CSVLogger(tmp_path), callbacks=[Tag()]
    )
    trainer.fit(model, dm)
    in_steps = {k for k in calls if k[0] is not None}
    assert {s for s, _ in in_steps} == {4, 9}  # the logger's rows: steps 5 and 10
    assert {n for _, n in in_steps} == {"train/loss_step", "train/lr"}
    epoch_end = {n for s, n in calls if s is None}
    assert {"train/loss_epoch", "train/acc", "val/acc", "val/loss", "val/acc_top5"} <= epoch_end


def test_device_pipeline_under_ddp_counts_every_val_image_once(tmp_path, fmnist_idx_300, run_cli):
    from vit_lightning.cli import main

    data = [
        "--data=vit_lightning.data.FashionMNISTDataModule",
        f"--data.data_dir={tmp_path / 'data'}",
        "--data.download=false",
        f"--data.local_dirs=[{fmnist_idx_300}]",
        "--data.val_size=61",
        "--data.augment=randaugment",
        "--data.random_erasing=0.25",
        "--data.batch_size=16",
        "--data.device_pipeline=true",
        "--model.net.init_args.patch_size=7",
    ]
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2"]
    args = smoke_args("fit", tmp_path, *data, *ddp, "--trainer.max_epochs=1")
    fit = run_cli(*args, "--trainer.logger=false")
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == (300 - 61) // 2 // 16  # each rank: half the epoch, drop_last
    validate = smoke_args("validate", tmp_path, *data, "--ckpt_path=last")
    csv_logger = "--trainer.logger=lightning.pytorch.loggers.CSVLogger"
    val = run_cli(*validate, *ddp, csv_logger, f"--trainer.logger.save_dir={tmp_path / 'csv'}")
    assert val.returncode == 0, val.stderr[-3000:]
    (path,) = (tmp_path / "csv").rglob("metrics.csv")
    rows = csv.DictReader(path.read_text().splitlines())
    acc_2 = next(float(r["val/acc"]) for r in rows if r.get("val/acc"))
    one = main([*validate, "--trainer.logger=false"])
    acc_1 = one.trainer.callback_metrics["val/acc"].item()
    assert acc_2 == pytest.approx(acc_1, abs=1e-7)  # 61 images: no duplicate from padding
    assert round(acc_1 * 61) == pytest.approx(acc_1 * 61, abs=1e-4)  # a count out of 61
