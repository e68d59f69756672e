"""Convnet teachers for distillation (DeiT's were RegNets): timm's ResNets adapted to small
images, and a small convnet for CPU budgets.

A teacher trains with this same CLI (`--config configs/fashion_mnist.yaml --config
configs/overlays/fashion_mnist_teacher.yaml`): it takes the arguments the CLI links from the
DataModule (num_classes, in_chans, img_size), like the ViT.
"""

from __future__ import annotations

import torch
from torch import nn

from vit_lightning.errors import ConfigError


class ResNet(nn.Module):
    """timm's `resnet{depth}`; below 64 px its stem is CIFAR's (a 3x3 stride-1 conv, no max-pool),
    since the ImageNet stem would shrink a 28x28 image to 7x7 before the first block.

    Args:
        num_classes: Classes of the head.
        in_chans: Input channels.
        img_size: Input size; below 64 the small-image stem is used.
        depth: 18, 34 or 50 (timm's resnet18 / resnet34 / resnet50).
    """

    def __init__(
        self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, depth: int = 18
    ) -> None:
        super().__init__()
        import timm  # the teacher, not the ViT: the model code never imports timm

        if depth not in (18, 34, 50):
            raise ConfigError.of(self, f"depth={depth} must be 18, 34 or 50")
        self.num_classes, self.in_chans, self.img_size = num_classes, in_chans, img_size
        self.model = timm.create_model(f"resnet{depth}", num_classes=num_classes, in_chans=in_chans)
        if img_size < 64:
            width = self.model.conv1.out_channels
            self.model.conv1 = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False)
            self.model.maxpool = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ConvNet(nn.Module):
    """A small VGG-style convnet: three stages of two 3x3 conv-BN-ReLU, max-pool between, then
    global average pooling and a linear head. About 0.3M parameters and 30M multiply-adds at
    28x28, the cost of the Fashion-MNIST ViT: a teacher a 2-core CPU can afford every step.

    Args:
        num_classes: Classes of the head.
        in_chans: Input channels.
        img_size: Input size (any; the pooling is global).
        widths: Channels of the three stages.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        img_size: int = 28,
        widths: tuple[int, int, int] = (32, 64, 128),
    ) -> None:
        super().__init__()
        self.num_classes, self.in_chans, self.img_size = num_classes, in_chans, img_size
        layers, c = [], in_chans
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
                c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))
