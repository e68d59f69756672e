"""Specification tests for the datamodules, on tiny files in the real on-disk formats (CPU, fast)."""

import gzip
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from helpers.data_files import PER_BATCH, md5
from PIL import Image
from torchvision.datasets import CIFAR10

from vit_lightning.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10DataModule,
    FashionMNISTDataModule,
    SyntheticDataModule,
)
from vit_lightning.errors import ConfigError

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every urllib download fail at once: all traffic goes to a dead loopback proxy."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    # urlopen caches an opener that read the proxy variables once; force a fresh one
    monkeypatch.setattr(urllib.request, "_opener", None)


def _cifar(data_dir: Path, **kw) -> CIFAR10DataModule:
    kw = {"download": False, "val_size": 10, "batch_size": 8, "num_workers": 0, **kw}
    return CIFAR10DataModule(str(data_dir), **kw)


# -- contract shared by every datamodule -------------------------------------------------------


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: SyntheticDataModule(num_classes=4, img_size=16, in_chans=1), (4, 1, 16)),
        (lambda d: CIFAR10DataModule(str(d)), (10, 3, 32)),
        (lambda d: FashionMNISTDataModule(str(d)), (10, 1, 28)),
    ],
)
def test_attributes_known_before_setup(tmp_path: Path, make, expected: tuple) -> None:
    dm = make(tmp_path)  # no files needed: the CLI reads these right after construction
    assert (dm.num_classes, dm.in_chans, dm.img_size) == expected
    assert len(dm.class_names) == dm.num_classes and all(isinstance(c, str) for c in dm.class_names)
    loader_args = {"batch_size", "num_workers", "pin_memory", "persistent_workers", "predict_dir"}
    assert loader_args <= set(dm.hparams)


def test_persistent_workers_only_with_workers() -> None:
    for workers, expected in [(0, False), (1, True)]:
        dm = SyntheticDataModule(train_size=64, num_workers=workers, persistent_workers=True)
        dm.setup("fit")
        assert dm.train_dataloader().persistent_workers is expected


# -- CIFAR-10 -----------------------------------------------------------------------------------


def test_cifar_split_is_seeded_deterministic_and_disjoint(cifar10) -> None:
    root = cifar10.root
    dm = _cifar(root)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (5 * PER_BATCH - 10, 10)
    train_idx, val_idx = set(dm.train_set.indices), set(dm.val_set.indices)
    assert not train_idx & val_idx and train_idx | val_idx == set(range(5 * PER_BATCH))

    again = _cifar(root)
    again.setup("fit")
    assert again.val_set.indices == dm.val_set.indices
    other = _cifar(root, split_seed=1)
    other.setup("fit")
    assert set(other.val_set.indices) != val_idx


def test_cifar_batches_are_normalised_eval_pixels(cifar10) -> None:
    root, rows, labels = cifar10
    dm = _cifar(root, augment="trivialaugment", random_erasing=0.5)
    dm.setup("fit")
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    # val uses eval transforms: exactly (raw / 255 - mean) / std, no augmentation
    i = dm.val_set.indices[0]
    raw = torch.from_numpy(rows[i].reshape(3, 32, 32)).float() / 255
    mean, std = torch.tensor(CIFAR10_MEAN)[:, None, None], torch.tensor(CIFAR10_STD)[:, None, None]
    torch.testing.assert_close(x[0], (raw - mean) / std)
    assert y[0].item() == labels[i]

    train = dm.train_dataloader()  # shuffled, drop_last: 90 // 8 full batches
    batches = list(train)
    assert len(batches) == 90 // 8 and all(b[0].shape == (8, 3, 32, 32) for b in batches)

    dm.setup("test")
    assert len(dm.test_set) == PER_BATCH
    dm.setup("predict")  # no predict_dir: the test split, named by index
    assert dm.predict_names() == [f"test/{i}" for i in range(PER_BATCH)]


@pytest.mark.parametrize(
    "kw, arg",
    [
        ({"random_erasing": 1.5}, "random_erasing"),
        ({"val_size": 0}, "val_size"),
        ({"val_size": 50000}, "val_size"),
        ({"augment": "cutmix"}, "augment"),
    ],
)
def test_cifar_rejects_bad_arguments(tmp_path: Path, kw: dict, arg: str) -> None:
    with pytest.raises(ConfigError, match=arg):
        CIFAR10DataModule(str(tmp_path), **kw)


