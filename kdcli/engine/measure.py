"""What a model costs: size, FLOPs per image and CPU latency (the task measures accuracy)."""

from __future__ import annotations

import copy
import logging
import statistics

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from kdcli.data import DatasetInfo


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _example(info: DatasetInfo) -> torch.Tensor:
    return info.example()


def _attention_flops(
    query: torch.Size, key: torch.Size, value: torch.Size, *_: object, **__: object
) -> int:
    """The FLOPs of attention's two matrix products (torch's counter has no formula for the
    fused CPU kernel that scaled_dot_product_attention runs on a CPU, so it counted none)."""
    return int(sdpa_flop_count(query, key, value))


# op -> FLOPs formula of its input shapes, for the ops torch's counter does not know
_MORE_FORMULAS = {
    op: _attention_flops
    for op in [getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)]
    if op is not None
}


def flops_per_image(model: nn.Module, info: DatasetInfo) -> int:
    """Forward FLOPs for one input (an image, a text or a window of tokens as long as the
    data's; multiply and add counted separately, attention included), on a CPU copy."""
    cpu_model = copy.deepcopy(model).cpu().eval()
    counter = FlopCounterMode(display=False, custom_mapping=_MORE_FORMULAS)
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
