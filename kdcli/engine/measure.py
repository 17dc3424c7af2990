"""Stage 4's measurements: accuracy, NLL, agreement, size, FLOPs and CPU latency."""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdcli.data import DatasetInfo, Loader


@torch.no_grad()
def predict(model: nn.Module, loader: Loader, device: torch.device) -> torch.Tensor:
    """Logits for every sample of the loader's split, in split order, as float32 on `device`."""
    model.to(device).eval()
    return torch.cat([model(batch.x).float() for batch in loader.epoch(0)])


@dataclass
class Accuracy:
    top1: float
    nll: float


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> Accuracy:
    top1 = (logits.argmax(1) == labels).float().mean().item()
    return Accuracy(top1=top1, nll=F.cross_entropy(logits, labels).item())


def agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """The fraction of samples on which two models predict the same class."""
    return (logits_a.argmax(1) == logits_b.argmax(1)).float().mean().item()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _example(info: DatasetInfo) -> torch.Tensor:
    return torch.zeros(1, info.channels, info.image_size, info.image_size)


def flops_per_image(model: nn.Module, info: DatasetInfo) -> int:
    """Forward FLOPs for one image (multiply and add counted separately), on a CPU copy."""
    cpu_model = copy.deepcopy(model).cpu().eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        cpu_model(_example(info))
    return int(counter.get_total_flops())


def cpu_latency_ms(model: nn.Module, info: DatasetInfo, runs: int = 50, warmup: int = 5) -> float:
    """Median wall time in ms of a batch-1 forward pass on the CPU."""
    cpu_model = copy.deepcopy(model).cpu().eval()
    example = _example(info)
    timings = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            cpu_model(example)
            if i >= warmup:
                timings.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(timings)
