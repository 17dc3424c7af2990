"""Model checkpoints: a dict of plain values and tensors, loaded with `weights_only=True`.

A kdcli checkpoint holds `state_dict` plus the model config and dataset facts it was built
with. A plain state_dict (what `torch.save(model.state_dict(), f)` writes) loads too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdcli.errors import UserError
from kdcli.store.atomic import write_atomic

FORMAT = "kdcli-model/1"


def save_model(path: Path, model: nn.Module, **metadata: Any) -> None:
    """Write the model's weights (on CPU) and metadata atomically to `path` (an int8 model's
    state also holds packed parameters and dtypes, kept as they are)."""
    state = model.state_dict()  # an OrderedDict whose `_metadata` (module versions) int8
    quantized = any(isinstance(v, torch.Tensor) and v.is_quantized for v in state.values())
    for key, value in state.items():  # layers need to load: changed in place, kept
        if isinstance(value, torch.Tensor):
            state[key] = value.detach().cpu()
            if quantized and value.dim() == 0:  # see restore_scalars
                state[key] = value.item()
    write_atomic(
        path, lambda handle: torch.save({"format": FORMAT, **metadata, "state_dict": state}, handle)
    )


def restore_scalars(state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """An int8 model's state as saved: its activation scales and zero points (one number per
    layer) are stored as Python numbers inside the file's pickle, not as 0-d tensors, each of
    which would be a zip entry of its own (about 180 bytes with its alignment): on a 17 k-weight
    student that is an eighth of the file. Turn them back into tensors of the model's dtypes,
    in place (the dict's `_metadata`, module versions that int8 layers read, stays)."""
    expected = model.state_dict()
    for key, value in state.items():
        if isinstance(value, int | float) and key in expected:
            state[key] = torch.tensor(value, dtype=expected[key].dtype)
    return state


def read_state_dict(path: Path, key: str) -> dict[str, torch.Tensor]:
    """The state_dict in `path` (a kdcli checkpoint or a plain state_dict).

    `key` is the config key that named the file, used in error messages.
    """
    payload = read_checkpoint(path, key)
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(
        isinstance(v, torch.Tensor) for v in payload.values()
    ):
        raise UserError(f"{key}={path} holds no state_dict (a dict of tensors).")
    return payload


def read_checkpoint(path: Path, key: str) -> Any:
    """What `path` holds, loaded with weights_only (a kdcli checkpoint: `format`,
    `model_config`, `dataset` and `state_dict`); `key` names the file in error messages."""
    if not path.is_file():
        raise UserError(f"{key}={path}: no such file. Give the path of a checkpoint file.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for unreadable files
        raise UserError(
            f"{key}={path} could not be read as a PyTorch checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}). Give a file written by kdcli or by "
            "torch.save(model.state_dict(), path)."
        ) from None
    return payload


def check_compatible(
    state_dict: dict[str, torch.Tensor], model: nn.Module, key: str, path: Path, described: str
) -> None:
    """Raise a UserError naming the differences when `state_dict` does not fit `model`."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{name} is {list(state_dict[name].shape)} in the file but {list(t.shape)} in the model"
        for name, t in expected.items()
        if name in state_dict and tuple(state_dict[name].shape) != tuple(t.shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    details = []
    if mismatched:
        details.append("; ".join(mismatched[:3]))
    if missing:
        details.append(f"{len(missing)} weight(s) missing, e.g. {', '.join(missing[:3])}")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected weight(s), e.g. {', '.join(unexpected[:3])}")
    raise UserError(
        f"{key}={path} does not match {described}: {'. '.join(details)}. Choose the model "
        "config and dataset the checkpoint was trained with."
    )


def load_model(model: nn.Module, path: Path, key: str, described: str) -> nn.Module:
    """Load the checkpoint at `path` into `model` after checking that it fits."""
    state_dict = read_state_dict(path, key)
    check_compatible(state_dict, model, key, path, described)
    model.load_state_dict(state_dict)
    return model
