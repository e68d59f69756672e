"""`ImageFolderFlat`: the images `predict` runs on when `data.predict_dir` is set."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms import v2

from vit_lightning.errors import ConfigError, DataNotFoundError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageFolderFlat(Dataset):
    """The readable PNG/JPEG files directly inside a folder (sorted, non-recursive), label -1.

    Each file is opened at construction, so unreadable ones are dropped (with a warning naming
    them) before the length is fixed and a DataLoader never meets them mid-epoch. Files of other
    types and subfolders are named in a warning too: a prediction silently missing is a bug.
    """

    def __init__(self, root: str | Path, mode: str, img_size: int, transform: v2.Transform) -> None:
        root, where = Path(root), repr(str(Path(root).resolve()))
        fix = "Set --data.predict_dir to a folder of PNG/JPEG images."
        if root.exists() and not root.is_dir():
            raise ConfigError(f"predict_dir {where} is a file, not a folder. {fix}")
        if not root.is_dir():
            raise DataNotFoundError(f"predict_dir {where} does not exist. {fix}")
        files, other, unreadable = [], [], []
        for p in sorted(q for q in root.iterdir() if not q.name.startswith(".")):  # not .DS_Store
            if p.is_dir():
                other.append(f"{p.name}/ (subfolders are not read)")
            elif p.suffix.lower() not in IMAGE_SUFFIXES:
                other.append(f"{p.name} (not {'/'.join(IMAGE_SUFFIXES)})")
            else:
                files.append(p)
        self.paths: list[Path] = []
        for p in files:
            try:
                with Image.open(p) as im:
                    im.load()  # full decode: verify() misses truncated pixel data
                self.paths.append(p)
            except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
                rank_zero_warn(f"Skipping unreadable image {str(p)!r}: {e}")
                unreadable.append(f"{p.name} (unreadable)")
        if not self.paths:
            skipped = other + unreadable
            found = f"holds only {_listing(skipped)}" if skipped else "is empty"
            raise DataNotFoundError(f"predict_dir {where} {found}: no image to predict. {fix}")
        if other:
            rank_zero_warn(f"predict_dir {where}: skipping {_listing(other)}")
        self.mode, self.img_size = mode, img_size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as im:
            im = ImageOps.exif_transpose(im)  # a camera's portrait shot, upright as trained
            im = im.convert(self.mode).resize((self.img_size, self.img_size), Image.BICUBIC)
        return self.transform(im), -1


def _listing(items: list[str], most: int = 5) -> str:
    """'a, b, c and 4 more': a folder of thousands of files must not flood the terminal."""
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more
