"""What a run does with a user's own Lightning habits: a resume with other settings than its
checkpoint's, the schedule's length under each limit, Lightning's tuner callbacks and debugging
flags, and LightningCLI's optimizer flags.

In-process runs of configs/smoke.yaml at tiny sizes (`cli.main(args=[...])`).
"""

import logging
import shutil
from types import SimpleNamespace

import pytest
import torch
from helpers import smoke_args
from lightning.pytorch.callbacks import Callback, LearningRateFinder, Timer
from torch.utils.data import Dataset

from vit_lightning.cli import main
from vit_lightning.data.sampling import ResumableLoader, ResumableSampler
from vit_lightning.errors import ConfigError
from vit_lightning.training.schedule import plan

TINY = (
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.train_size=128",
    "--data.init_args.val_size=32",
    "--data.init_args.batch_size=16",  # 8 steps per epoch
    "--model.net.init_args.embed_dim=32",
    "--model.net.init_args.depth=1",
)


class CountBatches(Callback):
    """Training images per epoch and validation batches, as the run saw them."""

    def __init__(self) -> None:
        self.train: dict[int, int] = {}
        self.val_batches = 0
        self.sanity_batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epoch = trainer.current_epoch
        self.train[epoch] = self.train.get(epoch, 0) + len(batch[1])

    def on_validation_batch_start(self, trainer, *args) -> None:
        if trainer.sanity_checking:
            self.sanity_batches += 1
        else:
            self.val_batches += 1


COUNT = "--trainer.callbacks+=test_resume_changes.CountBatches"


def _fit(root, *extra: str):
    return main(smoke_args("fit", root, *TINY, *extra))


def _counter(cli) -> CountBatches:
    return next(c for c in cli.trainer.callbacks if isinstance(c, CountBatches))


def _lrs(cli) -> list[float]:
    return [max(g["lr"] for g in opt.param_groups) for opt in cli.trainer.optimizers]


# -- Lightning's debugging flags -------------------------------------------------------------


