"""engine/infer.py: the inference batch size is measured, not guessed."""

from __future__ import annotations

import time

import torch
from torch import nn

from kdcli.engine.infer import fastest_batch_size


class SlowBeyond64(nn.Module):
    """Per-call overhead, then a per-image cost that quadruples past 64 images (a cache that
    runs out): the fastest batch is 64."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        self.calls.append(n)
        time.sleep(0.01 + (0.0005 * n if n <= 64 else 0.002 * n))
        return x.flatten(1)[:, :10] * self.scale


def test_the_fastest_batch_is_found_and_larger_ones_are_not_tried():
    model = SlowBeyond64()
    images = torch.randn(20, 1, 8, 8)
    assert fastest_batch_size(model, images, torch.device("cpu")) == 64
    assert sorted(set(model.calls)) == [32, 64, 128], "stops at the first slower size"
    assert not model.training
