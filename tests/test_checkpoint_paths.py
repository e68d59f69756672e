"""`--ckpt_path=last|best` on a remote `default_root_dir`: `newest_checkpoint` and `best_checkpoint`
find in an fsspec URL (here `memory://`) what they find in an identical local folder, and return
it as a URL, spelt as the root is."""

import time
import uuid
from pathlib import Path

import fsspec
import pytest
import torch

from vit_lightning.run.checkpoints import (
    AtomicCheckpointIO,
    best_checkpoint,
    newest_checkpoint,
    remove_stale_temp_files,
)

MONITOR_KEY = "ModelCheckpoint{'monitor': 'val/acc', 'mode': '%s', 'every_n_train_steps': 0}"


class Twins:
    """The same run folder twice: local (`local`, a Path) and remote (`remote`, a memory:// URL)."""

    def __init__(self, local: Path) -> None:
        self.local, self.remote = local, f"memory://{uuid.uuid4().hex}/run"

    def write(self, name: str, mode: str = "max", best: str = "", scores=None) -> None:
        """`name` (relative to the run folder) in both, with a monitoring ModelCheckpoint's state
        (best path and top-k scores relative to the folder too) and a LastCheckpoint's."""
        for root in (str(self.local), self.remote):
            folder = f"{root}/{name}".rsplit("/", 1)[0]
            top_k = {f"{folder}/{n}": torch.tensor(s) for n, s in (scores or {}).items()}
            monitoring = {
                "monitor": "val/acc",
                "best_model_path": f"{root}/{best}" if best else "",
                "best_k_models": top_k,
            }
            states = {
                MONITOR_KEY % mode: monitoring,
                "LastCheckpoint{'monitor': None}": {"monitor": None, "best_model_path": name},
            }
            AtomicCheckpointIO().save_checkpoint({"callbacks": states}, f"{root}/{name}")
        time.sleep(0.01)  # the next file is newer, in both

    def found(self, find) -> str | None:
        """What `find` returns for both folders, as a path relative to the run folder; asserts
        both agree and each result has its folder's type (Path local, URL remote)."""
        local, remote = find(self.local), find(self.remote)
        if local is None:
            assert remote is None, remote
            return None
        assert isinstance(local, Path) and isinstance(remote, str), (local, remote)
        relative = local.relative_to(self.local).as_posix()
        assert remote == f"{self.remote}/{relative}"
        return relative


@pytest.fixture
def twins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a URL taken for a local path would show up here as ./memory:
    twins = Twins(tmp_path / "run")
    yield twins
    if fsspec.filesystem("memory").exists(twins.remote):
        fsspec.filesystem("memory").rm(twins.remote, recursive=True)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_newest_is_the_latest_written_resumable_checkpoint_locally_and_remotely(twins):
    assert twins.found(newest_checkpoint) is None  # no folder yet
    twins.write("checkpoints/last.ckpt")
    twins.write("checkpoints/best-a.ckpt")  # not resumable: never the newest
    assert twins.found(newest_checkpoint) == "checkpoints/last.ckpt"
    twins.write("checkpoints/on_exception.ckpt")
    assert twins.found(newest_checkpoint) == "checkpoints/on_exception.ckpt"
    twins.write("hpc_ckpt_1.ckpt")  # SLURM's, in the run folder itself
    assert twins.found(newest_checkpoint) == "hpc_ckpt_1.ckpt"
    twins.write("checkpoints/last.ckpt")  # rewritten: newest again
    assert twins.found(newest_checkpoint) == "checkpoints/last.ckpt"


def test_best_is_the_recorded_file_even_after_a_move_locally_and_remotely(twins):
    twins.write("checkpoints/best-a.ckpt", scores={"best-a.ckpt": 0.9})  # higher, not recorded
    twins.write("checkpoints/best-b.ckpt", scores={"best-b.ckpt": 0.7})
    twins.write("checkpoints/last.ckpt", best="checkpoints/best-b.ckpt")
    assert twins.found(best_checkpoint) == "checkpoints/best-b.ckpt"
    twins.write("checkpoints/last.ckpt", best="moved/best-a.ckpt")  # gone: looked up by name
    assert twins.found(best_checkpoint) == "checkpoints/best-a.ckpt"


@pytest.mark.parametrize("mode,expected", [("max", "best-b.ckpt"), ("min", "best-a.ckpt")])
def test_without_a_record_the_best_score_wins_locally_and_remotely(twins, mode, expected):
    twins.write("checkpoints/best-a.ckpt", mode, scores={"best-a.ckpt": 0.5})
    twins.write("checkpoints/best-b.ckpt", mode, scores={"best-b.ckpt": 0.7})
    fsspec.filesystem("memory").pipe(f"{twins.remote}/checkpoints/notes.ckpt", b"no checkpoint")
    (twins.local / "checkpoints" / "notes.ckpt").write_bytes(b"no checkpoint")
    assert twins.found(best_checkpoint) == f"checkpoints/{expected}"


def test_no_best_checkpoint_is_none_locally_and_remotely(twins):
    assert twins.found(best_checkpoint) is None
    twins.write("checkpoints/last.ckpt")  # records no best
    assert twins.found(best_checkpoint) is None


def test_stale_temp_file_cleanup_leaves_a_remote_folder_alone(twins):
    twins.write("checkpoints/last.ckpt")
    folder = f"{twins.remote}/checkpoints"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{folder}/.last.ckpt.tmp999999999", b"not ours to judge")  # a pid that cannot exist
    assert remove_stale_temp_files(folder) == []
    AtomicCheckpointIO().save_checkpoint({"step": 2}, f"{folder}/last.ckpt")  # cleans first
    assert fs.exists(f"{folder}/.last.ckpt.tmp999999999")
    assert AtomicCheckpointIO().load_checkpoint(f"{folder}/last.ckpt") == {"step": 2}


def test_a_fit_on_a_remote_root_resumes_there_and_writes_nothing_local_by_its_name(
    tmp_path, monkeypatch
):
    """The whole CLI on `memory://`: checkpoints, the W&B run id and the resume live in the store;
    no `memory:` folder appears locally (no lock, no write probe, no W&B files under the URL)."""
    from helpers import smoke_args

    from vit_lightning.cli import main
    from vit_lightning.run.wandb_logger import RUN_ID_FILE

    monkeypatch.chdir(tmp_path)
    root = f"memory://{uuid.uuid4().hex}/run"
    small = ["--data.train_size=128", "--data.val_size=64", "--trainer.enable_progress_bar=false"]
    main([*smoke_args("fit", root, *small), "--trainer.max_epochs=1"])
    fs = fsspec.filesystem("memory")
    run_id = fs.cat_file(f"{root}/{RUN_ID_FILE}").decode().strip()
    assert fs.isfile(f"{root}/checkpoints/last.ckpt") and run_id
    cli = main([*smoke_args("fit", root, *small), "--trainer.max_epochs=2", "--ckpt_path=last"])
    assert cli.trainer.current_epoch == 2 and cli.trainer.global_step == 4  # resumed after epoch 1
    assert cli.trainer.logger.experiment.id == run_id  # the same W&B run
    assert not any("memory" in p.name for p in tmp_path.rglob("*")), list(tmp_path.iterdir())