def test_cifar_missing_without_download_fails_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        _cifar(tmp_path).prepare_data()
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    for part in ("CIFAR-10", str(tmp_path.resolve()), "cifar-10-python.tar.gz", "download=true"):
        assert part in msg


def test_cifar_failed_download_is_clear_fast_and_cleans_up(tmp_path: Path, no_network) -> None:
    tar = tmp_path / CIFAR10.filename
    tar.write_bytes(b"truncated")  # a partial archive from an earlier interrupted run
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as err:
        _cifar(tmp_path, download=True).prepare_data()
    assert time.perf_counter() - start < 10
    for part in ("CIFAR-10", str(tmp_path.resolve()), "cifar-10-python.tar.gz", "data_dir"):
        assert part in str(err.value)
    assert err.value.__cause__ is not None
    assert not tar.exists()


def test_cifar_hand_placed_archive_is_extracted_offline(
    cifar10, tmp_path_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = cifar10.root
    root = tmp_path_factory.mktemp("placed")
    tar = root / CIFAR10.filename
    with tarfile.open(tar, "w:gz") as f:
        f.add(src / CIFAR10.base_folder, arcname=CIFAR10.base_folder)
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5(tar))
    dm = _cifar(root)  # download=False: a valid archive in data_dir is enough
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 5 * PER_BATCH


def test_cifar_corrupt_file_names_directory(cifar10) -> None:
    root = cifar10.root
    batch = root / CIFAR10.base_folder / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:100])  # truncated: md5 no longer matches
    dm = _cifar(root)
    dm.prepare_data()  # the folder exists, so nothing to fetch
    with pytest.raises(RuntimeError, match="corrupted") as err:
        dm.setup("fit")
    assert str(root.resolve()) in str(err.value) and "cifar-10-python.tar.gz" in str(err.value)


# -- Fashion-MNIST ------------------------------------------------------------------------------


def test_fashion_mnist_copies_local_idx_files(tmp_path: Path, fmnist_idx: Path) -> None:
    local, data = fmnist_idx, tmp_path / "data"
    dm = FashionMNISTDataModule(
        str(data), download=False, val_size=6, local_dirs=[str(local)], batch_size=4, num_workers=0
    )
    dm.prepare_data()
    raw = data / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(dm.files)  # decompressed, no temp left
    assert (raw / "t10k-labels-idx1-ubyte").read_bytes() == gzip.decompress(
        (local / "t10k-labels-idx1-ubyte.gz").read_bytes()
    )
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (24, 6, 10)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason=f"{DEBIAN_FMNIST} not installed")
def test_fashion_mnist_from_debian_copy(tmp_path: Path) -> None:
    dm = FashionMNISTDataModule(str(tmp_path), download=False, val_size=5000, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55000, 5000, 10000)
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (128, 1, 28, 28) and set(y.tolist()) <= set(range(10))


def test_fashion_mnist_missing_everywhere(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    dm = FashionMNISTDataModule(str(tmp_path / "data"), download=False, local_dirs=[str(nowhere)])
    with pytest.raises(FileNotFoundError) as err:
        dm.prepare_data()
    msg = str(err.value)
    for part in ("Fashion-MNIST", str(nowhere), str(dm.raw_dir), "dataset-fashion-mnist"):
        assert part in msg


def test_fashion_mnist_failed_download_is_clear(tmp_path: Path, no_network) -> None:
    dm = FashionMNISTDataModule(str(tmp_path), download=True, local_dirs=[])
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="Fashion-MNIST") as err:
        dm.prepare_data()
    assert time.perf_counter() - start < 10 and str(tmp_path.resolve()) in str(err.value)
    assert not any(dm.raw_dir.glob("*.gz"))


