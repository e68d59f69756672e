"""`ImageFolderDataModule`: your own PNG/JPEG images, one folder per class.

    root/train/<class>/...   the classes: these folder names, sorted (torchvision's ImageFolder)
    root/val/<class>/...     optional; without it, a seeded, stratified val_fraction of train/
    root/test/<class>/...    optional; `test` (and `predict` without predict_dir) need it

Class folders are read in `__init__` (the CLI links num_classes into the model). The files are
listed (recursively, sorted) and their headers checked at setup, so a damaged file is named
before the first step; one that still fails to decode is named when it is read. Symlinks are
followed, each real folder once, and one file (through any link) is never in two classes or two
splits: see `_files`.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from vit_lightning.data.augment import Policy, choices, choose, describe
from vit_lightning.data.base import ImageDataModule
from vit_lightning.data.folder import IMAGE_SUFFIXES, _listing
from vit_lightning.errors import ConfigError, DataError, DataNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what pretrained ViTs were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)
BICUBIC = v2.InterpolationMode.BICUBIC  # timm's ViT configs; predict_dir's PIL resize too
FORMATS = ("PNG", "JPEG", "MPO")  # what PIL calls the files decode_image reads; MPO: camera JPEGs
FIX = "Delete them or re-export them as PNG/JPEG, then rerun."
SPLITS = ("train", "val", "test")


def _crop_flip(size: int) -> list[v2.Transform]:
    return [v2.RandomResizedCrop(size, interpolation=BICUBIC), v2.RandomHorizontalFlip()]


# each builds its transforms for the output size (bound in __init__): a crop resizes once
AUGMENT = {
    "none": Policy("resize only", lambda size: []),
    "flip": Policy("horizontal flip", lambda size: [v2.RandomHorizontalFlip()]),
    "crop_flip": Policy(
        "random resized crop (8-100% of the area, as timm's ImageNet recipes), then flip",
        _crop_flip,
    ),
    "randaugment": Policy(
        "crop, flip, then RandAugment", lambda size: [*_crop_flip(size), v2.RandAugment()]
    ),
    "trivialaugment": Policy(
        "crop, flip, then TrivialAugmentWide",
        lambda size: [*_crop_flip(size), v2.TrivialAugmentWide()],
    ),
}
Augment = choices(AUGMENT)


class ImageFiles(Dataset):
    """`(transform(image), label)` for a list of `(path, label)`: decoded by torchvision to uint8."""

    def __init__(self, files: list[tuple[str, int]], in_chans: int, transform: v2.Transform):
        self.files, self.transform = files, transform
        self.mode = ImageReadMode.RGB if in_chans == 3 else ImageReadMode.GRAY

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.files[i]
        try:
            image = decode_image(path, mode=self.mode, apply_exif_orientation=True)  # (C, H, W)
        except RuntimeError as e:  # truncated or corrupt pixel data: the header check passed
            why = re.sub(r"^.*\.cpp:\d+, ", "", str(e))  # drop the C++ source location
            raise DataError(f"Cannot decode {path} ({why}). {FIX}") from e
        if image.dtype != torch.uint8:  # 16-bit PNG
            image = v2.functional.to_dtype(image, torch.uint8, scale=True)
        return self.transform(tv_tensors.Image(image)), label


class ImageFolderDataModule(ImageDataModule):
    __doc__ = f"""Your own images in `root/{{train,val,test}}/<class>/` (PNG/JPEG, any sizes).

    Eval images are squashed to img_size x img_size (bicubic), as `predict_dir` images are; the
    crop policies crop the full image, then resize. EXIF orientation is applied (there too).
    Without `root/val/`, each class gives round(val_fraction * n) of its n images (at least 1,
    and never its last) to validation, drawn by `split_seed` from the sorted file paths: the
    same split for the same seed and files, whatever order the filesystem lists them in.
    `root` must hold `train/` for `predict` too: the class names are its folder names.

    Args:
        root: Folder holding `train/` (and optionally `val/`, `test/`), each with one
            subfolder per class; subfolders of a class folder are read too.
        img_size: Square side every image is resized to.
        in_chans: 3 (RGB) or 1 (converted to grayscale).
        val_fraction: Share of each class held out for validation when there is no `val/`.
        split_seed: Seed of that split; None uses `loader_seed` (the run's seed_everything).
        augment: Training augmentation: {describe(AUGMENT)}.
        mean: Per-channel normalisation mean; None is ImageNet's (for pretrained weights), or
            for in_chans=1 the average of its three values.
        std: Per-channel normalisation std; None as for mean.
        **kwargs: `ImageDataModule`'s arguments (batch_size, num_workers, predict_dir, ...).
    """

    def __init__(
        self,
        root: str,
        img_size: int = 224,
        in_chans: int = 3,
        val_fraction: float = 0.1,
        split_seed: int | None = None,
        augment: Augment = "crop_flip",
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        if in_chans not in (1, 3):
            raise ConfigError.of(self, f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans}")
        if img_size < 1 or not 0.0 < val_fraction < 1.0:
            raise ConfigError.of(
                self, f"img_size={img_size} must be >= 1 and val_fraction={val_fraction} in (0, 1)"
            )
        imagenet = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        for name, value in (("mean", mean), ("std", std)):
            if value is None:  # grayscale: one value standing for the three
                value = imagenet[name] if in_chans == 3 else (sum(imagenet[name]) / 3,)
            value = tuple(value)
            if len(value) != in_chans:
                raise ConfigError.of(
                    self, f"{name}={list(value)} needs {in_chans} values (in_chans)"
                )
            setattr(self, name, value)
        super().__init__(**kwargs)
        policy = choose(AUGMENT, augment, owner=self)
        self.policy = replace(policy, transforms=partial(policy.transforms, img_size))
        self.root = Path(root).expanduser().resolve()  # messages say exactly where we looked
        self.img_size, self.in_chans, self.augment = img_size, in_chans, augment
        self.val_fraction = val_fraction
        self.split_seed = self.seed if split_seed is None else split_seed
        self.class_names = self._class_folders()
        self.num_classes = len(self.class_names)

    # -- folders, read in __init__ ------------------------------------------------------------

    def _class_folders(self) -> list[str]:
        """train/'s class folder names, sorted; val/ and test/ must hold the same ones."""
        root, train = self.root, self.root / "train"
        layout = "root must hold train/<class>/<images> (and optionally val/ and test/ alike)"
        # a setting that names no image folder: nothing at run time (no download) can fix it
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            fix = f"Set --data.root to a folder: {layout}."
            raise ConfigError.of(self, f"root {root} {what}. {fix}")
        if not train.is_dir():
            held = _listing(sorted(p.name for p in root.iterdir())) or "nothing"
            raise ConfigError.of(self, f"{train} not found ({root} holds {held}): {layout}.")
        classes = _subfolders(train)
        if len(classes) < 2:
            raise DataError(
                f"{train} holds {len(classes)} class folder(s) {classes}: put each class's "
                "images in its own subfolder, train/<class>/, with at least 2 classes."
            )
        for split in ("val", "test"):
            if (root / split).is_dir() and (found := _subfolders(root / split)) != classes:
                missing, extra = set(classes) - set(found), set(found) - set(classes)
                raise DataError(
                    f"{root / split} must hold the same class folders as {train}: missing "
                    f"{sorted(missing)}, extra {sorted(extra)}. Rename or add folders to match."
                )
        return classes

    # -- files, read at setup -----------------------------------------------------------------

    def _files(self, *wanted: str) -> dict[str, list[list[str]]]:
        """Each wanted split's per-class image paths, sorted; other files are named in a warning.

        Every split folder is listed, wanted or not, to tell one file (by device and inode, so
        through any symlink or hard link) from another: a file in two classes or two splits
        would be labelled twice or leak into evaluation, and is refused; a file under two names
        in one class is read once.
        """
        owner: dict[tuple[int, int], tuple[str, str]] = {}  # file id -> (first path, split/class)
        found, clashes, skipped, empty = {}, [], [], []
        for split in (s for s in SPLITS if (self.root / s).is_dir()):
            folder, per_class, other = self.root / split, [], []
            for name in self.class_names:
                images, where = [], f"{split}/{name}"
                for path in _walk(folder / name, skipped):
                    if not path.lower().endswith(IMAGE_SUFFIXES):
                        other.append(os.path.relpath(path, folder))
                        continue
                    key = _file_id(path)
                    first, first_where = owner.setdefault(key, (path, where)) if key else (path, "")
                    if first == path:
                        images.append(path)
                    elif first_where == where:
                        skipped.append(f"{path} (the file {first} again)")
                    else:
                        clashes.append(f"{first} ({first_where}) and {path} ({where})")
                if split in wanted and not images:
                    empty.append(folder / name)
                per_class.append(images)
            if split not in wanted:
                continue
            found[split] = per_class
            loose = [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
            other += [f"{n} (not in a class folder)" for n in sorted(loose)]
            if other:
                suffixes = "/".join(IMAGE_SUFFIXES)
                rank_zero_warn(f"{folder}: skipping {_listing(other)}; not {suffixes}")
        if clashes:
            raise DataError(
                f"{len(clashes)} image file(s) under {self.root} are one file in two classes or "
                f"two splits, through a symlink or a hard link: {_listing(clashes, 3)}. One image "
                "would get two labels, or be evaluated on after training on it. Remove the link "
                "(or the class folder linked into another), so each image is in one class folder "
                "of one split."
            )
        if empty:  # after the clashes: a class linked into another's folder looks empty
            raise DataError(
                f"class folder {empty[0]} holds no {'/'.join(IMAGE_SUFFIXES)} image: add "
                "images, or remove the class from train/, val/ and test/ alike."
            )
        if skipped:
            rank_zero_warn(f"{self.root}: read once, not again: {_listing(skipped)}")
        return found

    def _dataset(self, per_class: list[list[str]], transform: v2.Transform) -> ImageFiles:
        files = [(p, label) for label, paths in enumerate(per_class) for p in paths]
        return ImageFiles(files, self.in_chans, transform)

    def fit_datasets(self) -> tuple[Dataset, Dataset]:
        files = self._files("train", "val")
        train, val = files["train"], files.get("val")
        if val is None:
            train, val = stratified_split(train, self.val_fraction, self.split_seed)
        check_headers([p for paths in train + val for p in paths], self.root)
        train_set = self._dataset(train, self.train_transform())
        return train_set, self._dataset(val, self.eval_transform())

    def test_dataset(self) -> Dataset:
        if not (self.root / "test").is_dir():
            raise DataNotFoundError(
                f"{self.root / 'test'} not found: `test` (and `predict` without predict_dir) "
                "read root/test/<class>/<images>. Add that folder, run `validate` for the "
                "val split's metrics, or set --data.predict_dir to a folder of images."
            )
        test = self._files("test")["test"]
        check_headers([p for paths in test for p in paths], self.root)
        return self._dataset(test, self.eval_transform())

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if stage in ("predict", None) and self.predict_dir is None:  # the test split, by file
            self._predict_names = [path for path, _ in self.predict_set.files]

    def eval_transform(self) -> v2.Transform:
        size = (self.img_size, self.img_size)
        return v2.Compose(
            [
                v2.ToImage(),  # predict_dir's images come as PIL
                v2.Resize(size, interpolation=BICUBIC),  # a no-op after a crop policy
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.mean, self.std),
            ]
        )


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _walk(folder: Path, skipped: list[str]) -> list[str]:
    """Every file under folder, sorted by path, hidden ones (e.g. .DS_Store) left out.

    Symlinked folders are followed, each real folder once: a link to a folder read already, or
    to one holding this folder (a loop, e.g. `loop -> ..`), is not followed and is named in
    `skipped`. A real folder goes before a link to it, whatever their names.
    """
    top = os.path.realpath(folder)
    read, found = {top}, []
    for parent, dirs, files in os.walk(folder, followlinks=True):
        keep = []
        visible = sorted(d for d in dirs if not d.startswith("."))
        for d in sorted(visible, key=lambda d: os.path.islink(os.path.join(parent, d))):
            path = os.path.join(parent, d)
            real = os.path.realpath(path)
            if os.path.commonpath([top, real]) == real:
                skipped.append(f"{path} (a link to {real}, which holds it: a loop)")
            elif real in read:
                skipped.append(f"{path} (a link to {real}, read already)")
            else:
                read.add(real)
                keep.append(d)
        dirs[:] = sorted(keep)  # os.walk descends in this order
        found += [os.path.join(parent, f) for f in sorted(files) if not f.startswith(".")]
    return found


def _file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file a path reaches; None for a broken link (check_headers names
    it)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def stratified_split(
    per_class: list[list[str]], fraction: float, seed: int
) -> tuple[list[list[str]], list[list[str]]]:
    """(train, val) of each class's sorted paths: round(fraction * n) of n to val, at least 1 and
    at most n - 1, drawn by one generator seeded by `seed`, class by class."""
    g, train, val = torch.Generator().manual_seed(seed), [], []
    for paths in per_class:
        n = len(paths)
        n_val = min(n - 1, max(1, round(fraction * n)))
        perm = torch.randperm(n, generator=g).tolist()
        val.append([paths[i] for i in sorted(perm[:n_val])])
        train.append([paths[i] for i in sorted(perm[n_val:])])
    return train, val


def check_headers(paths: list[str], root: Path, most: int = 5) -> None:
    """One DataError naming the files whose header is not a PNG/JPEG one (PIL reads only that)."""
    bad = []
    for path in paths:
        try:
            with Image.open(path) as im:
                if im.format not in FORMATS:
                    bad.append(f"{path} (a {im.format} file)")
        except UnidentifiedImageError:
            bad.append(f"{path} (not an image)")
        except OSError as e:  # unreadable, or truncated within the header
            bad.append(f"{path} ({e.strerror or e})")
    if bad:
        raise DataError(
            f"{len(bad)} of the {len(paths)} image files under {root} cannot be read: "
            f"{_listing(bad, most)}. {FIX}"
        )
