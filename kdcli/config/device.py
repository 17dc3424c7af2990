"""The `device` setting: checked once (kd train's pre-flight checks, kd eval's), then resolved
to the torch device the run uses."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from kdcli.errors import UserError


def check_device(device: DictConfig) -> None:
    """`device.type` is auto, cpu or cuda, and cuda only where a CUDA GPU is visible."""
    if device.type not in ("auto", "cpu", "cuda"):
        raise UserError(f"device.type={device.type!r} must be auto, cpu or cuda.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible; use device=auto or device=cpu.")


def resolve_device(device: DictConfig) -> torch.device:
    """The torch device of a checked `device` setting (auto: CUDA where a GPU is visible)."""
    if device.type == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device.type)
