"""Data that is missing, damaged or disagrees, and folders that cannot be used: each is named in one
`error:` line (exit 1; 2 for a bad setting), with what to do, before any training step."""

import gzip
import os
import pickle
import struct
from pathlib import Path

import pytest
from helpers import ROOT, smoke_args
from helpers.data_files import md5
from PIL import Image
from torchvision.datasets import CIFAR10

from vit_lightning.cli import main
from vit_lightning.data import CIFAR10DataModule, FashionMNISTDataModule, ImageFolderFlat
from vit_lightning.errors import DataError, DataNotFoundError

CIFAR = str(ROOT / "configs" / "cifar10.yaml")
FMNIST = str(ROOT / "configs" / "fashion_mnist.yaml")
# every urllib download fails at once in the child process: a dead loopback proxy
DEAD_PROXY = {
    **{v: "http://127.0.0.1:9" for v in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")},
    "no_proxy": "",
    "NO_PROXY": "",
}
TRAIN_LABELS = "train-labels-idx1-ubyte"


def _fmnist(data: Path, idx: Path, **kw) -> FashionMNISTDataModule:
    kw = {"download": False, "val_size": 5, "num_workers": 0, "local_dirs": [str(idx)], **kw}
    return FashionMNISTDataModule(str(data), **kw)


def _labels(path: Path, labels: list[int]) -> None:
    """An idx label file with a correct header, so only its count or values are wrong."""
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + bytes(labels))


def _one_error_line(proc) -> str:
    """The CLI's whole report: exactly one `error:` line and no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


# -- images and labels that disagree ------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, named",
    [
        ([i % 10 for i in range(20)], "20 labels, but train-images-idx3-ubyte holds 30 images"),
        ([10 if i == 3 else i % 10 for i in range(30)], "label 10 at index 3 is not in 0..9"),
    ],
    ids=["counts", "range"],
)
def test_fashion_mnist_images_and_labels_that_disagree_are_named(
    tmp_path, fmnist_idx, labels, named
):
    dm = _fmnist(tmp_path / "data", fmnist_idx)
    dm.prepare_data()
    _labels(dm.raw_dir / TRAIN_LABELS, labels)
    with pytest.raises(DataError) as err:  # today: trains at chance, or an IndexError mid-epoch
        dm.setup("fit")
    assert f"{dm.raw_dir / TRAIN_LABELS} ({named})" in str(err.value)
    assert isinstance(err.value, RuntimeError)  # what callers caught before


@pytest.mark.parametrize(
    "labels, named",
    [
        (lambda y: y[:-1], "20 image rows, but 19 labels"),
        (lambda y: [*y[:5], 10, *y[6:]], "label 10 of row 5 is not in 0..9"),
        (lambda y: [-1, *y[1:]], "label -1 of row 0 is not in 0..9"),
    ],
    ids=["counts", "too-large", "negative"],
)
def test_cifar_batch_rows_and_labels_that_disagree_are_named(cifar10, monkeypatch, labels, named):
    batch = cifar10.root / CIFAR10.base_folder / "data_batch_2"
    entry = pickle.loads(batch.read_bytes())
    batch.write_bytes(pickle.dumps({**entry, "labels": labels(entry["labels"])}))
    # checksums that match the altered file: only the contents can tell
    train_list = [[n, md5(batch) if n == batch.name else m] for n, m in CIFAR10.train_list]
    monkeypatch.setattr(CIFAR10, "train_list", train_list)
    dm = CIFAR10DataModule(str(cifar10.root), download=False, val_size=10, num_workers=0)
    dm.prepare_data()
    with pytest.raises(DataError, match="the images and labels disagree") as err:
        dm.setup("fit")
    assert f"{batch} ({named})" in str(err.value)


def test_a_val_size_the_files_cannot_hold_is_named(cifar10):
    dm = CIFAR10DataModule(str(cifar10.root), download=False, val_size=100, num_workers=0)
    with pytest.raises(DataError) as err:  # today: a ValueError traceback at setup
        dm.setup("fit")
    msg = str(err.value)
    assert "val_size=100" in msg and str(cifar10.root) in msg and "--data.val_size" in msg


# -- truncated, empty and unreadable files ------------------------------------------------------


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda gz: b"", "empty file"),  # an empty .gz decompresses to nothing
        (lambda gz: gz[: len(gz) // 2], "EOFError"),  # a truncated .gz
        (lambda gz: b"not gzip at all", "BadGzipFile"),
    ],
    ids=["empty", "truncated", "not-gzip"],
)
def test_a_damaged_local_idx_file_is_named_and_not_copied(tmp_path, fmnist_idx, damage, named):
    src = fmnist_idx / f"{TRAIN_LABELS}.gz"
    src.write_bytes(damage(src.read_bytes()))
    dm = _fmnist(tmp_path / "data", fmnist_idx)
    with pytest.raises(DataError) as err:  # today: EOFError/BadGzipFile with a traceback
        dm.prepare_data()
    msg = str(err.value)
    assert str(src) in msg and named in msg and "--data.local_dirs" in msg
    assert not (dm.raw_dir / TRAIN_LABELS).exists()  # no empty or partial copy left behind
    assert not any(p.name.startswith(f"{TRAIN_LABELS}.tmp") for p in dm.raw_dir.iterdir())


def test_an_empty_idx_file_is_named_as_empty(tmp_path, fmnist_idx):
    dm = _fmnist(tmp_path / "data", fmnist_idx)
    dm.prepare_data()
    (dm.raw_dir / TRAIN_LABELS).write_bytes(b"")
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    assert f"{dm.raw_dir / TRAIN_LABELS} (empty file)" in str(err.value)


# -- data_dir: a file, or not writable ----------------------------------------------------------


@pytest.fixture
def unwritable_dir(tmp_path) -> Path:
    """A path under which this process cannot create anything: a read-only folder, or where root
    ignores permission bits, one under /sys (sysfs refuses to create files)."""
    d = tmp_path / "read-only"
    d.mkdir()
    d.chmod(0o555)
    if not os.access(d, os.W_OK):
        yield d
        d.chmod(0o755)  # so pytest can clean up
        return
    sysfs = Path("/sys/vit-lightning-test")  # root ignores permission bits; sysfs refuses mkdir
    try:
        sysfs.mkdir()
    except PermissionError:
        yield sysfs
        return
    sysfs.rmdir()
    pytest.skip("no directory here refuses writes to this user")


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_an_unwritable_data_dir_is_named_before_copying(tmp_path, fmnist_idx, where, request):
    if where == "under-a-file":
        (tmp_path / "file").write_text("")
        data = tmp_path / "file" / "data"
    else:
        data = request.getfixturevalue("unwritable_dir") / "data"
    dm = _fmnist(data, fmnist_idx)
    with pytest.raises(DataError) as err:  # today: a PermissionError/NotADirectoryError traceback
        dm.prepare_data()
    msg = str(err.value)
    assert str(dm.raw_dir) in msg and "writable" in msg and "--data.data_dir" in msg


def test_a_cifar_download_into_an_unwritable_data_dir_is_named(unwritable_dir):
    dm = CIFAR10DataModule(str(unwritable_dir / "data"), download=True, val_size=10)
    with pytest.raises(DataError, match="Cannot write to") as err:  # before any network access
        dm.prepare_data()
    assert str(unwritable_dir / "data") in str(err.value)


# -- the same faults from the command line ------------------------------------------------------


def _cli_error(capsys, args: list[str], code: int) -> str:
    """Run the CLI in this process: it must end in SystemExit(code), not another exception (which
    would print a traceback), and print the reason."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]  # a setting's too (exit 2)
    assert "Traceback" not in err
    return line


