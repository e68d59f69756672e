"""Entry point: `python -m vit_lightning fit --config configs/cifar10.yaml`."""

from vit_lightning.cli import main

if __name__ == "__main__":
    main()
