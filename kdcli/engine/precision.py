"""Numeric precision and memory format of a model's forward passes (`precision=`, `channels_last=`).

`auto` picks bfloat16 autocast where the hardware runs it natively and where it pays:

- CUDA with bf16 support (Ampere or newer): always.
- A CPU whose oneDNN reports native bf16 (AVX512-BF16 or AMX): only for models with enough
  arithmetic per weight. Measured on such a CPU (2 cores, batch 64, training steps, bf16 with
  channels_last against fp32): resnet8x4 and resnet32x4 on 32x32 images 3.4x and 3.5x faster,
  resnet8 (25 M FLOPs) 1.6x, but on 8x8 digits smallcnn 0.9x, resnet18 0.75x, vgg16 0.6x and
  resnet50 1.0x. Autocast
  casts every weight on every forward pass, a cost that grows with the parameters, while the
  gain grows with the FLOPs; a model qualifies with at least MIN_FLOPS per image and
  MIN_FLOPS_PER_PARAM FLOPs per parameter.
- Anything else: fp32.

Weights, optimizer state and the losses stay in fp32: only the model's forward pass runs under
autocast, and the loop upcasts its outputs before the loss. fp16 (CUDA only) adds a gradient
scaler. channels_last (`auto`) is used with reduced precision on models with 2-d convolutions,
where oneDNN's and cuDNN's fast kernels want it (fp32 alone gained little or lost on this CPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

CHOICES = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MIN_FLOPS = 20e6  # forward FLOPs per image
MIN_FLOPS_PER_PARAM = 50


@dataclass(frozen=True)
class Precision:
    """How one model's forward passes run: `name` (fp32, bf16, fp16) and its memory format."""

    name: str = "fp32"
    channels_last: bool = False

    @property
    def reduced(self) -> bool:
        return self.name != "fp32"

    def describe(self) -> str:
        return self.name + (", channels_last" if self.channels_last else "")


FP32 = Precision()


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 matrix products in hardware."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def pays_on_cpu(flops: float, params: int) -> bool:
    """Whether a model has enough arithmetic per image and per weight for bf16 on a CPU."""
    return flops >= MIN_FLOPS and flops >= MIN_FLOPS_PER_PARAM * max(params, 1)


def resolve(
    precision: str,
    channels_last: str | bool,
    device: torch.device,
    model: nn.Module,
    flops: float,
    params: int,
) -> Precision:
    """The precision a model runs in on `device` for a `precision=` and `channels_last=` setting
    (`flops`: its forward FLOPs per image; `params`: its parameter count). The pre-flight checks
    (kdcli/config/checks.py) refuse a setting not in CHOICES, and fp16 off CUDA."""
    if precision == "auto":
        native = native_bf16(device)
        pays = device.type == "cuda" or pays_on_cpu(flops, params)
        precision = "bf16" if native and pays else "fp32"
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last == "auto":
        channels_last = precision != "fp32" and convolutional
    return Precision(precision, bool(channels_last) and convolutional)


def prepare(model: nn.Module, precision: Precision) -> nn.Module:
    """The model in the memory format its forward passes want (the same module)."""
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def inputs(x: torch.Tensor, precision: Precision) -> torch.Tensor:
    """A batch in the memory format of `precision` (4-d images only)."""
    if precision.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@contextlib.contextmanager
def autocast(precision: Precision, device: torch.device) -> Iterator[None]:
    """Forward passes under this context run in `precision` (nothing changes for fp32)."""
    if not precision.reduced:
        yield
        return
    with torch.autocast(device.type, dtype=DTYPES[precision.name]):
        yield


def grad_scaler(precision: Precision, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16's loss scaler (its gradients underflow without one); None for the others."""
    if precision.name != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
