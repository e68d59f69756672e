"""Training compute of a config: FLOPs per image (forward + backward) and images seen.

    python -m benchmarks.compute --config configs/fashion_mnist.yaml [--config overlay] [overrides]

Issue 24's budgets are in these units (images seen x training FLOPs per image), so that they do
not depend on the machine. Extra arguments are CLI overrides, e.g. --trainer.max_epochs=10.
"""

from __future__ import annotations

import sys

from vit_lightning.analysis.compute import format_flops, train_flops_per_image
from vit_lightning.cli import ViTLightningCLI


def main(argv: list[str]) -> None:
    cli = ViTLightningCLI(args=[*argv, "--trainer.logger=false"], run=False)
    dm, epochs = cli.datamodule, cli.trainer.max_epochs
    dm.prepare_data()
    dm.setup("fit")
    images = len(dm.train_dataloader().dataset)
    per_image = train_flops_per_image(cli.model.net, (dm.in_chans, *_pair(dm.img_size)))
    total = per_image * images * epochs
    print(f"train FLOPs per image: {format_flops(per_image)} ({per_image:,})")
    print(f"images seen: {images:,} x {epochs} epochs = {images * epochs:,}")
    print(f"training compute: {format_flops(total)} ({total:.4g})")


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else tuple(x)


if __name__ == "__main__":
    argv, sys.argv[1:] = sys.argv[1:], []  # LightningCLI warns of command-line args beside args=
    main(argv)