# -- Synthetic ----------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_learnable() -> None:
    dm, same, other = (SyntheticDataModule(seed=s) for s in (0, 0, 1))
    for m in (dm, same, other):
        m.setup("fit")
    x, y = dm.train_set.tensors
    assert torch.equal(x, same.train_set.tensors[0]) and torch.equal(y, same.train_set.tensors[1])
    assert not torch.equal(x, other.train_set.tensors[0])
    assert set(y.tolist()) == set(range(10))
    assert not torch.equal(x[:256], dm.val_set.tensors[0])  # independent streams per split

    # class templates differ: a nearest-class-mean classifier fit on train generalises to val
    means = torch.stack([x[y == c].mean(0) for c in range(10)]).flatten(1)
    xv, yv = dm.val_set.tensors
    acc = (torch.cdist(xv.flatten(1), means).argmin(1) == yv).float().mean()
    assert acc > 0.8

    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (64, 3, 32, 32) and xb.dtype == torch.float32 and yb.dtype == torch.int64


# -- predict on a folder ------------------------------------------------------------------------

COLOUR = (255, 0, 128)


@pytest.fixture
def predict_dir(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    Image.new("RGB", (40, 30), COLOUR).save(d / "a.png")
    Image.new("L", (10, 10), 200).save(d / "b.PNG")
    Image.new("RGB", (50, 50), (10, 20, 30)).save(d / "c.jpg")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(d / "d.JPEG", format="JPEG")
    Image.new("RGBA", (8, 8), (1, 2, 3, 4)).save(d / "e.png")
    (d / "broken.png").write_bytes(b"\x89PNG not really an image")
    (d / "notes.txt").write_text("ignored: not an image suffix")
    (d / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(d / "sub" / "e.png")  # ignored: not recursive
    return d


def _predict(dm) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    with pytest.warns(UserWarning, match="broken.png"):
        dm.setup("predict")
    x, y = next(iter(dm.predict_dataloader()))
    return dm.predict_names(), x, y


def test_predict_folder_rgb(tmp_path: Path, predict_dir: Path) -> None:
    dm = CIFAR10DataModule(str(tmp_path / "no-cifar-needed"), predict_dir=str(predict_dir))
    dm.num_workers = 0
    names, x, y = _predict(dm)
    # sorted, case-insensitive suffixes, broken/non-image/nested files left out
    assert names == [str(predict_dir / n) for n in ("a.png", "b.PNG", "c.jpg", "d.JPEG", "e.png")]
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == [-1] * 5
    expected = (torch.tensor(COLOUR) / 255 - torch.tensor(CIFAR10_MEAN)) / torch.tensor(CIFAR10_STD)
    torch.testing.assert_close(x[0].mean((1, 2)), expected, atol=1e-3, rtol=0)


def test_predict_folder_grayscale(predict_dir: Path) -> None:
    dm = SyntheticDataModule(in_chans=1, img_size=16, predict_dir=str(predict_dir))
    names, x, _ = _predict(dm)
    assert len(names) == 5 and x.shape == (5, 1, 16, 16)
    grey = Image.new("RGB", (1, 1), COLOUR).convert("L").getpixel((0, 0))
    torch.testing.assert_close(
        x[0].mean(), torch.tensor((grey / 255 - 0.5) / 0.5), atol=1e-3, rtol=0
    )


@pytest.mark.parametrize("folder", ["empty", "missing"])
def test_predict_folder_empty_or_missing(tmp_path: Path, folder: str) -> None:
    d = tmp_path / folder
    if folder == "empty":
        d.mkdir()
    dm = SyntheticDataModule(predict_dir=str(d))
    with pytest.raises(FileNotFoundError, match=folder):
        dm.setup("predict")


@pytest.mark.parametrize(
    "augment,expected",
    [
        ("none", []),
        ("flip", ["RandomHorizontalFlip"]),
        ("crop_flip", ["RandomCrop", "RandomHorizontalFlip"]),
        ("randaugment", ["RandomHorizontalFlip", "RandAugment"]),
        ("trivialaugment", ["RandomHorizontalFlip", "TrivialAugmentWide"]),
    ],
)
def test_fashion_mnist_augment_policies(tmp_path: Path, augment: str, expected: list) -> None:
    dm = FashionMNISTDataModule(str(tmp_path), augment=augment)
    names = [type(t).__name__ for t in dm.train_transform().transforms]
    assert [n for n in names if n.startswith("Random") or "Augment" in n] == expected
    with pytest.raises(ConfigError, match="augment must be none/flip/crop_flip/.*, got 'rotate'"):
        FashionMNISTDataModule(str(tmp_path), augment="rotate")