def _cifar_args(tmp_path: Path, data: Path, download: bool) -> list[str]:
    return [
        "fit",
        "--config",
        CIFAR,
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        "--trainer.logger=false",
        f"--data.data_dir={data}",
        f"--data.download={download}",
    ]


@pytest.mark.parametrize(
    "download, named",
    [
        (False, ["CIFAR-10 not found in", "cifar-10-python.tar.gz", "--data.download=true"]),
        (True, ["Could not download CIFAR-10 into", "cifar-10-python.tar.gz", "--data.data_dir"]),
    ],
    ids=["no-download", "download-fails"],
)
def test_a_missing_dataset_is_one_line_in_a_fresh_process(run_cli, tmp_path, download, named):
    nowhere = tmp_path / "nowhere"
    proc = run_cli(*_cifar_args(tmp_path, nowhere, download), env=DEAD_PROXY)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = _one_error_line(proc)  # today: after two chained tracebacks
    for part in [*named, str(nowhere)]:
        assert part in line, (part, line)
    assert not nowhere.exists() or not any(nowhere.iterdir())  # no partial download left


def _fmnist_args(tmp_path: Path, idx: Path) -> list[str]:
    return [
        "fit",
        "--config",
        FMNIST,
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        "--trainer.logger=false",
        f"--data.data_dir={tmp_path / 'data'}",
        f"--data.local_dirs=[{idx}]",
        "--data.download=false",
        "--data.val_size=5",
    ]


def _disagree(tmp_path, idx):  # 20 labels for 30 images
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in FashionMNISTDataModule.files:
        raw.joinpath(f).write_bytes(gzip.decompress((idx / f"{f}.gz").read_bytes()))
    _labels(raw / TRAIN_LABELS, [i % 10 for i in range(20)])
    return _fmnist_args(tmp_path, idx), [str(raw / TRAIN_LABELS), "20 labels", "30 images"]


def _empty_idx(tmp_path, idx):
    (idx / f"{TRAIN_LABELS}.gz").write_bytes(b"")
    return _fmnist_args(tmp_path, idx), [str(idx / f"{TRAIN_LABELS}.gz"), "empty file"]