@pytest.mark.parametrize(
    "flags,steps,train_images,val_batches,sanity",
    [
        # the first 2 batches, unshuffled, for training and validation (was: a TypeError)
        (["--trainer.overfit_batches=2"], 2, {0: 32}, 2, 2),
        # these two worked before; kept as slow regression checks
        pytest.param(["--trainer.fast_dev_run=2"], 2, {0: 32}, 2, 0, marks=pytest.mark.slow),
        # `1` is one batch, as Trainer(limit_train_batches=1) says (jsonargparse read 1.0: all)
        (
            [
                "--trainer.max_epochs=2",
                "--trainer.limit_train_batches=1",
                "--trainer.limit_val_batches=1",
                "--trainer.num_sanity_val_steps=0",
                "--trainer.check_val_every_n_epoch=2",
            ],
            2,
            {0: 16, 1: 16},
            1,
            0,
        ),
        pytest.param(
            ["--trainer.val_check_interval=4", "--trainer.limit_val_batches=0.5"],
            *(8, {0: 128}, 2, 1),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["overfit_batches", "fast_dev_run", "limits-and-check_val", "val_check_interval"],
)
def test_lightning_debugging_flags_do_what_lightning_says(
    tmp_path, flags, steps, train_images, val_batches, sanity
):
    cli = _fit(tmp_path, "--trainer.max_epochs=1", COUNT, *flags)
    seen = _counter(cli)
    assert cli.trainer.global_step == steps
    assert seen.train == train_images
    assert (seen.val_batches, seen.sanity_batches) == (val_batches, sanity)
    if "limits" in str(flags):  # and the eval subcommands' limits, on that run's checkpoint
        for sub, flag in (("test", "limit_test_batches"), ("predict", "limit_predict_batches")):
            args = smoke_args(sub, tmp_path, *TINY, f"--trainer.{flag}=1", "--ckpt_path=last")
            out = main([*args, f"--prediction_writer.output_dir={tmp_path / 'pred'}"])
            assert getattr(out.trainer, f"num_{sub}_batches") == [1]


# -- the schedule's length -------------------------------------------------------------------


def test_schedule_follows_max_steps_when_it_ends_the_run(tmp_path, caplog):
    # max_epochs=-1: the warmup was warmup_epochs x total steps / 1 (6 steps, not half an epoch)
    args = ("--trainer.max_epochs=-1", "--trainer.max_steps=12", "--model.warmup_epochs=0.5")
    with caplog.at_level(logging.INFO):
        cli = _fit(tmp_path, *args)
    factor = cli.trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert [factor(s) for s in (2, 3)] == [0.75, 1.0]  # 4 warmup steps = half of 8 per epoch
    assert factor(12) == pytest.approx(1e-5 / 1e-3)  # the floor at max_steps
    assert "lr schedule: 4 warmup steps" in caplog.text
    assert "cosine to 1e-05 at step 12 (trainer.max_steps=12 ends the run" in caplog.text


def _fake_trainer(**limits) -> SimpleNamespace:
    """What `plan` reads of a Trainer: 10 batches per epoch."""
    dm = SimpleNamespace(train_dataloader=lambda: range(10))
    base = dict(max_steps=-1, max_epochs=-1, callbacks=[], limit_train_batches=1.0)
    return SimpleNamespace(datamodule=dm, accumulate_grad_batches=1, **{**base, **limits})


def test_schedule_length_is_the_first_limit_and_max_time_alone_is_said():
    assert plan(_fake_trainer(max_epochs=10, max_steps=12), 2).total == 12
    epochs = plan(_fake_trainer(max_epochs=3, max_steps=100), 0.5)
    assert (epochs.warmup, epochs.total, epochs.ends_by) == (5, 30, "trainer.max_epochs=3")
    timed = plan(_fake_trainer(callbacks=[Timer(duration="00:00:10:00")]), 1)
    assert timed.total is None and timed.factor(0.01)(500) == 1.0  # holds the peak
    text = timed.describe(1e-3, 1e-5)
    assert "trainer.max_time ends the run" in text and "no decay" in text


# -- LightningCLI's optimizer flags ----------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--optimizer=torch.optim.SGD", "--optimizer.lr=0.1"],
        ["--lr_scheduler=torch.optim.lr_scheduler.StepLR", "--lr_scheduler.step_size=1"],
    ],
    ids=["optimizer", "lr_scheduler"],
)
def test_lightningcli_optimizer_flags_are_refused_at_startup(tmp_path, flags, capsys):
    with pytest.raises(SystemExit) as e:
        _fit(tmp_path, *flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2
    assert err[-1].startswith("error: --") and "configure_optimizers" in err[-1]
    assert not (tmp_path / "config.yaml").exists()


# -- a resume with other settings ------------------------------------------------------------


class Indexed(Dataset):
    def __len__(self) -> int:
        return 96

    def __getitem__(self, key):
        return key  # the (index, epoch) pair the sampler yields


def _loader(batch_size: int, world: int = 1, rank: int = 0) -> ResumableLoader:
    ds = Indexed()
    sampler = ResumableSampler(ds, world, rank, shuffle=True, seed=3)
    return ResumableLoader(ds, sampler=sampler, batch_size=batch_size, drop_last=True,
                           collate_fn=lambda b: [i for i, _ in b])  # fmt: skip


def test_mid_epoch_resume_at_another_batch_size_continues_at_the_same_image():
    saved = _loader(8, world=2, rank=0)
    saved.batches_done = lambda: 3  # 3 batches of 8 on each of 2 ranks: 48 images
    state = saved.state_dict()
    order = [i for i, _ in ResumableSampler(Indexed(), 1, 0, shuffle=True, seed=3)]
    done_at = []
    resumed = _loader(16)
    resumed.resumed_at = done_at.append
    resumed.load_state_dict(state)
    assert [i for b in resumed for i in b] == order[48:]  # the rest of the epoch, each once
    assert done_at == [3]
    with pytest.raises(ConfigError, match=r"batch_size=32 x 1 devices \(the checkpoint's: "):
        _loader(32).load_state_dict(state)  # 48 is no whole number of batches of 32


@pytest.fixture(scope="module")
def stopped_at_step_4(tmp_path_factory):
    """A fit stopped mid-epoch 0 by max_steps, with last.ckpt at step 4 of 8 (batch 16)."""
    root = tmp_path_factory.mktemp("stopped")
    _fit(root, "--trainer.max_epochs=1", "--trainer.max_steps=4",
         "--last_checkpoint.every_n_train_steps=2")  # fmt: skip
    return root


def test_mid_epoch_resume_with_a_larger_batch_sees_every_image_once(
    stopped_at_step_4, tmp_path, caplog
):
    root = shutil.copytree(stopped_at_step_4, tmp_path / "run")
    resume = ("--trainer.max_epochs=1", "--data.init_args.batch_size=32", "--ckpt_path=last", COUNT)
    with caplog.at_level(logging.INFO):
        cli = _fit(root, *resume)
    # 64 images before the kill; the epoch's other 64 after it, as 2 batches of 32 (was: 0)
    assert _counter(cli).train == {0: 64}
    assert "Resuming at image 64 of epoch 0: batch 2 of 4 at data.batch_size=32" in caplog.text
    assert "data.batch_size 16 -> 32" in caplog.text and "trainer.max_steps 4 -> -1" in caplog.text
    assert "the lr schedule is re-derived" in caplog.text


def test_mid_epoch_resume_that_is_no_whole_batch_is_refused(stopped_at_step_4, tmp_path, capsys):
    root = shutil.copytree(stopped_at_step_4, tmp_path / "run")
    resume = ("--trainer.max_epochs=1", "--data.init_args.batch_size=48", "--ckpt_path=last")
    with pytest.raises(SystemExit) as e:
        _fit(root, *resume)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2
    assert "data.batch_size=48" in err and "data.batch_size=16" in err


def test_longer_max_epochs_on_resume_rederives_the_schedule_and_says_so(tmp_path, caplog):
    small = ("--data.init_args.train_size=64", "--model.warmup_epochs=0.5")  # 4 steps per epoch
    _fit(tmp_path, "--trainer.max_epochs=1", *small)
    with caplog.at_level(logging.INFO):
        cli = _fit(tmp_path, "--trainer.max_epochs=2", *small, "--ckpt_path=last")
    assert "trainer.max_epochs 1 -> 2" in caplog.text
    # the lr was at its floor, 1e-5, and jumps back up: said, with both values
    said = "warmup 2 -> 2, total 4 -> 8 steps; at the resume step 4 the lr is 0.000752 (the "
    assert said + "checkpoint's schedule: 1e-05)" in caplog.text
    assert cli.trainer.global_step == 8


# -- Lightning's tuner callbacks -------------------------------------------------------------

LR_FINDER = (
    "--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateFinder",
    "--trainer.callbacks.num_training_steps=16",
    "--trainer.callbacks.min_lr=1e-4",
    "--trainer.callbacks.max_lr=0.1",
)


@pytest.mark.slow  # a 16-step search, then 32 steps of training
def test_learning_rate_finder_lr_is_trained_with_and_kept_on_resume(tmp_path, caplog):
    batch = "--data.init_args.batch_size=8"  # 16 steps per epoch: the search fits in one
    cli = _fit(tmp_path, "--trainer.max_epochs=1", "--model.warmup_epochs=0", batch, *LR_FINDER)
    finder = next(c for c in cli.trainer.callbacks if isinstance(c, LearningRateFinder))
    found = finder.optimal_lr.suggestion()
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert found != 1e-3 and max(scheduler.base_lrs) == pytest.approx(found)  # was: 1e-3
    assert cli.model.tuned["lr"] == found and cli.model.hparams.lr == 1e-3  # as configured
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["lr"] == 1e-3
    # the same command, resumed longer: no settings conflict, no new search, the found lr
    with caplog.at_level(logging.INFO):
        again = _fit(tmp_path, "--trainer.max_epochs=2", "--model.warmup_epochs=0", batch,
                     *LR_FINDER, "--ckpt_path=last")  # fmt: skip
    assert "LearningRateFinder not run again" in caplog.text
    assert again.model.tuned["lr"] == found and again.trainer.global_step == 32
    assert max(again.trainer.lr_scheduler_configs[0].scheduler.base_lrs) == pytest.approx(found)


def test_batch_size_finder_size_is_trained_with_and_kept_on_resume(tmp_path, caplog):
    finder = (
        "--trainer.callbacks+=lightning.pytorch.callbacks.BatchSizeFinder",
        "--trainer.callbacks.init_val=16",
        "--trainer.callbacks.max_trials=2",  # 16, then 32: no OOM on a CPU
        "--trainer.callbacks.steps_per_trial=1",
        "--model.lr_scaling=linear",
        "--model.base_batch_size=16",
        COUNT,
    )
    cli = _fit(tmp_path, "--trainer.max_epochs=1", *finder)
    assert cli.datamodule.batch_size == 32
    assert _counter(cli).train == {0: 128} and cli.trainer.global_step == 4  # 4 batches of 32
    # the lr scaled for 32 (was: for the 16 the optimizer had been built with)
    assert max(cli.trainer.lr_scheduler_configs[0].scheduler.base_lrs) == pytest.approx(2e-3)
    assert cli.model.tuned == {"batch_size": 32}
    # resumed: no new search, the found size (the config still says 16), the same lr
    with caplog.at_level(logging.INFO):
        again = _fit(tmp_path, "--trainer.max_epochs=2", *finder, "--ckpt_path=last")
    assert "BatchSizeFinder not run again" in caplog.text
    assert again.datamodule.batch_size == 32 and _counter(again).train == {1: 128}
    assert max(again.trainer.lr_scheduler_configs[0].scheduler.base_lrs) == pytest.approx(2e-3)
