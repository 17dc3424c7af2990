"""ShuffleNet V1 (Zhang et al. 2018) and V2 (Ma et al. 2018) in the CIFAR variants of the CRD
benchmark: a 1x1 stem with 24 channels and no max-pool, three stages that each start by
halving the resolution, global average pooling and a linear head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from kdcli.errors import UserError

STEM_CHANNELS = 24


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of `groups` groups so that the next grouped conv mixes them."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _stages(
    stage_channels: Sequence[int],
    stage_units: Sequence[int],
    make_stage: Callable[[int, int, int], nn.Sequential],
) -> tuple[list[nn.Sequential], int]:
    """The three stages after the stem, `make_stage(in_channels, out_channels, units)` each,
    and the channels they end with."""
    if len(stage_channels) != 3 or len(stage_units) != 3:
        raise UserError("model.stage_channels and model.stage_units need 3 entries each.")
    channels, stages = STEM_CHANNELS, []
    for width, count in zip(stage_channels, stage_units, strict=True):
        stages.append(make_stage(channels, width, count))
        channels = width
    return stages, channels


def _stem(in_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, STEM_CHANNELS, kernel_size=1, bias=False),
        nn.BatchNorm2d(STEM_CHANNELS),
        nn.ReLU(),
    )


def _bn_conv(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
) -> list[nn.Module]:
    conv = nn.Conv2d(
        in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False
    )
    return [conv, nn.BatchNorm2d(out_channels)]


# ---- ShuffleNet V1 --------------------------------------------------------------------------


class ShuffleUnitV1(nn.Module):
    """Grouped 1x1, shuffle, 3x3 depthwise, grouped 1x1; added to the input, or at stride 2
    concatenated with its 3x3 average pool."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        branch_channels = out_channels - in_channels if stride == 2 else out_channels
        mid = branch_channels // 4
        # the first unit sees the 24-channel stem, too few to split into groups
        self.first_groups = 1 if in_channels == STEM_CHANNELS else groups
        self.reduce = nn.Sequential(
            *_bn_conv(in_channels, mid, 1, groups=self.first_groups), nn.ReLU()
        )
        self.depthwise = nn.Sequential(*_bn_conv(mid, mid, 3, stride, groups=mid), nn.ReLU())
        self.expand = nn.Sequential(*_bn_conv(mid, branch_channels, 1, groups=groups))
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(self.reduce(x), self.first_groups)
        out = self.expand(self.depthwise(out))
        if self.stride == 2:
            return self.relu(torch.cat([out, self.shortcut(x)], 1))
        return self.relu(out + x)


class ShuffleNetV1(nn.Module):
    """`stage_channels` (240, 480, 960) with `groups=3` and (4, 8, 4) units is the benchmark's.
    `zero_init_residual` starts the last batch norm of every stride-1 unit at zero, so the
    unit starts as the identity (as torchvision's option does for ResNets)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        stage_channels: Sequence[int] = (240, 480, 960),
        stage_units: Sequence[int] = (4, 8, 4),
        groups: int = 3,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()

        def stage(in_channels: int, width: int, count: int) -> nn.Sequential:
            first = ShuffleUnitV1(in_channels, width, 2, groups)
            return nn.Sequential(
                first, *(ShuffleUnitV1(width, width, 1, groups) for _ in range(count - 1))
            )

        self.stem = _stem(in_channels)
        stages, channels = _stages(stage_channels, stage_units, stage)
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        if zero_init_residual:
            for unit in self.modules():
                if isinstance(unit, ShuffleUnitV1) and unit.stride == 1:
                    norm = unit.expand[-1]  # the branch's last BatchNorm
                    if isinstance(norm, nn.BatchNorm2d):
                        nn.init.zeros_(norm.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.avgpool(x).flatten(1))


# ---- ShuffleNet V2 --------------------------------------------------------------------------


class ShuffleUnitV2(nn.Module):
    """Half the channels pass through; the other half go 1x1, 3x3 depthwise, 1x1; shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            *_bn_conv(half, half, 1),
            nn.ReLU(),
            *_bn_conv(half, half, 3, groups=half),
            *_bn_conv(half, half, 1),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, transformed = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([kept, self.branch(transformed)], 1), 2)


class DownsampleUnitV2(nn.Module):
    """Both halves see the whole input at stride 2: (3x3 depthwise, 1x1) and (1x1, 3x3
    depthwise, 1x1); their outputs are concatenated and shuffled."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.left = nn.Sequential(
            *_bn_conv(in_channels, in_channels, 3, stride=2, groups=in_channels),
            *_bn_conv(in_channels, half, 1),
            nn.ReLU(),
        )
        self.right = nn.Sequential(
            *_bn_conv(in_channels, half, 1),
            nn.ReLU(),
            *_bn_conv(half, half, 3, stride=2, groups=half),
            *_bn_conv(half, half, 1),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class ShuffleNetV2(nn.Module):
    """`stage_channels` (116, 232, 464), `stage_units` (3, 7, 3) and 1024 final channels is
    the 1x network; each stage is one downsampling unit and then `stage_units` units."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        stage_channels: Sequence[int] = (116, 232, 464),
        stage_units: Sequence[int] = (3, 7, 3),
        final_channels: int = 1024,
    ) -> None:
        super().__init__()

        def stage(in_channels: int, width: int, count: int) -> nn.Sequential:
            return nn.Sequential(
                DownsampleUnitV2(in_channels, width), *(ShuffleUnitV2(width) for _ in range(count))
            )

        self.stem = _stem(in_channels)
        stages, channels = _stages(stage_channels, stage_units, stage)
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Sequential(*_bn_conv(channels, final_channels, 1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(final_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.avgpool(self.conv2(x)).flatten(1))