def _data_dir_is_a_file(tmp_path, idx):
    (tmp_path / "a-file").write_text("")
    args = _cifar_args(tmp_path, tmp_path / "a-file", True)
    return args, [f"data_dir {tmp_path / 'a-file'} is a file, not a directory", "--data.data_dir"]


@pytest.mark.parametrize(
    "fault, code",
    [
        (_disagree, 1),
        (_empty_idx, 1),
        (_data_dir_is_a_file, 2),  # a setting that cannot work: found before anything runs
    ],
    ids=["disagree", "empty-idx", "data-dir-is-a-file"],
)
def test_data_faults_end_the_cli_with_their_reason(capsys, tmp_path, fmnist_idx, fault, code):
    args, named = fault(tmp_path, fmnist_idx)
    text = _cli_error(capsys, args, code)
    for part in named:
        assert part in text, (part, text)


# -- predict: its folder and its output file ----------------------------------------------------


def _folder(d: Path, names: list[str]) -> Path:
    d.mkdir()
    for n in names:
        if n.endswith("/"):
            (d / n).mkdir()
        elif n.startswith("broken"):
            (d / n).write_bytes(b"\x89PNG not really an image")
        elif n.endswith((".png", ".bmp")):
            Image.new("RGB", (8, 8)).save(d / n)
        else:
            (d / n).write_text("text")
    return d


def test_predict_files_of_other_types_are_reported(tmp_path):
    d = _folder(tmp_path / "images", ["a.png", "b.bmp", "notes.txt", "sub/", ".DS_Store"])
    with pytest.warns(UserWarning, match="skipping") as record:  # today: dropped silently
        ds = ImageFolderFlat(d, "RGB", 8, lambda im: im)
    assert ds.paths == [d / "a.png"]
    msg = next(str(w.message) for w in record if "skipping" in str(w.message))
    for part in ("b.bmp (not .png/.jpg/.jpeg)", "notes.txt", "sub/ (subfolders are not read)"):
        assert part in msg
    assert ".DS_Store" not in msg


@pytest.mark.parametrize(
    "names, named",
    [
        ([], "is empty"),
        (["notes.txt", "b.bmp", "broken.png"], "holds only b.bmp (not .png/.jpg/.jpeg), notes.txt"),
    ],
    ids=["empty", "nothing-readable"],
)
@pytest.mark.filterwarnings("ignore:Skipping unreadable image")
def test_a_predict_dir_with_nothing_readable_says_what_it_holds(tmp_path, names, named):
    d = _folder(tmp_path / "images", names)
    with pytest.raises(DataNotFoundError) as err:
        ImageFolderFlat(d, "RGB", 8, lambda im: im)
    msg = str(err.value)
    assert named in msg and "--data.predict_dir" in msg
    assert "broken.png (unreadable)" in msg or not names
    assert isinstance(err.value, FileNotFoundError)


@pytest.fixture(scope="module")
def smoke_ckpt(tmp_path_factory) -> Path:
    """A real checkpoint of the smoke model: predict must have weights to run."""
    root = tmp_path_factory.mktemp("trained")
    one_epoch = ("--trainer.max_epochs=1", "--data.train_size=128", "--trainer.logger=false")
    main(smoke_args("fit", root, *one_epoch))
    return root / "checkpoints" / "last.ckpt"


def _predict_args(root: Path, ckpt: Path, *extra: str) -> list[str]:
    same = ("--data.train_size=128", "--trainer.logger=false")  # as the checkpoint was trained
    return smoke_args("predict", root, f"--ckpt_path={ckpt}", *same, *extra)


def test_an_empty_predict_dir_is_one_line_at_the_cli(tmp_path, smoke_ckpt, capsys):
    (tmp_path / "empty").mkdir()
    args = _predict_args(tmp_path / "run", smoke_ckpt, f"--data.predict_dir={tmp_path}/empty")
    line = _cli_error(capsys, args, 1)  # today: a FileNotFoundError traceback
    assert f"predict_dir '{tmp_path / 'empty'}' is empty" in line
    assert not (tmp_path / "run" / "predictions.csv").exists()


def test_an_output_file_that_is_a_directory_is_a_config_error(tmp_path, smoke_ckpt, capsys):
    out = tmp_path / "out"
    out.mkdir()
    args = _predict_args(tmp_path / "run", smoke_ckpt, f"--prediction_writer.output_file={out}")
    err = _cli_error(capsys, args, 2)  # today: IsADirectoryError after the model ran
    assert f"output_file='{out}' is a directory" in err and "predictions.csv" in err
    assert not any(out.iterdir())


def test_a_default_prediction_file_that_is_a_directory_fails_before_predicting(
    tmp_path, smoke_ckpt, capsys
):
    (tmp_path / "run" / "predictions.csv").mkdir(parents=True)
    line = _cli_error(capsys, _predict_args(tmp_path / "run", smoke_ckpt), 1)
    assert f"Prediction file {tmp_path / 'run' / 'predictions.csv'} is a directory" in line
    assert "--prediction_writer.output_file" in line
