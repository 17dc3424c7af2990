"""Compressing a trained model: magnitude pruning and post-training int8 quantization.

- `Compression` is what the `compress` config group builds: how much to prune, how long to
  fine-tune the pruned model (by distillation, in the pipeline), whether to quantize.
- Pruning is global and unstructured: the `amount` fraction of conv and linear weights with
  the smallest magnitude, over the whole model, is zeroed (torch.nn.utils.prune). The masks
  stay on while the model is fine-tuned, then are made permanent.
- int8 is PyTorch's FX graph mode post-training static quantization
  (`torch.ao.quantization.quantize_fx`): conv-BN(-ReLU) are fused (BN folded into the conv),
  observers calibrate activation ranges on training images, and conv/linear run in int8 on
  the CPU, except the first convolution and the last linear layer (`full_precision_ends`).
  A quantized model runs on the CPU only. The backend is `fbgemm` (x86), else `qnnpack`
  (ARM): on small students at batch 1, fbgemm ran 1.2-1.3x faster than the `x86`
  backend that PyTorch picks by default (resnet8 0.35 against 0.45 ms, mobilenetv2 1.9
  against 2.4 ms, measured alternately in one process on this 2-core CPU).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Conv2d, nn.Linear)


@dataclass
class Compression:
    """What to do to the distilled student (the `compress` group: none, int8, prune,
    prune_int8)."""

    name: str = "none"
    amount: float = 0.0  # the fraction of conv/linear weights pruned (0: no pruning)
    epochs: int = 0  # fine-tuning epochs after pruning, distilled from the same teacher
    lr_scale: float = 0.1  # the fine-tune's learning rate, as a fraction of the student's
    int8: bool = False
    calibration_images: int = 512

    @property
    def active(self) -> bool:
        return self.amount > 0 or self.int8

    def describe(self) -> str:
        parts = [f"{100 * self.amount:.0f}% pruned"] if self.amount > 0 else []
        return ", ".join([*parts, *(["int8"] if self.int8 else [])]) or "none"


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]


def prune_magnitude(model: nn.Module, amount: float) -> None:
    """Zero the `amount` smallest-magnitude conv/linear weights over the whole model; the
    masks stay attached (training keeps them zero) until `make_pruning_permanent`."""
    prune.global_unstructured(
        prunable_weights(model), pruning_method=prune.L1Unstructured, amount=amount
    )


def make_pruning_permanent(model: nn.Module) -> None:
    for module, name in prunable_weights(model):
        if prune.is_pruned(module):
            prune.remove(module, name)


def sparsity(model: nn.Module) -> float:
    """The fraction of conv and linear weights that are exactly zero."""
    weights = [m.weight for m in model.modules() if isinstance(m, PRUNABLE)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / max(total, 1)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode) with each BatchNorm that follows a conv folded into the
    conv's weights (torch.fx); the model itself when FX cannot trace it."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model.eval())
    except Exception:  # FX tracing fails on data-dependent control flow: keep it unfolded
        return model


def quantized_engine() -> str:
    """The int8 kernels for this CPU: fbgemm on x86, qnnpack elsewhere (ARM)."""
    return "fbgemm" if "fbgemm" in torch.backends.quantized.supported_engines else "qnnpack"


def full_precision_ends(model: nn.Module) -> list[str]:
    """The first convolution and the last linear layer, which int8 leaves in fp32: they hold
    few of the weights and much of the quantization error (the raw input's range, the
    logits). On a digits MobileNetV2 student (95.0 % top-1) quantizing everything cost 1.4
    points, keeping these two 0.6."""
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return [*convs[:1], *linears[-1:]]


def quantize_int8(model: nn.Module, calibration: Iterable[torch.Tensor]) -> nn.Module:
    """An int8 copy of `model` (CPU), calibrated on the batches of `calibration`; its first
    convolution and last linear layer stay in fp32 (`full_precision_ends`)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = quantized_engine()
    torch.backends.quantized.engine = engine
    model = model.cpu().eval()
    batches = [batch.cpu() for batch in calibration]
    with warnings.catch_warnings():  # FX quantization's deprecation notice (torchao is next)
        warnings.simplefilter("ignore")
        mapping = get_default_qconfig_mapping(engine)
        for name in full_precision_ends(model):
            mapping = mapping.set_module_name(name, None)
        prepared = prepare_fx(model, mapping, (batches[0],))
        with torch.no_grad():
            for batch in batches:
                prepared(batch)
        return convert_fx(prepared)
