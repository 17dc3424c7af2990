"""Wide ResNets (Zagoruyko & Komodakis 2016), WRN-depth-k for CIFAR.

A 3x3 stem with 16 channels, three stages of (depth - 4) / 6 pre-activation blocks with
16k, 32k and 64k channels at strides 1, 2, 2, a final batch norm and ReLU, global average
pooling and a linear head. wrn_40_2 is depth 40, widen factor 2.
"""

from __future__ import annotations

import torch
from torch import nn

from kdcli.errors import UserError


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3, plus the shortcut.

    Where the shape changes, the shortcut is a 1x1 convolution of the activated input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.same_shape = stride == 1 and in_channels == out_channels
        self.shortcut = (
            nn.Identity()
            if self.same_shape
            else nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        return out + (x if self.same_shape else self.shortcut(activated))


class WideResNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        depth: int = 16,
        widen_factor: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise UserError(
                f"model.depth={depth}: a Wide ResNet has 6n+4 layers (10, 16, 40, ...)."
            )
        blocks_per_stage = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False)
        channels = 16
        stages = []
        for width, stride in zip((16, 32, 64), (1, 2, 2), strict=True):
            blocks = []
            for i in range(blocks_per_stage):
                out_channels = width * widen_factor
                blocks.append(WideBlock(channels, out_channels, stride if i == 0 else 1, dropout))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.relu(self.bn(x))
        return self.fc(self.avgpool(x).flatten(1))
