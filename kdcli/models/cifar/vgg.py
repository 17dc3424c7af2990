"""VGG with batch norm (Simonyan & Zisserman 2015) as used for CIFAR in the CRD benchmark.

Five blocks of 3x3 convolution + batch norm + ReLU; 2x2 max-pools after the first three
blocks (and after the fourth for inputs of 64 pixels or more), global average pooling and
one linear layer (no fully connected stack). `blocks` lists each block's channels:
vgg8 is [[64], [128], [256], [512], [512]], vgg13 has two convolutions in every block.
The pools round up (ceil mode), so odd and tiny inputs (8x8 digits) work.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from kdcli.errors import UserError

POOLED_BLOCKS = 3  # blocks followed by a max-pool at 32x32; one more from 64 pixels up


def _conv_block(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        in_channels = width
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        blocks: Sequence[Sequence[int]] = ((64,), (128,), (256,), (512,), (512,)),
    ) -> None:
        super().__init__()
        if len(blocks) != 5 or not all(blocks):
            raise UserError(f"model.blocks={blocks}: give 5 non-empty lists of channels.")
        pooled = POOLED_BLOCKS + (1 if image_size >= 64 else 0)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for i, widths in enumerate(blocks):
            layers[f"block{i}"] = _conv_block(channels, widths)
            channels = widths[-1]
            if i < pooled:
                layers[f"pool{i}"] = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:  # every convolution here has one
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))
