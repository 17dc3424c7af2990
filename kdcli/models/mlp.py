"""A multilayer perceptron over flattened pixels."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class MLP(nn.Module):
    """Flatten, then `hidden` Linear-ReLU layers (with dropout), then the classifier."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.1,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))
