"""`ImageFolderFlat`: the images `predict` runs on when `data.predict_dir` is set."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageFolderFlat(Dataset):
    """The readable PNG/JPEG files directly inside a folder (sorted, non-recursive), label -1.

    Each file is opened at construction, so unreadable ones are dropped (with a warning naming
    them) before the length is fixed and a DataLoader never meets them mid-epoch.
    """

    def __init__(self, root: str | Path, mode: str, img_size: int, transform: v2.Transform) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"predict_dir {str(root.resolve())!r} is not a directory.")
        files = sorted(
            p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        self.paths: list[Path] = []
        for p in files:
            try:
                with Image.open(p) as im:
                    im.load()  # full decode: verify() misses truncated pixel data
                self.paths.append(p)
            except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
                rank_zero_warn(f"Skipping unreadable image {str(p)!r}: {e}")
        if not self.paths:
            raise FileNotFoundError(
                f"predict_dir {str(root.resolve())!r} holds no readable image "
                f"({'/'.join(IMAGE_SUFFIXES)} files, not searched recursively)."
            )
        self.mode, self.img_size = mode, img_size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as im:
            im = im.convert(self.mode).resize((self.img_size, self.img_size), Image.BICUBIC)
        return self.transform(im), -1
