"""The `device` setting: checked once (kd train's pre-flight checks, kd eval's), then resolved
to the torch device the run uses; and the batch sizes split over torchrun's processes."""

from __future__ import annotations

import os

import torch
from omegaconf import DictConfig, OmegaConf

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


def check_shardable(cfg: DictConfig) -> None:
    """Under torchrun each of N processes takes batch_size / N samples of every batch."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's, before any group exists
    for key in ("teacher.batch_size", "student.batch_size"):
        size = OmegaConf.select(cfg, key)
        if size % processes:
            fits = -(-size // processes) * processes
            raise UserError(
                f"{key}={size} is the global batch, split over {processes} torchrun processes, "
                f"so it must be a multiple of {processes} (e.g. {key}={fits})."
            )
