"""The tutorial notebooks' helpers (vit_lightning.analysis.tutorial, and the run readers of
vit_lightning.analysis.runs that notebook 03 uses), on tiny synthetic inputs."""

import json
import sys
import types
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from vit_lightning import VisionTransformer
from vit_lightning.analysis import runs as readers
from vit_lightning.analysis.runs import best, fmt, from_csv, get, local_runs, series, table
from vit_lightning.analysis.tutorial import (
    ARCH,
    REPO,
    accuracy,
    checkpoint_from_env,
    checkpoint_path,
    data_dir,
    datamodule_from_checkpoint,
    load_data,
    notebook_text,
    train_tiny_vit,
    write_notebooks,
)
from vit_lightning.data import FashionMNISTDataModule, SyntheticDataModule


def tiny_synthetic(**kwargs) -> SyntheticDataModule:
    args = dict(num_classes=3, img_size=8, in_chans=1, train_size=32, val_size=16, batch_size=16)
    return SyntheticDataModule(**{**args, "num_workers": 0, **kwargs})


def test_checkpoint_path_is_taken_from_the_repository_unless_it_exists_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.ckpt").touch()
    assert checkpoint_path(tmp_path / "a.ckpt") == tmp_path / "a.ckpt"  # absolute: as given
    assert checkpoint_path("here.ckpt") == Path("here.ckpt")  # exists relative to the cwd
    assert checkpoint_path("runs/x/last.ckpt") == REPO / "runs/x/last.ckpt"


def test_checkpoint_and_data_dir_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("VIT_CHECKPOINT", raising=False)
    monkeypatch.delenv("VIT_DATA_DIR", raising=False)
    assert checkpoint_from_env() is None
    assert data_dir() == REPO / "data"  # the CLI configs' ./data
    monkeypatch.setenv("VIT_CHECKPOINT", "runs/x/last.ckpt")
    monkeypatch.setenv("VIT_DATA_DIR", str(tmp_path))
    assert checkpoint_from_env() == REPO / "runs/x/last.ckpt"
    assert data_dir() == tmp_path


def test_load_data_falls_back_to_synthetic_fashion_mnist_shapes(tmp_path, monkeypatch, capsys):
    def missing(self):
        raise FileNotFoundError("no idx files")

    monkeypatch.setattr(FashionMNISTDataModule, "prepare_data", missing)
    dm = load_data(batch_size=32, root=tmp_path)
    assert "using synthetic 28x28 images" in capsys.readouterr().out
    assert isinstance(dm, SyntheticDataModule)
    assert (dm.num_classes, dm.in_chans, dm.img_size, dm.batch_size) == (10, 1, 28, 32)
    x, y = dm.val_set[0]
    assert x.shape == (1, 28, 28) and 0 <= int(y) < 10


def test_datamodule_from_checkpoint_rebuilds_the_trained_datamodule(tmp_path):
    trained = tiny_synthetic(num_workers=2, seed=3)
    hparams = {
        "_class_path": "vit_lightning.data.SyntheticDataModule",  # what LightningCLI records
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
        **trained.hparams,
    }
    torch.save({"datamodule_hyper_parameters": hparams}, tmp_path / "last.ckpt")
    dm = datamodule_from_checkpoint(tmp_path / "last.ckpt")
    assert isinstance(dm, SyntheticDataModule)
    assert dm.num_workers == 0  # loaders run in the notebook's process
    trained.setup("fit")
    assert len(dm.val_set) == 16
    torch.testing.assert_close(dm.val_set[5][0], trained.val_set[5][0])  # same seed, same images


def test_datamodule_from_checkpoint_reads_data_from_the_repository(tmp_path, monkeypatch):
    class Recorder:
        def __init__(self, **kwargs):
            self.kwargs, self.calls = kwargs, []

        def prepare_data(self):
            self.calls.append("prepare_data")

        def setup(self, stage):
            self.calls.append(f"setup:{stage}")

    fake = types.ModuleType("fake_datamodules")
    fake.Recorder = Recorder
    monkeypatch.setitem(sys.modules, "fake_datamodules", fake)
    hp = {"_class_path": "fake_datamodules.Recorder", "data_dir": "./data", "download": True}
    torch.save({"datamodule_hyper_parameters": hp}, tmp_path / "last.ckpt")
    dm = datamodule_from_checkpoint(tmp_path / "last.ckpt")
    assert dm.kwargs == {
        "data_dir": str(REPO / "data"),  # the CLI runs from the repository
        "download": False,
        "num_workers": 0,
        "predict_dir": None,
    }
    assert dm.calls == ["prepare_data", "setup:fit"]


