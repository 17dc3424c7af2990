"""Stage 4's measurements: accuracy, NLL, calibration, agreement, size, FLOPs and CPU latency."""

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


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: how far confidence (the top softmax probability) is from accuracy, on average.

    Samples fall into `bins` equal-width confidence bins, (0, 1/bins], ..., ((bins-1)/bins, 1];
    ECE = sum over bins of (share of samples in the bin) * |accuracy - mean confidence|.
    0 is perfectly calibrated; distillation is known to change it (often for the better).
    """
    confidence, predicted = logits.float().softmax(1).max(1)
    correct = (predicted == labels).float()
    which = (confidence * bins).ceil().long().clamp(1, bins) - 1
    hits = torch.zeros(bins, device=logits.device).index_add_(0, which, correct)
    sure = torch.zeros(bins, device=logits.device).index_add_(0, which, confidence)
    return ((hits - sure).abs().sum() / max(len(labels), 1)).item()


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
