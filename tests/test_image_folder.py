"""`ImageFolderDataModule` on small PNG/JPEG trees written here: classes from folder names, the
seeded split, damaged and stray files named, and fit/test/predict through the CLI (CPU, fast)."""

import csv
import os
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import ROOT
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from vit_lightning.cli import ViTLightningCLI, main
from vit_lightning.data import (
    IMAGE_FOLDER_AUGMENT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataModule,
    ImageFolderFlat,
)
from vit_lightning.data.image_folder import ImageFiles
from vit_lightning.errors import ConfigError, DataError, DataNotFoundError

CLASSES = ("bird", "cat", "dog")  # written in another order below: the sorted names are the classes
COLOURS = {"bird": (200, 30, 30), "cat": (30, 200, 30), "dog": (30, 30, 200)}
# the shipped folder run: the CIFAR-10 recipe + the folder overlay
CONFIG = ["--config", str(ROOT / "configs" / "cifar10.yaml")]
CONFIG += ["--config", str(ROOT / "configs" / "overlays" / "folder_finetune.yaml")]


def _write(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (12, 10)) -> None:
    """A noisy image around `colour` (w x h), as PNG or JPEG by its suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))
    noise = rng.integers(-20, 20, (size[1], size[0], 3))
    pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(pixels).save(path, format=fmt)


def _tree(root: Path, splits: dict[str, int], classes=("dog", "bird", "cat")) -> Path:
    """root/<split>/<class>/ with n images each, alternating .png, .JPG and .jpeg, mixed sizes."""
    for split, n in splits.items():
        for c in classes:
            for i in range(n):
                suffix = (".png", ".JPG", ".jpeg")[i % 3]
                colour, size = COLOURS.get(c, (128, 128, 128)), (12 + i, 10 + 2 * i)
                _write(root / split / c / f"{i:02d}{suffix}", colour, size)
    return root


def _dm(root: Path, **kw) -> ImageFolderDataModule:
    return ImageFolderDataModule(str(root), **{"img_size": 8, "num_workers": 0, **kw})


def _val_files(dm: ImageFolderDataModule) -> list[str]:
    return [path for path, _ in dm.val_set.files]


# -- classes, known after __init__ --------------------------------------------------------------


def test_classes_are_the_sorted_train_folders_read_without_listing_images(tmp_path):
    for c in ("dog", "bird", "cat", ".cache"):  # empty folders: no image is read in __init__
        (tmp_path / "train" / c).mkdir(parents=True)
    dm = _dm(tmp_path, img_size=24, batch_size=4)
    assert dm.class_names == list(CLASSES)  # hidden folders are no class
    assert (dm.num_classes, dm.in_chans, dm.img_size) == (3, 3, 24)
    assert {"root", "img_size", "batch_size", "predict_dir", "loader_seed"} <= set(dm.hparams)
    with pytest.raises(DataError, match=f"class folder {tmp_path / 'train' / 'bird'} holds no"):
        dm.setup("fit")  # the files are listed at setup


def test_batches_are_resized_and_normalised_with_imagenet_statistics(tmp_path):
    root = _tree(tmp_path, {"train": 4, "val": 2})
    Image.new("RGB", (30, 7), COLOURS["bird"]).save(root / "val" / "bird" / "00.png")
    dm = _dm(root, batch_size=6)
    dm.setup("fit")
    x, y = next(iter(dm.val_dataloader()))  # val/: sorted by class, then path
    assert x.shape == (6, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == [0, 0, 1, 1, 2, 2]
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    expected = (torch.tensor(COLOURS["bird"]) / 255 - mean) / std  # a flat colour stays flat
    torch.testing.assert_close(x[0], expected[:, None, None].expand(3, 8, 8))
    x, _ = next(iter(dm.train_dataloader()))  # crop_flip: cropped and resized to 8x8 too
    assert x.shape == (6, 3, 8, 8)


def test_grayscale_in_chans_1_converts_and_uses_one_statistic(tmp_path):
    root = _tree(tmp_path, {"train": 3, "val": 1})
    colour = (255, 0, 128)
    Image.new("RGB", (9, 9), colour).save(root / "val" / "bird" / "00.png")
    dm = _dm(root, in_chans=1, img_size=6, batch_size=3)
    assert dm.in_chans == 1 and len(dm.mean) == len(dm.std) == 1
    dm.setup("fit")
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape == (3, 1, 6, 6)
    grey = Image.new("RGB", (1, 1), colour).convert("L").getpixel((0, 0))  # as predict_dir does
    mean, std = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    expected = torch.full((1, 6, 6), (grey / 255 - mean) / std)
    torch.testing.assert_close(x[0], expected, atol=1.01 / 255 / std, rtol=0)  # decoders round
    assert next(iter(dm.train_dataloader()))[0].shape == (3, 1, 6, 6)


@pytest.mark.parametrize("name", list(IMAGE_FOLDER_AUGMENT))
def test_every_augment_policy_yields_img_size_batches(tmp_path, name):
    policy = IMAGE_FOLDER_AUGMENT[name]
    assert policy.help in ImageFolderDataModule.__doc__  # what --help lists under --data.augment
    dm = _dm(_tree(tmp_path, {"train": 4}), augment=name, img_size=10, batch_size=4)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 10, 10) and x.dtype == torch.float32 and y.dtype == torch.int64


@pytest.mark.parametrize(
    "kw, named",
    [
        ({"in_chans": 2}, "in_chans must be 1"),
        ({"val_fraction": 0.0}, "val_fraction=0.0"),
        ({"val_fraction": 1.0}, "val_fraction=1.0"),
        ({"mean": (0.5,)}, r"mean=\[0.5\] needs 3 values"),
        ({"in_chans": 1, "std": (0.2, 0.2, 0.2)}, r"std=\[0.2, 0.2, 0.2\] needs 1 values"),
        ({"augment": "mixup"}, "augment must be none/flip/crop_flip/randaugment/trivialaugment"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kw, named):
    with pytest.raises(ConfigError, match=named):
        _dm(_tree(tmp_path, {"train": 1}), **kw)


# -- the train/val split ------------------------------------------------------------------------


def _shuffled_walk(monkeypatch):
    """os.walk listing every folder in reverse: the split must not depend on listing order."""
    real = os.walk

    def walk(top, **kw):
        for parent, dirs, files in real(top, **kw):
            dirs.reverse()  # in place: the caller's pruning still steers the descent
            yield parent, dirs, files[::-1]

    monkeypatch.setattr(os, "walk", walk)


def test_the_split_is_seeded_stratified_disjoint_and_listing_order_free(tmp_path, monkeypatch):
    root = _tree(tmp_path, {"train": 10}, classes=("bird", "cat"))
    _tree(tmp_path, {"train": 3}, classes=("dog",))
    dm = _dm(root, val_fraction=0.2, loader_seed=5)
    dm.setup("fit")
    val, train = _val_files(dm), [p for p, _ in dm.train_set.files]
    # round(0.2 * n) per class, at least one: 2 of 10 birds, 2 of 10 cats, 1 of 3 dogs
    assert [y for _, y in dm.val_set.files] == [0, 0, 1, 1, 2]
    assert not set(val) & set(train) and len(set(val) | set(train)) == 23

    _shuffled_walk(monkeypatch)
    same = _dm(root, val_fraction=0.2, loader_seed=5)
    same.setup("fit")
    assert _val_files(same) == val  # the run's seed: the same files, whatever the listing order
    pinned = _dm(root, val_fraction=0.2, loader_seed=6, split_seed=5)
    pinned.setup("fit")
    assert _val_files(pinned) == val  # split_seed, when set, wins over the run's seed
    other = _dm(root, val_fraction=0.2, loader_seed=6)
    other.setup("fit")
    assert _val_files(other) != val


def test_a_val_folder_is_used_as_is(tmp_path):
    root = _tree(tmp_path, {"train": 4, "val": 2})
    dm = _dm(root, val_fraction=0.5)  # ignored: root/val/ exists
    dm.setup("fit")
    assert len(dm.train_set) == 12 and all("/train/" in p for p, _ in dm.train_set.files)
    assert _val_files(dm) == sorted(str(p) for p in (root / "val").rglob("*.*"))


# -- folders and files that cannot work ---------------------------------------------------------


@pytest.mark.parametrize("split", ["val", "test"])
def test_split_folders_must_name_the_same_classes(tmp_path, split):
    root = _tree(tmp_path, {"train": 1})
    _tree(tmp_path, {split: 1}, classes=("bird", "cat", "dgo"))
    with pytest.raises(DataError) as err:  # in __init__: before the model is built
        _dm(root)
    msg = str(err.value)
    assert str(root / split) in msg and "missing ['dog'], extra ['dgo']" in msg


# a root that names no image folder is a setting (ConfigError, exit 2); one whose images cannot
# be used, a data problem (DataError, exit 1)
def _no_root(tmp_path):
    return tmp_path / "nowhere", f"root {tmp_path / 'nowhere'} does not exist", ConfigError


def _root_is_a_file(tmp_path):
    (tmp_path / "images.zip").write_bytes(b"")
    return tmp_path / "images.zip", f"root {tmp_path / 'images.zip'} is a file", ConfigError


def _no_train(tmp_path):  # e.g. root pointed at the train folder itself
    _tree(tmp_path, {"train": 1})
    return tmp_path / "train", f"{tmp_path / 'train' / 'train'} not found", ConfigError


def _one_class(tmp_path):
    _tree(tmp_path, {"train": 1}, classes=("cat",))
    return tmp_path, f"{tmp_path / 'train'} holds 1 class folder(s) ['cat']", DataError


@pytest.mark.parametrize(
    "fault", [_no_root, _root_is_a_file, _no_train, _one_class], ids=lambda f: f.__name__[1:]
)
def test_an_unusable_root_is_named_in_seconds(tmp_path, fault):
    root, named, error = fault(tmp_path)
    start = time.perf_counter()
    with pytest.raises(error) as err:
        _dm(root)
    assert time.perf_counter() - start < 5
    assert named in str(err.value) and "train/<class>" in str(err.value)


def test_undecodable_files_are_named_at_setup_with_the_fix(tmp_path):
    root = _tree(tmp_path, {"train": 2})
    cat = root / "train" / "cat"
    (cat / "broken.png").write_text("not an image")
    (cat / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (8, 8)).save(cat / "bitmap.jpg", format="BMP")  # a BMP under a JPEG name
    for i in range(5):
        (root / "train" / "dog" / f"junk{i}.png").write_text("junk")
    dm = _dm(root)
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert f"8 of the 14 image files under {root} cannot be read" in msg
    for part in (f"{cat / 'bitmap.jpg'} (a BMP file)", f"{cat / 'broken.png'} (not an image)"):
        assert part in msg
    assert "and 3 more" in msg and "Delete them or re-export them as PNG/JPEG" in msg


@pytest.mark.parametrize("workers", [0, 1])
def test_a_file_truncated_after_its_header_is_named_when_decoded(tmp_path, workers):
    root = _tree(tmp_path, {"train": 2, "val": 1})
    bad = root / "val" / "cat" / "00.png"
    bad.write_bytes(bad.read_bytes()[:-40])  # header intact: passes the setup check
    dm = _dm(root, num_workers=workers, batch_size=3)
    dm.setup("fit")
    batches = iter(DataLoader(dm.val_set, batch_size=3, num_workers=workers))
    try:
        list(batches)
    except DataError as e:  # from a worker: re-raised in this process as the same type
        msg = str(e)
    else:
        pytest.fail("a truncated file decoded")
    # the re-raised error sits in a reference cycle with the iterator; left to gc, torch's
    # shutdown of the worker then waits 5 s (in whichever test runs next)
    getattr(batches, "_shutdown_workers", lambda: None)()
    assert f"Cannot decode {bad} (" in msg and "Delete them or re-export" in msg


def test_files_of_other_types_are_named_in_a_warning(tmp_path):
    root = _tree(tmp_path, {"train": 2})
    (root / "train" / "cat" / "notes.txt").write_text("x")
    Image.new("RGB", (8, 8)).save(root / "train" / "dog" / "scan.tiff")
    _write(root / "train" / "dog" / "more" / "deep.png", COLOURS["dog"])  # read: recursive
    (root / "train" / "README.md").write_text("x")
    (root / "train" / "cat" / ".DS_Store").write_text("x")
    dm = _dm(root)
    with pytest.warns(UserWarning, match="skipping") as record:
        dm.setup("fit")
    msg = next(str(w.message) for w in record if "skipping" in str(w.message))
    for part in ("cat/notes.txt", "dog/scan.tiff", "README.md (not in a class folder)"):
        assert part in msg
    assert ".DS_Store" not in msg
    paths = [p for p, _ in dm.train_set.files + dm.val_set.files]
    assert len(paths) == 7 and str(root / "train" / "dog" / "more" / "deep.png") in paths


def _real(paths: list[str]) -> list[str]:
    return [os.path.realpath(p) for p in paths]


def test_a_link_loop_or_a_second_link_is_followed_once_and_keeps_the_labels(tmp_path):
    root = _tree(tmp_path, {"train": 5}, classes=("bird", "cat"))
    bird = root / "train" / "bird"
    (bird / "loop").symlink_to("..")  # back up to train/: would reach cat's images as birds
    (bird / "self").symlink_to(".")
    os.link(bird / "00.png", bird / "zz.png")  # one file under two names: the first is read
    dm = _dm(root, val_fraction=0.2)
    with pytest.warns(UserWarning) as record:
        dm.setup("fit")
    files = dm.train_set.files + dm.val_set.files
    for label, name in enumerate(("bird", "cat")):
        real = _real([p for p, y in files if y == label])
        assert sorted(real) == sorted(_real(sorted(map(str, (root / "train" / name).glob("0?.*")))))
    assert not set(_real(_val_files(dm))) & set(_real([p for p, _ in dm.train_set.files]))
    said = " ".join(str(w.message) for w in record)
    for name in ("bird/loop", "bird/self", "bird/zz.png"):
        assert name in said  # the links not followed, and the second name, are named


def _class_link(root: Path) -> tuple[Path, Path]:
    (root / "train" / "bird" / "cats").symlink_to("../cat")  # a class folder inside another
    return root / "train" / "bird" / "cats" / "00.png", root / "train" / "cat" / "00.png"


def _train_into_val(root: Path) -> tuple[Path, Path]:
    (root / "train" / "bird" / "more").symlink_to("../../val/bird")
    return root / "train" / "bird" / "more" / "00.png", root / "val" / "bird" / "00.png"


def _hard_link(root: Path) -> tuple[Path, Path]:
    os.link(root / "train" / "cat" / "01.JPG", root / "train" / "bird" / "zz.jpg")
    return root / "train" / "bird" / "zz.jpg", root / "train" / "cat" / "01.JPG"


def _file_link(root: Path) -> tuple[Path, Path]:
    (root / "train" / "bird" / "zz.png").symlink_to("../cat/00.png")
    return root / "train" / "bird" / "zz.png", root / "train" / "cat" / "00.png"


def _file_link_into_test(root: Path) -> tuple[Path, Path]:
    (root / "test" / "cat" / "zz.png").symlink_to("../../train/cat/00.png")
    return root / "test" / "cat" / "zz.png", root / "train" / "cat" / "00.png"


@pytest.mark.parametrize(
    "link", [_class_link, _train_into_val, _hard_link, _file_link, _file_link_into_test]
)
def test_one_file_in_two_classes_or_two_splits_is_refused_naming_both(tmp_path, link):
    root = _tree(tmp_path, {"train": 3, "val": 2, "test": 2}, classes=("bird", "cat"))
    paths = link(root)
    for stage in ("fit", "test"):
        with pytest.raises(DataError) as err:
            _dm(root).setup(stage)
        msg = str(err.value)
        assert all(str(p) in msg for p in paths) and "link" in msg, msg


def test_test_reads_root_test_and_without_it_says_what_to_do(tmp_path):
    root = _tree(tmp_path, {"train": 2, "test": 2})
    dm = _dm(root)
    dm.setup("test")
    assert [y for _, y in dm.test_set.files] == [0, 0, 1, 1, 2, 2]
    dm.setup("predict")  # no predict_dir: the test split, each row named by its file
    assert dm.predict_names() == [p for p, _ in dm.test_set.files]

    no_test = _dm(_tree(tmp_path / "b", {"train": 2}))
    for stage in ("test", "predict"):
        with pytest.raises(DataNotFoundError) as err:
            no_test.setup(stage)
        msg = str(err.value)
        assert f"{tmp_path / 'b' / 'test'} not found" in msg
        assert "validate" in msg and "--data.predict_dir" in msg


def test_exif_orientation_is_applied_in_training_and_in_predict_dir(tmp_path):
    # a camera's portrait shot: landscape pixels plus an EXIF tag saying how to turn them
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 255, (8, 12, 3), dtype=np.uint8))  # 12 wide, 8 high
    turns = {6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}  # PIL's exif_transpose
    for tag, suffix in ((6, ".jpg"), (8, ".png")):
        exif = Image.Exif()
        exif[0x0112] = tag  # Orientation
        path = tmp_path / f"turned{suffix}"
        pixels.save(path, exif=exif, quality=95)
        with Image.open(path) as im:
            upright = im.transpose(turns[tag]).convert("RGB")  # the same decode, turned
        x, _ = ImageFiles([(str(path), 0)], 3, lambda t: t)[0]  # the image-folder path
        assert torch.equal(x, torch.from_numpy(np.asarray(upright)).permute(2, 0, 1))
        flat = tmp_path / f"predict{tag}"
        flat.mkdir()
        path.rename(flat / path.name)
        x, _ = ImageFolderFlat(flat, "RGB", 6, v2.PILToTensor())[0]  # the predict_dir path
        assert torch.equal(x, v2.functional.pil_to_tensor(upright.resize((6, 6), Image.BICUBIC)))


# -- resume -------------------------------------------------------------------------------------


def test_a_resumed_loader_draws_the_same_augmented_batches_with_workers(tmp_path):
    root = _tree(tmp_path, {"train": 6})
    args = dict(augment="randaugment", loader_seed=3, batch_size=3, persistent_workers=False)
    dm = _dm(root, **args)
    dm.setup("fit")
    straight = list(dm.train_dataloader())
    resumed = _dm(root, **{**args, "num_workers": 2})
    resumed.setup("fit")
    loader = resumed.train_dataloader()
    loader.load_state_dict({"epoch": 0, "batches_done": 2})  # what a mid-epoch checkpoint holds
    rest = list(loader)
    assert len(straight) == 15 // 3 and len(rest) == len(straight) - 2
    for (xa, ya), (xb, yb) in zip(straight[2:], rest, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)  # the next epoch: another order and other draws
    assert not torch.equal(next(iter(loader))[0], straight[0][0])


# -- the CLI, on configs/cifar10.yaml + overlays/folder_finetune.yaml ----------------------------

TINY = [  # the shipped config, shrunk to seconds on a CPU
    "--trainer.max_epochs=2",
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--model.pretrained=null",  # the shipped ViT-Ti weights need the Hub (test_finetune.py)
    "--model.net.init_args.patch_size=4",
    "--model.net.init_args.embed_dim=32",
    "--model.net.init_args.depth=1",
    "--model.net.init_args.num_heads=2",
    "--data.img_size=16",
    "--data.batch_size=4",
    "--data.num_workers=0",
]


def _cli(subcommand: str, run: Path, images: Path, *extra: str) -> list[str]:
    where = [f"--trainer.default_root_dir={run}", f"--data.root={images}"]
    return [subcommand, *CONFIG, *where, *TINY, *extra]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, image root) of a 2-epoch fit on 3 classes: 6 train images each, 2 test."""
    images = _tree(tmp_path_factory.mktemp("images"), {"train": 6, "test": 2})
    run = tmp_path_factory.mktemp("run")
    main(_cli("fit", run, images))
    return run, images