def test_train_tiny_vit_trains_an_arch_vit_and_returns_it_in_eval_mode(capsys):
    dm = tiny_synthetic()
    L.seed_everything(0, verbose=False)
    untrained = VisionTransformer(img_size=8, in_chans=1, num_classes=3, **ARCH)
    net = train_tiny_vit(dm, steps=2)
    assert "trained 2 steps" in capsys.readouterr().out
    assert isinstance(net, VisionTransformer) and not net.training
    assert (net.embed_dim, len(net.blocks), net.num_classes) == (ARCH["embed_dim"], 3, 3)
    assert not torch.equal(net.head.weight, untrained.head.weight)  # same init, then trained


def test_accuracy_scores_the_first_n_images():
    y = torch.tensor([0, 0, 1, 2, 0, 1])
    dataset = TensorDataset(torch.zeros(6, 1), y)

    def always_class_0(x):
        return torch.tensor([[1.0, 0.0, 0.0]]).expand(len(x), 3)

    assert accuracy(always_class_0, dataset, n=4) == pytest.approx(2 / 4)
    assert accuracy(always_class_0, dataset) == pytest.approx(3 / 6)  # n > len: all of them


def write_csv_log(folder: Path, rows: str, hparams: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text(rows)
    if hparams is not None:
        (folder / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    return folder / "metrics.csv"


def test_from_csv_renames_step_and_takes_the_config_from_hparams_yaml(tmp_path):
    csv = write_csv_log(
        tmp_path / "logs" / "fit" / "version_0",
        "epoch,step,train/loss,val/acc\n0,9,2.5,\n0,9,,0.4\n1,19,1.5,\n1,19,,0.7\n",
        {"model": {"lr": 0.001}, "run": {"params": 1234, "device": "cpu"}},
    )
    run = from_csv(csv)
    assert run["name"] == "logs/fit/version_0"
    assert run["config"]["model"] == {"lr": 0.001}
    assert run["history"][1] == {"epoch": 0.0, "trainer/global_step": 9.0, "val/acc": 0.4}
    assert all("step" not in row for row in run["history"])
    assert run["summary"] == {
        "epoch": 1.0,
        "trainer/global_step": 19.0,
        "train/loss": 1.5,
        "val/acc": 0.7,
        "params": 1234,  # from the config's `run` (RunSummary's facts)
        "device": "cpu",
    }


def test_from_csv_without_hparams_has_an_empty_config(tmp_path):
    run = from_csv(write_csv_log(tmp_path / "a" / "b" / "version_1", "epoch,step\n0,4\n"))
    assert run["config"] == {} and run["summary"] == {"epoch": 0.0, "trainer/global_step": 4.0}


def offline_folder(root: Path, time: str, run_id: str) -> Path:
    folder = root / "wandb" / f"offline-run-{time}-{run_id}"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def fake_offline_reader(monkeypatch):
    """read_offline_run returning the dict stored as run.json in each folder."""

    def read(run_dir):
        return json.loads((Path(run_dir) / "run.json").read_text())

    monkeypatch.setattr(readers, "read_offline_run", read)


def offline_run(folder: Path, run_id: str, config: dict, history: list, summary: dict) -> str:
    run = {"id": run_id, "config": config, "history": history, "summary": summary}
    (folder / "run.json").write_text(json.dumps(run))
    return str(folder)


def test_offline_runs_merges_the_folders_of_a_resumed_run_in_time_order(
    tmp_path, fake_offline_reader
):
    resumed = offline_run(
        offline_folder(tmp_path / "lr1", "20240101_130000", "abc"),
        "abc",
        {"trainer": {"max_epochs": 4}},
        [{"epoch": 2}, {"epoch": 3}],
        {"val/acc": 0.8},
    )
    first = offline_run(
        offline_folder(tmp_path / "lr1", "20240101_120000", "abc"),
        "abc",
        {"model": {"lr": 0.1}, "trainer": {"max_epochs": 2}},
        [{"epoch": 0}, {"epoch": 1}],
        {"val/acc": 0.5, "params": 10},
    )
    other = offline_run(
        offline_folder(tmp_path / "lr2", "20240101_110000", "xyz"), "xyz", {}, [{"epoch": 0}], {}
    )
    runs = readers.offline_runs([resumed, first, other])
    assert [r["name"] for r in runs] == ["lr2 (xyz)", "lr1 (abc)"]  # <default_root_dir> (<id>)
    abc = runs[1]
    assert [row["epoch"] for row in abc["history"]] == [0, 1, 2, 3]
    assert abc["config"] == {"model": {"lr": 0.1}, "trainer": {"max_epochs": 4}}
    assert abc["summary"] == {"val/acc": 0.8, "params": 10}  # the later folder wins


def test_local_runs_finds_offline_runs_and_csv_logs_under_a_glob(tmp_path, fake_offline_reader):
    offline_run(offline_folder(tmp_path / "a", "20240101_120000", "abc"), "abc", {}, [], {})
    (tmp_path / "a" / "wandb" / "offline-run-20240101_120000-abc.txt").touch()  # not a folder
    write_csv_log(tmp_path / "b" / "lightning_logs" / "version_0", "epoch,step\n0,4\n")
    (tmp_path / "c").mkdir()
    runs = local_runs(str(tmp_path / "*"))
    assert [r["name"] for r in runs] == ["a (abc)", "b/lightning_logs/version_0"]
    assert local_runs(str(tmp_path / "c")) == []


def test_api_runs_reads_every_run_of_a_project(monkeypatch):
    import wandb

    run = types.SimpleNamespace(
        name="lr1",
        id="abc",
        config={"model": {"lr": 0.1}},
        summary_metrics={"val/acc": 0.5},
        scan_history=lambda: iter([{"epoch": 0}, {"epoch": 1}]),
    )
    seen = []

    class FakeApi:
        def runs(self, path):
            seen.append(path)
            return [run]

    monkeypatch.setattr(wandb, "Api", FakeApi)
    assert readers.api_runs("me/vit") == [
        {
            "name": "lr1 (abc)",
            "config": {"model": {"lr": 0.1}},
            "history": [{"epoch": 0}, {"epoch": 1}],
            "summary": {"val/acc": 0.5},
        }
    ]
    assert seen == ["me/vit"]


def test_series_sorts_by_x_and_skips_rows_missing_a_value():
    history = [
        {"step": 20, "loss": 1.0},
        {"step": 10, "loss": 2.0},
        {"step": 15, "loss": None},
        {"loss": 3.0},
        {"step": 5, "acc": 0.1},
    ]
    assert series({"history": history}, "loss", "step") == ([10, 20], [2.0, 1.0])
    assert series({"history": history}, "missing", "step") == ([], [])


def test_get_follows_dotted_keys_and_gives_none_for_missing_parts():
    config = {"model": {"net": {"init_args": {"depth": 6}}, "lr": 0.001}}
    assert get(config, "model.net.init_args.depth") == 6
    assert get(config, "model.lr") == 0.001
    assert get(config, "model.lr.x") is None  # 0.001 is not a dict
    assert get(config, "trainer.max_epochs") is None


def test_best_prefers_the_summary_best_then_the_history_maximum():
    history = [{"val/acc": 0.5}, {"val/acc": 0.7}, {"val/loss": 1.0}, {"val/acc": None}]
    assert best({"history": history, "summary": {"val/acc_best": 0.75}}) == 0.75
    assert best({"history": history, "summary": {"val/acc": 0.6}}) == 0.7
    assert best({"history": history, "summary": {}}, key="val/loss") == 1.0
    assert best({"history": [], "summary": {}}) is None


def test_fmt_writes_table_cells():
    assert [fmt(v) for v in [None, 0.00123456, 0.5, 99.99, 1234.6, 12345, True, "lr1"]] == [
        "-",
        "0.001235",
        "0.5",
        "99.99",
        "1235",
        "12,345",
        "True",
        "lr1",
    ]


def test_table_puts_the_best_run_first_in_aligned_columns():
    runs = [
        {"name": "slow", "config": {"model": {"lr": 1e-4}}, "history": [], "summary": {}},
        {"name": "fast", "config": {"model": {"lr": 3e-3}}, "history": [], "summary": {}},
    ]
    runs[1]["summary"]["val/acc_best"] = 0.9
    columns = {"run": lambda r: r["name"], "lr": lambda r: get(r["config"], "model.lr")}
    columns["best val/acc"] = best
    assert table(runs, columns).splitlines() == [
        "run   lr      best val/acc",
        "----  ------  ------------",
        "fast  0.003   0.9",
        "slow  0.0001  -",
    ]


def test_notebook_text_is_the_same_every_time_with_numbered_cell_ids(tmp_path):
    source = tmp_path / "07_demo.py"
    source.write_text(
        "# ---\n# jupyter:\n#   jupytext:\n#     formats: ipynb,py:percent\n# ---\n\n"
        "# %% [markdown]\n# # Demo\n\n# %%\nx = 1\n\n# %%\nprint(x)\n"
    )
    text = notebook_text(source)
    assert notebook_text(source) == text
    nb = json.loads(text)
    assert [c["id"] for c in nb["cells"]] == ["07-00", "07-01", "07-02"]
    assert ["".join(c["source"]) for c in nb["cells"]] == ["# Demo", "x = 1", "print(x)"]
    assert all(c["outputs"] == [] for c in nb["cells"] if c["cell_type"] == "code")
    assert nb["metadata"]["jupytext"]["formats"] == "ipynb,py:percent"  # `jupytext --sync` pairs
    assert write_notebooks([source]) == [tmp_path / "07_demo.ipynb"]
    assert (tmp_path / "07_demo.ipynb").read_text() == text
