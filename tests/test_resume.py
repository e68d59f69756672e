"""A resumed run is the same run: bit-identical weights, optimizer state and per-step losses after
real kills (SIGKILL, SIGTERM) at epoch boundaries, mid-epoch and on an epoch's last batch.

Every run is a fresh `python -m vit_lightning fit` process on tiny Fashion-MNIST idx files with
every source of randomness switched on: crop+flip augmentation, DropPath, Mixup/CutMix (numpy).
"""

import csv
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers.cli import cli_command, cli_env
from helpers.signal_at import signal_at

STEPS_PER_EPOCH = 7  # 300 images - 60 val = 240 train, batch 32, drop_last
EPOCHS = 3

CONFIG = """
seed_everything: 7
trainer:
  max_epochs: {epochs}
  accelerator: cpu
  devices: 1
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {root}}}
model:
  net:
    class_path: vit_lightning.VisionTransformer
    init_args: {{patch_size: 7, embed_dim: 32, depth: 2, num_heads: 2, drop_path_rate: 0.2}}
  warmup_epochs: 1
  mixup_alpha: 0.8
  cutmix_alpha: 1.0
  mixup_prob: 0.7
data:
  class_path: vit_lightning.data.FashionMNISTDataModule
  init_args:
    data_dir: {root}/data
    download: false
    local_dirs: [{idx}]
    val_size: 60
    augment: crop_flip
    batch_size: 32
    num_workers: {workers}
"""


def _config(root: Path, idx: Path, workers: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "run.yaml"
    path.write_text(CONFIG.format(epochs=EPOCHS, root=root, idx=idx, workers=workers))
    return path


def _fit(root: Path, *extra: str) -> list[str]:
    """`fit` on the run.yaml that _config wrote into root."""
    return ["fit", "--config", str(root / "run.yaml"), f"--trainer.default_root_dir={root}", *extra]


def _losses(root: Path) -> dict[int, str]:
    """step -> train/loss_step, as written (full float repr), over all CSV versions of a run."""
    out = {}
    for path in sorted(root.glob("lightning_logs/version_*/metrics.csv")):
        for row in csv.DictReader(path.read_text().splitlines()):
            if row.get("train/loss_step"):
                out[int(row["step"])] = row["train/loss_step"]
    return out


def _assert_same_run(resumed: Path, straight: Path) -> int:
    """Final checkpoints bit-identical; per-step losses identical. Returns steps compared."""
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)
    assert (b["epoch"], b["global_step"]) == (a["epoch"], a["global_step"])
    for k, v in a["state_dict"].items():
        assert torch.equal(b["state_dict"][k], v), f"weights differ: {k}"
    (opt_a,), (opt_b,) = a["optimizer_states"], b["optimizer_states"]
    for sa, sb in zip(opt_a["state"].values(), opt_b["state"].values(), strict=True):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"optimizer state differs: {k}"
    assert a["lr_schedulers"] == b["lr_schedulers"]
    la, lb = _losses(straight), _losses(resumed)
    assert len(la) == EPOCHS * STEPS_PER_EPOCH and set(lb) <= set(la)
    assert {s: la[s] for s in lb} == lb  # every step the resumed runs logged
    return len(lb)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, fmnist_idx_300, run_cli) -> Path:
    """The uninterrupted run everything is compared with."""
    root = tmp_path_factory.mktemp("straight")
    _config(root, fmnist_idx_300)
    proc = run_cli(*_fit(root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.mark.slow
def test_workers_do_not_change_the_run(straight, tmp_path, fmnist_idx_300, run_cli):
    # augmentation is keyed by (seed, epoch, index), not by which process draws it
    _config(tmp_path, fmnist_idx_300, workers=2)
    proc = run_cli(*_fit(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_run(tmp_path, straight)


@pytest.mark.parametrize(
    "kill_step,sig,extra",
    [
        # after epoch 1's end-of-epoch checkpoint, at the first batch of epoch 2
        (2 * STEPS_PER_EPOCH, "SIGKILL", []),
        # mid-epoch: last.ckpt every 3 steps (step 9 = epoch 1, batch 1), killed at step 11
        (11, "SIGKILL", ["--last_checkpoint.every_n_train_steps=3"]),
        # SIGTERM during an epoch's last batch: saved after its validation and the next batch
        (STEPS_PER_EPOCH - 1, "SIGTERM", []),
        # SIGUSR1 mid-epoch (not on SLURM): saved after the batch, exit 138
        (4, "SIGUSR1", []),
    ],
    ids=["epoch-boundary-kill", "mid-epoch-kill", "last-batch-term", "mid-epoch-usr1"],
)
def test_killed_and_resumed_run_is_bit_identical(
    straight, tmp_path, fmnist_idx_300, run_cli, kill_step, sig, extra
):
    _config(tmp_path, fmnist_idx_300)
    first = run_cli(*_fit(tmp_path, *extra, *signal_at(kill_step, sig)))
    expected_rc = -signal.SIGKILL if sig == "SIGKILL" else 128 + getattr(signal, sig)
    assert first.returncode == expected_rc, first.stderr[-3000:]
    if sig != "SIGKILL":
        assert "--ckpt_path=last" in first.stderr + first.stdout  # says how to continue
        saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
        # the batch in flight finished, then saved; at an epoch's end, after the next one
        after = 2 if (kill_step + 1) % STEPS_PER_EPOCH == 0 else 1
        assert saved["global_step"] == kill_step + after
    again = run_cli(*_fit(tmp_path, *extra, "--ckpt_path=last"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert _assert_same_run(tmp_path, straight) > 0


@pytest.mark.parametrize(
    "sig", [pytest.param(signal.SIGKILL, marks=pytest.mark.slow), signal.SIGTERM]
)
def test_a_real_signal_from_outside_then_resume(straight, tmp_path, fmnist_idx_300, run_cli, sig):
    """The scheduler's view: a signal at a moment the run does not choose."""
    _config(tmp_path, fmnist_idx_300)
    every = "--last_checkpoint.every_n_train_steps=2"
    cmd = cli_command(*_fit(tmp_path, every))
    proc = subprocess.Popen(
        cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    last = tmp_path / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # somewhere after the first save
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal landed")  # a very fast machine
    assert proc.returncode in (-sig, 128 + sig), err[-3000:]
    again = run_cli(*_fit(tmp_path, every, "--ckpt_path=last"))
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_same_run(tmp_path, straight)


def test_device_pipeline_run_resumes_bit_identical(tmp_path, fmnist_idx_300, run_cli):
    # flip, TrivialAugment and erasing drawn per batch on the host, applied on the device: still
    # a function of (seed, epoch, indices), so a mid-epoch kill and resume replays the same draws
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    device = ("--data.device_pipeline=true", "--data.augment=trivialaugment",
              "--data.random_erasing=0.25")  # fmt: skip
    every = "--last_checkpoint.every_n_train_steps=3"
    for root in (straight, resumed):
        _config(root, fmnist_idx_300)
    assert (proc := run_cli(*_fit(straight, *device))).returncode == 0, proc.stderr[-3000:]
    first = run_cli(*_fit(resumed, *device, every, *signal_at(11, "SIGKILL")))
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    again = run_cli(*_fit(resumed, *device, every, "--ckpt_path=last"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert _assert_same_run(resumed, straight) > 0
