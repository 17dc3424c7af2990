"""MobileNetV2 (Sandler et al. 2018) in the CIFAR variant of the CRD benchmark.

Inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear projection; a residual
connection where the shape is kept). For 32x32 inputs the stem keeps stride 2 and the
second stage runs at stride 1 (the ImageNet network has stride 2 there), so the last
stages see 2x2 maps. `width_mult=0.5` is the half-width network those benchmarks call
MobileNetV2; the final 1x1 convolution keeps 1280 channels for widths up to 1.

Below 16x16 the stem runs at stride 1 (`stem_stride=None`): on the 8x8 digits a stride-2
stem leaves 4x4 maps to a 16-channel layer, and the network learns so slowly that 60 epochs
stay under 90 % test top-1 (97.5 % in 15 epochs at stride 1).
"""

from __future__ import annotations

import torch
from torch import nn

# (expansion, channels, blocks, stride of the first block) per stage; expansion None = `expansion`
STAGES = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
LAST_CHANNELS = 1280


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            _conv_bn_relu(in_channels, hidden, kernel=1),
            nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        width_mult: float = 0.5,
        expansion: int = 6,
        stem_stride: int | None = None,
    ) -> None:
        super().__init__()
        channels = int(32 * width_mult)
        if stem_stride is None:
            stem_stride = 2 if image_size >= 16 else 1
        self.conv1 = _conv_bn_relu(in_channels, channels, kernel=3, stride=stem_stride)
        stages = []
        for stage_expansion, base_width, count, stride in STAGES:
            width = int(base_width * width_mult)
            blocks = []
            for i in range(count):
                ratio = stage_expansion or expansion
                blocks.append(InvertedResidual(channels, width, stride if i == 0 else 1, ratio))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        last = int(LAST_CHANNELS * width_mult) if width_mult > 1.0 else LAST_CHANNELS
        self.conv2 = _conv_bn_relu(channels, last, kernel=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.blocks(self.conv1(x)))
        return self.classifier(self.avgpool(x).flatten(1))
