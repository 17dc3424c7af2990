"""Model checkpoints: a dict of plain values and tensors, loaded with `weights_only=True`.

A kdcli model file holds `state_dict` plus what the model was built from: the option of the
`model` config group (`model: resnet8x4`), that config's plain values (`model_config`) and the
dataset facts (`dataset`). It never names code: kd eval and kd export rebuild the model from
kdcli's own configs (kdcli/config/from_files.py). A plain state_dict (what
`torch.save(model.state_dict(), f)` writes) and a safetensors file of weights load too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdcli.errors import UserError
from kdcli.store.atomic import write_atomic
from kdcli.store.plain import plain_data

FORMAT = "kdcli-model/2"
# kdcli 0.1's files: `model_config` held the model's `_target_`, which is read as the name of
# a config (the option that builds the same class), never imported
FORMAT_1 = "kdcli-model/1"


def save_model(path: Path, module: nn.Module, /, **metadata: Any) -> None:
    """Write the module's weights (on CPU) and metadata atomically to `path` (an int8 model's
    state also holds packed parameters and dtypes, kept as they are)."""
    state = module.state_dict()  # an OrderedDict whose `_metadata` (module versions) int8
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
    """The state_dict in `path`: a kdcli checkpoint, a plain state_dict, or a safetensors
    file (`kd export --format safetensors` writes the model's weights under `model.`).

    `key` is the config key that named the file, used in error messages.
    """
    if path.suffix == ".safetensors":
        tensors, _ = read_safetensors(path, key)
        return deployed_weights(tensors)
    payload = read_checkpoint(path, key)
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(
        isinstance(v, torch.Tensor) for v in payload.values()
    ):
        raise UserError(f"{key}={path} holds no state_dict (a dict of tensors).")
    return payload


def _unreadable(path: Path, key: str, error: Exception, what: str, fix: str) -> UserError:
    lines = str(error).strip().splitlines()
    why = f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__
    return UserError(f"{key}={path} could not be read as {what} ({why}). {fix}")


def _exists(path: Path, key: str) -> None:
    if not path.is_file():
        raise UserError(f"{key}={path}: no such file. Give the path of a checkpoint file.")
    if path.stat().st_size == 0:
        raise UserError(
            f"{key}={path} is empty (0 bytes): a copy that did not finish? Copy it again."
        )


def read_checkpoint(path: Path, key: str) -> Any:
    """What `path` holds, loaded with weights_only (a kdcli checkpoint: `format`, `model`,
    `model_config`, `dataset` and `state_dict`); `key` names the file in error messages."""
    _exists(path, key)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for unreadable files
        raise _unreadable(
            path, key, error, "a PyTorch checkpoint",
            "Give a file written by kdcli or by torch.save(model.state_dict(), path); a "
            "truncated file needs copying again.",
        ) from None  # fmt: skip


def read_safetensors(path: Path, key: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata (strings) of a safetensors file."""
    _exists(path, key)
    try:
        from safetensors import safe_open
    except ImportError:
        raise UserError(
            f"{key}={path}: reading safetensors files needs the safetensors package: "
            "`pip install kdcli[export]`."
        ) from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
            metadata = file.metadata() or {}
    except Exception as error:  # safetensors raises its own error types, and OSError
        raise _unreadable(
            path, key, error, "a safetensors file",
            "Give a file written by kd export --format safetensors or safetensors' save_file; "
            "a truncated file needs copying again.",
        ) from None  # fmt: skip
    return tensors, metadata


def deployed_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's own weights from an exported file's (`model.<name>` beside the input
    normalisation, `mean` and `std`); other files' tensors as they are."""
    if not any(name.startswith("model.") for name in tensors):
        return tensors
    return {n.removeprefix("model."): t for n, t in tensors.items() if n.startswith("model.")}


@dataclass
class ModelFile:
    """A kdcli model file's contents, checked to be plain data (kdcli/config/from_files.py
    rebuilds the model from `option` and `values`)."""

    path: Path
    option: str | None  # configs/model/<option>.yaml; None in a kdcli-model/1 file
    target: str | None  # a kdcli-model/1 file's `_target_`: which option, never imported
    values: dict[str, Any]  # merged over the option's config
    dataset: dict[str, Any]  # the facts the model was built for (kdcli.data.DatasetInfo)
    state_dict: dict[str, Any]
    int8: bool  # a compressed student's quantized model


def read_model_file(path: Path, key: str = "checkpoint") -> ModelFile:
    """The kdcli model file at `path` (a run's student.pt, a cache entry's model.pt)."""
    payload = read_checkpoint(path, key)
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, FORMAT_1):
        raise UserError(
            f"{key}={path} is not a kdcli model file (it has no model config). kd eval and kd "
            "export take a run's student.pt or a cache entry's model.pt."
        )
    return model_file(path, payload, f"{key}={path}")


def _state_value(value: Any) -> bool:
    """What a state_dict holds: tensors; an int8 model's scales (numbers), dtypes and packed
    (weight, bias) pairs."""
    if isinstance(value, tuple):
        return all(v is None or isinstance(v, torch.Tensor) for v in value)
    return isinstance(value, torch.Tensor | int | float | torch.dtype)


EXPORTED = "kdcli-deployable/1"  # kd export --format safetensors (kdcli/pipeline/export.py)


def read_exported_model(path: Path, key: str = "checkpoint") -> ModelFile:
    """A `kd export --format safetensors` file as a model file: the weights, and the model
    config and dataset facts its metadata records as JSON strings."""
    tensors, metadata = read_safetensors(path, key)
    source = f"{key}={path}"
    if metadata.get("format") != EXPORTED or "dataset_info" not in metadata:
        raise UserError(
            f"{source} is not a safetensors file that this kd export wrote (its metadata has no "
            "model config and dataset facts); evaluate the checkpoint it was exported from."
        )
    try:
        fields = {k: json.loads(metadata[k]) for k in ("model", "model_config", "dataset_info")}
    except (KeyError, ValueError, RecursionError) as error:
        raise UserError(f"{source}: its metadata is not kdcli's ({error}).") from None
    payload = {**fields, "format": FORMAT, "dataset": fields["dataset_info"]}
    return model_file(path, {**payload, "state_dict": deployed_weights(tensors)}, source)


def model_file(path: Path, payload: dict[str, Any], source: str) -> ModelFile:
    """Check a model file's fields (`source` names the file in messages)."""
    config = payload.get("model_config")
    if not isinstance(config, dict):
        raise UserError(f"{source}: model_config is not a mapping; not a kdcli model file.")
    config, target = dict(config), None
    if payload.get("format") == FORMAT_1:
        target = config.pop("_target_", None)
        if not isinstance(target, str):
            raise UserError(f"{source}: model_config._target_ is missing; not a kdcli model file.")
    option = payload.get("model")
    if option is not None and not isinstance(option, str):
        raise UserError(f"{source}: model={option!r} is not a config name; not a kdcli model file.")
    dataset = plain_data(payload.get("dataset"), source, "dataset")
    compression = plain_data(payload.get("compression") or {}, source, "compression")
    if not isinstance(dataset, dict) or not isinstance(compression, dict):
        raise UserError(f"{source}: dataset or compression is not a mapping; not a kdcli file.")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(map(_state_value, state.values())):
        raise UserError(f"{source} holds no state_dict (a dict of tensors).")
    values = plain_data(config, source, "model_config")
    return ModelFile(path, option, target, values, dataset, state, bool(compression.get("int8")))


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
