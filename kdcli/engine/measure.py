"""What a model costs: size, FLOPs per image and CPU latency (the task measures accuracy)."""

from __future__ import annotations

import copy
import logging
import statistics

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdcli.data import DatasetInfo


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _example(info: DatasetInfo) -> torch.Tensor:
    return info.example()


def flops_per_image(model: nn.Module, info: DatasetInfo) -> int:
    """Forward FLOPs for one image (multiply and add counted separately), on a CPU copy."""
    cpu_model = copy.deepcopy(model).cpu().eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        cpu_model(_example(info))
    return int(counter.get_total_flops())


def cpu_latency_ms(model: nn.Module, info: DatasetInfo, runs: int = 50, warmup: int = 5) -> float:
    """Median wall time in ms of a batch-1 forward pass on the CPU (torch.utils.benchmark,
    which keeps the thread count fixed and times each run separately)."""
    cpu_model = copy.deepcopy(model).cpu().eval()
    example = _example(info)
    timer = _timer(cpu_model, example)
    with torch.inference_mode():
        timer.timeit(warmup)
        return statistics.median(timer.timeit(1).mean for _ in range(runs)) * 1000.0


def _timer(model: nn.Module, example: torch.Tensor):
    """A torch.utils.benchmark Timer of `model(example)`. Importing it imports
    torch.utils.cpp_extension, which warns about CUDA_HOME on machines without CUDA: not ours
    to show."""
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        quiet.setLevel(level)
    return Timer("model(x)", globals={"model": model, "x": example})
