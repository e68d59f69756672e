"""The private Lightning names that `vit_lightning.compat` wraps still exist and still work."""

import lightning as L
import pytest
from helpers.trainer import QUIET
from lightning.fabric.plugins.environments import ClusterEnvironment
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DistributedSampler

from vit_lightning import compat
from vit_lightning.errors import UserError
from vit_lightning.run.checkpoints import corrupt_checkpoint

# seed_everything_default=False: no global seeding as a side effect of these tests
CLI_ARGS = dict(trainer_defaults=QUIET, seed_everything_default=False)


def test_lightning_still_has_every_private_name_compat_uses():
    missing = compat.check()
    assert not missing, (
        f"lightning {L.__version__} no longer has: {'; '.join(missing)}. "
        "Update vit_lightning/compat.py, the only module that uses them, for this version."
    )


def test_check_names_what_no_longer_works(monkeypatch):
    monkeypatch.setattr(compat, "UnrepeatedDistributedSampler", None)  # as if the import failed
    monkeypatch.setattr(compat, "request_stop", lambda trainer: None)  # as if the flag moved
    assert compat.check() == [
        "lightning.pytorch.overrides.distributed.UnrepeatedDistributedSampler",
        "trainer._signal_connector.received_sigterm",
    ]


class Record(L.Callback):
    def __init__(self, stop_after: int | None = None) -> None:
        self.seen: list[tuple[int, bool]] = []
        self.stop_after = stop_after

    def on_train_batch_end(self, trainer, *args) -> None:
        self.seen.append((compat.train_batches_done(trainer), compat.is_last_train_batch(trainer)))
        if len(self.seen) == self.stop_after:
            compat.request_stop(trainer)


def test_batch_counters_restart_every_epoch_and_flag_its_last_batch():
    record = Record()
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=0, callbacks=[record], **QUIET
    )
    trainer.fit(BoringModel())
    assert record.seen == [(1, False), (2, False), (3, True)] * 2
    assert isinstance(compat.cluster_environment(trainer), ClusterEnvironment)


def test_request_stop_ends_fit_after_the_current_batch_as_sigterm_does():
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=5,
        limit_val_batches=0,
        callbacks=[Record(stop_after=2)],
        **QUIET,
    )
    with pytest.raises(SIGTERMException):
        trainer.fit(BoringModel())
    assert trainer.global_step == 2


class Probe(BoringModel):
    def __init__(self, width: int = 2) -> None:
        super().__init__()
        self.given = compat.given_hyperparameters()


def test_given_hyperparameters_tells_a_cli_build_from_a_python_one():
    assert not Probe().given
    assert LightningCLI(Probe, args=[], run=False, **CLI_ARGS).model.given


def test_a_damaged_ckpt_path_is_named_before_lightningcli_reads_its_hyperparameters(tmp_path):
    class CLI(compat.CkptPathErrorsMixin, LightningCLI):
        def unreadable_checkpoint(self, path: str, e: Exception) -> Exception:
            return corrupt_checkpoint(path, e)  # the hook vit_lightning.cli fills in

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt or truncated") as err:
        CLI(BoringModel, args=["validate", f"--ckpt_path={bad}"], **CLI_ARGS)
    assert str(bad) in str(err.value)


def test_the_eval_sampler_splits_without_padding():
    ranks = [
        compat.UnrepeatedDistributedSampler(range(5), num_replicas=2, rank=r, shuffle=False)
        for r in (0, 1)
    ]
    assert all(isinstance(s, DistributedSampler) for s in ranks)
    assert sorted(i for s in ranks for i in s) == [0, 1, 2, 3, 4]  # each sample once, none repeated
