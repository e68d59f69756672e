"""Scale-out: DDP on CPU (gloo), exact eval metrics across ranks, bf16, gradient accumulation,
lr scaling, a faked SLURM requeue, the sweep file, and what the W&B summary records."""

import csv
import glob
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from helpers import smoke_args
from helpers.signal_at import signal_at
from helpers.trainer import quiet_trainer

from vit_lightning import VisionTransformer
from vit_lightning.analysis.runs import read_offline_run
from vit_lightning.cli import main
from vit_lightning.data import SyntheticDataModule
from vit_lightning.module import ViTClassifier


def _csv_metric(save_dir: Path, key: str) -> float:
    (path,) = glob.glob(str(save_dir / "**" / "metrics.csv"), recursive=True)
    rows = csv.DictReader(Path(path).read_text().splitlines())
    return next(float(r[key]) for r in rows if r.get(key))


def test_ddp_two_processes_fit_and_validate_count_every_sample_once(tmp_path, run_cli):
    # 101 val images: not divisible by 2 ranks, so a padding sampler would count one twice
    data = ["--data.val_size=101", "--data.train_size=256", "--data.batch_size=32"]
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2"]
    fit = run_cli(*smoke_args("fit", tmp_path, *data, "--trainer.max_epochs=1", *ddp))
    assert fit.returncode == 0, fit.stderr[-3000:]
    runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    assert len(runs) == 1  # rank 0 logs; one W&B run, not two
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 256 // (32 * 2)  # each rank took half of every epoch
    assert read_offline_run(runs[0])["summary"]["device_count"] == 2

    csv_dir = tmp_path / "csv2"
    args = smoke_args("validate", tmp_path, *data, "--ckpt_path=last")
    csv_logger = "--trainer.logger=lightning.pytorch.loggers.CSVLogger"
    val = run_cli(*args, *ddp, csv_logger, f"--trainer.logger.save_dir={csv_dir}")
    assert val.returncode == 0, val.stderr[-3000:]
    acc_2, loss_2 = _csv_metric(csv_dir, "val/acc"), _csv_metric(csv_dir, "val/loss")

    cli = main([*args, "--trainer.logger=false"])
    acc_1, loss_1 = (cli.trainer.callback_metrics[k].item() for k in ("val/acc", "val/loss"))

    # and by hand: the checkpoint's predictions on the 101 images
    model = ViTClassifier.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt").eval()
    x, y = cli.datamodule.val_set.tensors
    with torch.no_grad():
        logits = model(x)
    correct = (logits.argmax(-1) == y).sum().item()
    assert acc_1 == acc_2 == pytest.approx(correct / 101, abs=1e-7)
    assert loss_1 == pytest.approx(loss_2, rel=1e-6)  # a sum of 101 terms, in another order
    assert loss_1 == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)


def test_bf16_mixed_on_cpu(tmp_path):
    args = smoke_args("fit", tmp_path, "--trainer.logger=false", "--trainer.max_epochs=3")
    data = ["--data.train_size=256", "--data.val_size=64"]
    cli = main([*args, *data, "--trainer.precision=bf16-mixed"])
    metrics = cli.trainer.callback_metrics
    assert str(cli.trainer.precision) == "bf16-mixed"
    assert torch.isfinite(metrics["train/loss_epoch"]) and metrics["val/acc"] > 0.5
    # autocast computes in bf16 but the weights (and the checkpoint) stay fp32
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cli.model(torch.randn(2, 3, 32, 32)).dtype == torch.bfloat16


def _fit_weights(batch_size: int, accumulate: int) -> dict[str, torch.Tensor]:
    L.seed_everything(0)
    # no qkv bias: the key bias gets a zero gradient in exact arithmetic (softmax ignores a
    # constant shift), so Adam would amplify float noise in it into full-size steps
    net = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, qkv_bias=False
    )
    model = ViTClassifier(net, lr=1e-3, warmup_epochs=0, label_smoothing=0.1)
    dm = SyntheticDataModule(train_size=128, val_size=16, batch_size=batch_size)
    trainer = quiet_trainer(max_epochs=2, accumulate_grad_batches=accumulate, limit_val_batches=0)
    trainer.fit(model, dm)
    assert model.global_batch_size == 32 and trainer.global_step == 2 * 128 // 32
    return model.state_dict()


