"""ResNets for CIFAR (He et al. 2016, section 4.2) and a bottleneck ResNet-50 with a CIFAR stem.

`CifarResNet` is the 6n+2-layer network of the paper: a 3x3 stem, three stages of n basic
blocks at strides 1, 2, 2, global average pooling and a linear head. `widths` gives the
channels of the stem and the three stages: (16, 16, 32, 64) is the paper's network, and
(32, 64, 128, 256) the four-times-wider "x4" variant of the CRD benchmark (resnet8x4,
resnet32x4). Shortcuts that change shape are 1x1 convolutions with batch norm (option B).

`BottleneckResNet` is the ImageNet ResNet-50 layout (bottleneck blocks, four stages) with a
3x3 stride-1 stem and no max-pool, as used for CIFAR in the CRD benchmark (resnet50_cifar).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kdcli.errors import UserError


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity, or a 1x1 convolution with batch norm where the shape changes."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, added to the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, added to the shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


def _stem(in_channels: int, out_channels: int) -> tuple[nn.Module, nn.Module, nn.Module]:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
    return conv, nn.BatchNorm2d(out_channels), nn.ReLU()


def _init_weights(model: nn.Module) -> None:
    """He initialisation for convolutions, unit scale and zero shift for batch norm."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class CifarResNet(nn.Module):
    """The 6n+2-layer CIFAR ResNet; `depth` is 8, 14, 20, 32, 44, 56, 110, ..."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        depth: int = 20,
        widths: Sequence[int] = (16, 16, 32, 64),
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise UserError(
                f"model.depth={depth}: a CIFAR ResNet has 6n+2 layers (8, 14, 20, ...)."
            )
        if len(widths) != 4:
            raise UserError(f"model.widths={list(widths)}: give 4 widths (stem and 3 stages).")
        blocks_per_stage = (depth - 2) // 6
        self.conv1, self.bn1, self.relu = _stem(in_channels, widths[0])
        channels = widths[0]
        stages = []
        for width, stride in zip(widths[1:], (1, 2, 2), strict=True):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(channels, width, stride if i == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


class BottleneckResNet(nn.Module):
    """A four-stage bottleneck ResNet with a 3x3 stride-1 stem; (3, 4, 6, 3) is ResNet-50."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        blocks: Sequence[int] = (3, 4, 6, 3),
    ) -> None:
        super().__init__()
        if len(blocks) != 4:
            raise UserError(f"model.blocks={list(blocks)}: give the block count of 4 stages.")
        self.conv1, self.bn1, self.relu = _stem(in_channels, 64)
        channels = 64
        stages = []
        for count, planes, stride in zip(blocks, (64, 128, 256, 512), (1, 2, 2, 2), strict=True):
            layers = []
            for i in range(count):
                layers.append(Bottleneck(channels, planes, stride if i == 0 else 1))
                channels = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))
