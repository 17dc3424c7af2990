"""torchvision's ResNets, with the stem adapted to small images and any number of channels."""

from __future__ import annotations

import torchvision
from torch import nn

from kdcli.errors import UserError

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def resnet(
    arch: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    small_input: bool = True,
) -> nn.Module:
    """A torchvision ResNet with `num_classes` outputs.

    `small_input=True` swaps the 7x7 stride-2 stem and its max-pool for a 3x3 stride-1
    conv, as is usual for 32x32 (and smaller) images; `image_size` is accepted for the
    common model signature and does not change the architecture.
    """
    if arch not in ARCHS:
        raise UserError(f"model.arch={arch!r} is not a ResNet; choose one of {', '.join(ARCHS)}.")
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if small_input:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model
