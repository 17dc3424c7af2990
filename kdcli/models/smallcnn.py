"""A small convolutional student: two conv stages and a linear head."""

from __future__ import annotations

from torch import nn


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """conv-conv-pool, conv-conv, global average pool, linear. `width` sets the channels."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: int = 32):
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn_relu(in_channels, width), _conv_bn_relu(width, width), nn.MaxPool2d(2)
        )
        self.stage2 = nn.Sequential(
            _conv_bn_relu(width, 2 * width), _conv_bn_relu(2 * width, 2 * width)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.stage2(self.stage1(x))
        return self.fc(self.pool(x).flatten(1))
