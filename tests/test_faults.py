"""Faults a long run must survive or report clearly: crashes during a save, corrupt checkpoints,
NaN losses, damaged data files, bad configs and an unreachable W&B server."""

import glob
import os

import pytest
import torch
from helpers import smoke_args
from torchvision.datasets import CIFAR10

from vit_lightning.cli import main
from vit_lightning.data import CIFAR10DataModule, FashionMNISTDataModule
from vit_lightning.run import checkpoints


def test_a_crash_during_a_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    io, path = checkpoints.AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)

    def dies_halfway(obj, f):  # the process "crashes" after writing part of the file
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path)
    assert io.load_checkpoint(path)["step"] == 1  # still the complete previous file
    assert os.listdir(tmp_path) == ["last.ckpt"]  # and no half-written temp file


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_corrupt_checkpoint_is_named(tmp_path, damage, capsys):
    good = tmp_path / "good.ckpt"
    checkpoints.AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(4096)}}, good)
    bad = tmp_path / "last.ckpt"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        main(smoke_args("validate", tmp_path, f"--ckpt_path={bad}", "--trainer.logger=false"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and str(bad) in err and "corrupt or truncated" in err
    assert "Traceback" not in err


def test_a_nan_loss_stops_within_one_step_and_keeps_the_last_finite_checkpoint(tmp_path, run_cli):
    args = smoke_args("fit", tmp_path, "--trainer.logger=false", "--trainer.max_epochs=1")
    args += ["--model.lr=1e6", "--model.warmup_epochs=0", "--last_checkpoint.every_n_train_steps=1"]
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stderr[-2000:]
    line = next(x for x in proc.stderr.splitlines() if x.startswith("error:"))
    assert "Training loss is nan at global step" in line or "Training loss is inf" in line
    step = int(line.split("global step ")[1].split()[0])
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == step - 1  # saved after the step before, never after the bad one
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    # the switch: the same run goes on to the end
    guard_off = ["--nonfinite_guard.enabled=false", f"--trainer.default_root_dir={tmp_path}/off"]
    off = run_cli(*args, *guard_off)
    assert off.returncode == 0, off.stderr[-2000:]


def test_a_damaged_cifar_file_is_named(cifar10):
    batch = cifar10.root / CIFAR10.base_folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-50])
    dm = CIFAR10DataModule(str(cifar10.root), download=False, val_size=10, num_workers=0)
    dm.prepare_data()
    with pytest.raises(RuntimeError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert str(batch) in msg and "checksum" in msg and "cifar-10-python.tar.gz" in msg


@pytest.mark.parametrize("cut", [30, 5000])  # inside the header; inside the pixels
def test_a_truncated_fashion_mnist_file_is_named(tmp_path, fmnist_idx, cut):
    dm = FashionMNISTDataModule(
        str(tmp_path / "data"),
        download=False,
        val_size=5,
        local_dirs=[str(fmnist_idx)],
        num_workers=0,
    )
    dm.prepare_data()
    images = dm.raw_dir / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:cut])
    with pytest.raises(RuntimeError) as err:
        dm.setup("fit")
    assert str(images) in str(err.value) and "truncated" in str(err.value)


@pytest.mark.parametrize(
    "override,named",
    [
        ("--model.lr=fast", "model.lr"),  # wrong type
        ("--model.lr_typo=1", "model.lr_typo"),  # unknown key
        ("--model.net.init_args.num_heads=5", "embed_dim=64 must be divisible by num_heads=5"),
        ("--data.img_size=36", "img_size=36 must be divisible by patch_size=8"),
        ("--model.net.init_args.drop_path_rate=-0.1", "drop_path_rate=-0.1"),
        ("--model.weight_decay=-1", "model.weight_decay=-1"),
        ("--data.batch_size=-4", "batch_size"),
        ("--last_checkpoint.every_n_train_steps=-2", "every_n_train_steps=-2"),
    ],
)
def test_bad_config_values_fail_at_startup_naming_the_key(tmp_path, run_cli, override, named):
    proc = run_cli(*smoke_args("fit", tmp_path, override))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert named in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "checkpoints").exists()  # nothing ran


def test_an_unreachable_wandb_server_falls_back_to_offline(tmp_path, run_cli):
    env = {
        "WANDB_API_KEY": "a" * 40,
        "WANDB_BASE_URL": "http://127.0.0.1:9",
        "WANDB_MODE": "online",
    }
    online = "--trainer.logger.init_args.offline=false"
    args = smoke_args("fit", tmp_path, "--trainer.max_epochs=1", online)
    env["PYTHONWARNINGS"] = "default::UserWarning"  # run_cli hides warnings; this one is the point
    proc = run_cli(*args, env=env, timeout=120)  # a hang would hit the timeout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "W&B server http://127.0.0.1:9 is unreachable" in proc.stderr
    assert "wandb sync" in proc.stderr
    assert len(glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))) == 1