def test_fit_links_the_folder_classes_into_the_model(fitted):
    run, images = fitted
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["state_dict"]["net.head.weight"].shape == (3, 32)  # num_classes from the folders
    assert ckpt["state_dict"]["net.patch_embed.proj.weight"].shape == (32, 3, 4, 4)
    assert ckpt["state_dict"]["net.pos_embed"].shape == (1, 1 + (16 // 4) ** 2, 32)  # img_size
    assert ckpt["global_step"] == 2 * (15 // 4)  # 1 of each class's 6 held out, drop_last
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["init_args"]["root"] == str(images)


def test_test_and_predict_use_the_checkpoint_and_the_class_names(fitted, tmp_path):
    run, images = fitted
    cli = main(_cli("test", run, images, "--ckpt_path=last"))
    assert set(cli.trainer.callback_metrics) >= {"test/acc", "test/loss"}
    assert len(cli.datamodule.test_set) == 6

    out = tmp_path / "test.csv"
    main(_cli("predict", run, images, "--ckpt_path=last", f"--prediction_writer.output_file={out}"))
    rows = list(csv.DictReader(out.open()))
    tests = sorted((images / "test").rglob("*.*"))
    assert [r["file"] for r in rows] == [str(p) for p in tests]  # by class, then path
    assert all(r["class"] == CLASSES[int(r["class_index"])] for r in rows)

    folder, out = tmp_path / "new", tmp_path / "new.csv"
    _write(folder / "b.png", COLOURS["dog"], (40, 30))
    _write(folder / "a.JPG", COLOURS["cat"], (9, 9))
    extra = [f"--data.predict_dir={folder}", f"--prediction_writer.output_file={out}"]
    main(_cli("predict", run, images, "--ckpt_path=last", *extra))
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["file"]).name for r in rows] == ["a.JPG", "b.png"]
    assert all(r["class"] in CLASSES and 1 / 3 <= float(r["probability"]) <= 1 for r in rows)


def test_the_config_prints_without_the_folder_and_links_grayscale(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # --print_config builds nothing
        main(["fit", *CONFIG, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"] == "vit_lightning.data.ImageFolderDataModule"
    assert printed["data"]["init_args"]["root"] == "data/my_images"

    images = _tree(tmp_path, {"train": 1})
    args = [*CONFIG, "--trainer.logger=false", f"--data.root={images}"]
    cli = ViTLightningCLI(args=[*args, "--data.in_chans=1", "--data.img_size=64"], run=False)
    net = cli.model.net
    assert net.num_classes == 3 and net.patch_embed.proj.in_channels == 1
    assert net.patch_embed.img_size == (64, 64)


def test_a_missing_root_stops_the_cli_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(_cli("fit", tmp_path / "run", tmp_path / "nowhere"))
    assert exit_info.value.code == 2  # a setting that cannot work, found before anything runs
    assert f"root {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()