def test_gradient_accumulation_equals_the_larger_batch():
    big, accumulated = _fit_weights(32, 1), _fit_weights(16, 2)
    for k, v in big.items():  # same samples per step, same mean loss, same updates
        torch.testing.assert_close(accumulated[k], v, rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.parametrize("scaling,factor", [("none", 1.0), ("linear", 2.0), ("sqrt", 2**0.5)])
def test_lr_scales_with_the_global_batch_size(scaling, factor):
    net = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    model = ViTClassifier(net, lr=1e-3, min_lr=1e-5, lr_scaling=scaling, base_batch_size=64)
    dm = SyntheticDataModule(train_size=256, val_size=16, batch_size=32)
    trainer = quiet_trainer(max_steps=1, accumulate_grad_batches=4, limit_val_batches=0)
    trainer.fit(model, dm)  # global batch 32 x 1 device x 4 = 128 = 2 x base_batch_size
    (group, *_) = trainer.optimizers[0].param_groups
    assert group["initial_lr"] == pytest.approx(1e-3 * factor)
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.lr_lambdas[0](10**9) * group["initial_lr"] == pytest.approx(1e-5 * factor)


def test_slurm_requeue_resumes_from_the_hpc_checkpoint_into_the_same_wandb_run(tmp_path, run_cli):
    """A faked SLURM job: SIGUSR1 -> hpc checkpoint + `scontrol requeue`; the stub scontrol then
    ends the job like SLURM would (SIGTERM). The same command, rerun, picks the run up."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\nkill -TERM $PPID\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "vit",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NODELIST": "localhost",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NNODES": "1",
    }
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", **slurm}
    root = tmp_path / "run"
    data = ["--data.train_size=512", "--data.val_size=64"]
    quiet = "--trainer.enable_progress_bar=false"
    args = smoke_args("fit", root, "--trainer.max_epochs=5", *data, "--ckpt_path=last", quiet)
    # a real SIGUSR1 at step 12 (epoch 1), sent by the process to itself so the timing is exact
    args += signal_at(12, "SIGUSR1")
    proc = run_cli(*args, env=env)
    out = proc.stdout + proc.stderr
    last = root / "checkpoints" / "last.ckpt"
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"], out[-3000:]
    (hpc,) = root.glob("hpc_ckpt_*.ckpt")
    hpc_step = torch.load(hpc, weights_only=False)["global_step"]
    assert hpc_step in (12, 13)  # saved by the signal handler, in or right after step 13

    assert proc.returncode == 128 + 15  # SLURM's SIGTERM also saved last.ckpt, after the hpc one
    again = run_cli(*args, env=env)
    assert again.returncode == 0, again.stderr[-3000:]  # config.yaml exists: no crash
    newest = max([hpc, last], key=lambda p: p.stat().st_mtime_ns)
    assert f"resuming from {newest}" in again.stdout + again.stderr
    final = torch.load(last, weights_only=False)
    assert final["epoch"] == 4 and final["global_step"] == 5 * 8
    ids = {read_offline_run(r)["id"] for r in glob.glob(str(root / "wandb" / "offline-run-*"))}
    assert ids == {(root / "wandb-run-id").read_text().strip()}  # two W&B segments, one run


def test_a_fresh_fit_starts_a_new_wandb_run_and_a_resumed_one_keeps_it(tmp_path):
    args = smoke_args("fit", tmp_path, "--data.train_size=128", "--data.val_size=32")
    main([*args, "--trainer.max_epochs=1"])
    first = (tmp_path / "wandb-run-id").read_text()
    main([*args, "--trainer.max_epochs=2", "--ckpt_path=last"])
    assert (tmp_path / "wandb-run-id").read_text() == first
    # a new run in the folder (the earlier one moved away; a fit would not overwrite it)
    shutil.rmtree(tmp_path / "checkpoints")
    (tmp_path / "config.yaml").unlink()
    main([*args, "--trainer.max_epochs=1"])  # no ckpt_path, a wandb-run-id left: a new W&B run
    assert (tmp_path / "wandb-run-id").read_text() != first


def test_wandb_summary_records_what_makes_runs_comparable(tmp_path, repo_root):
    wandb = [
        "--trainer.logger.init_args.group=ablation",
        "--trainer.logger.init_args.tags=[a,b]",
        "--trainer.logger.init_args.job_type=train",
    ]
    main(smoke_args("fit", tmp_path, "--trainer.max_epochs=1", *wandb))
    (run_dir,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    rec = read_offline_run(run_dir)
    summary = rec["summary"]
    model = ViTClassifier.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert summary["params"] == sum(p.numel() for p in model.parameters())
    device = (summary["device"], summary["device_count"], summary["precision"])
    assert device == ("cpu", 1, "32-true")
    assert summary["val/acc_best"] == summary["val/acc"] > 0.1 and summary["train/throughput"] > 0
    git = ["git", "rev-parse", "HEAD"]
    head = subprocess.run(git, cwd=repo_root, capture_output=True, text=True)
    assert summary["git_commit"].startswith(head.stdout.strip() or "unknown")
    assert (rec["group"], rec["tags"], rec["job_type"]) == ("ablation", ["a", "b"], "train")


def test_a_sweep_command_line_parses_and_runs(tmp_path, monkeypatch, cifar10, repo_root):
    sweep = yaml.safe_load((repo_root / "configs" / "sweeps" / "cifar10.yaml").read_text())
    assert sweep["method"] in ("grid", "random", "bayes")
    assert sweep["metric"]["name"].startswith("val/")
    command = sweep["command"]
    assert command[2:4] == ["-m", "vit_lightning"] and command[-1] == "${args}"
    # what the agent does: one value per parameter, appended as --key=value
    trial = {
        k: p.get("value", p["values"][0] if "values" in p else p.get("min"))
        for k, p in sweep["parameters"].items()
    }
    swept = [f"--{k}={v}" for k, v in trial.items()]
    small = [
        f"--data.init_args.data_dir={cifar10.root}",
        "--data.init_args.download=false",
        "--data.init_args.val_size=10",
        "--data.init_args.batch_size=10",
        "--data.init_args.num_workers=0",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.accelerator=cpu",
    ]
    monkeypatch.chdir(repo_root)
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep1")
    # the agent's run id wins, and each trial of the same command line gets its own folder
    for run_id in ("sweeptrial1", "sweeptrial2"):
        monkeypatch.setenv("WANDB_RUN_ID", run_id)
        main([*command[4:-1], *swept, *small])
        (run_dir,) = glob.glob(str(tmp_path / "run" / run_id / "wandb" / "offline-run-*"))
        rec = read_offline_run(run_dir)
        assert rec["id"] == run_id
        assert (tmp_path / "run" / run_id / "checkpoints" / "last.ckpt").is_file()
    assert rec["config"]["model"]["lr"] == pytest.approx(trial["model.lr"])
    assert rec["config"]["data"]["init_args"]["augment"] == trial["data.init_args.augment"]


@pytest.mark.parametrize("name", ["single_node", "multi_node"])
def test_sbatch_files_launch_one_task_per_gpu_and_their_command_parses(
    name, capsys, monkeypatch, repo_root
):
    text = (repo_root / "configs" / "slurm" / f"{name}.sbatch").read_text()
    directives = dict(
        line.removeprefix("#SBATCH --").split("=", 1)
        for line in text.splitlines()
        if line.startswith("#SBATCH --") and "=" in line
    )
    assert directives["signal"] == "SIGUSR1@90"
    assert directives["ntasks-per-node"] == directives["gpus-per-node"]  # one task per GPU
    assert "requeue" in text and "--ckpt_path=last" in text
    # the srun line, with SLURM's variables filled in, is a valid CLI call
    command = text[text.index("srun python -m vit_lightning") :].replace("\\\n", " ")
    env = {
        "SLURM_NTASKS_PER_NODE": directives["ntasks-per-node"],
        "SLURM_NNODES": directives["nodes"],
        "SLURM_CPUS_PER_TASK": directives["cpus-per-task"],
        "SLURM_JOB_ID": "77",
    }
    for key, value in env.items():
        command = command.replace("${" + key + "}", value)
    overlay = '${OVERLAY:+--config "$OVERLAY"}'  # OVERLAY=<overlay> sbatch ...
    assert overlay in command
    monkeypatch.chdir(repo_root)
    for variant in ("", "--config configs/overlays/cifar10_deit.yaml"):
        args = [a for a in shlex.split(command.replace(overlay, variant))[4:] if a != "$@"]
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--print_config"])
        assert exit_info.value.code == 0
        out = yaml.safe_load(capsys.readouterr().out)
        assert str(out["trainer"]["devices"]) == directives["gpus-per-node"]
        assert out["trainer"]["num_nodes"] == int(directives["nodes"])
        # the job's flags win over the overlay's default_root_dir: a requeue finds its folder
        assert out["trainer"]["default_root_dir"] == "runs/cifar10-77"
        assert out["model"]["distillation"] == ("hard" if variant else "none")
