"""What `kd serve MODEL` serves: a kdcli model file (`student.pt`, a cache entry's `model.pt`),
a run directory's teacher, or a local Hugging Face model directory, with the tokenizer that
turns text into its token ids.

A kdcli model file is rebuilt as `kd eval` rebuilds it (kdcli/config/eval_config.py: kdcli's
own config for the option the file names, the file's plain values, `weights_only` weights) on
the dataset it was trained on, whose vocabulary is the model's tokenizer (characters, or
`dataset.tokenizer`). A Hugging Face directory is read with its own tokenizer, never
downloaded, never with code from the directory (`trust_remote_code=False`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from kdcli.config.device import resolve_device
from kdcli.config.eval_config import build_from_checkpoint, eval_config, load_dataset
from kdcli.data.tokenizer import Tokens
from kdcli.errors import UserError
from kdcli.models.lm.hf import hf_causal_lm, positions_of
from kdcli.pipeline.eval_checkpoint import check_fits, model_info, read_model
from kdcli.store.plain import read_json

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """A causal LM to serve: the module (token ids [B, T] -> logits [B, T, V]), its tokenizer,
    vocabulary, context length and end-of-sequence id (None: none)."""

    name: str
    module: nn.Module
    tokenizer: Any
    vocabulary: int
    context: int
    eos: int | None
    device: Any


def load_served(path: Path, overrides: list[str], device: str = "auto") -> Loaded:
    """The model at `path` (see the module's docstring); `overrides` (dataset=..., ...) as
    `kd eval` takes them, for a kdcli model file."""
    path = path.expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return _hugging_face(path, device)
    if path.is_dir() and (path / "report.json").is_file():
        return _run_teacher(path, overrides, device)
    if path.is_dir():
        raise UserError(
            f"kd serve {path}: a directory without config.json (a Hugging Face model) or "
            "report.json (a kdcli run); give a model file (student.pt, a cache entry's model.pt), "
            "a run directory or a Hugging Face model directory."
        )
    return _model_file(path, overrides, device)


def _hugging_face(path: Path, device: str) -> Loaded:
    tokens = Tokens(path, "MODEL")
    vocabulary = len(tokens)
    module = hf_causal_lm(str(path), vocabulary, image_size=1)
    context = positions_of(module.model.config) or 2048
    eos = tokens.tokenizer.eos_token_id
    return Loaded(
        path.name,
        module,
        tokens,
        vocabulary,
        context,
        None if eos is None else int(eos),
        _device(device),
    )


def _run_teacher(run: Path, overrides: list[str], device: str) -> Loaded:
    """A run directory's teacher: the model file (or Hugging Face directory) its report names."""
    report = read_json(run / "report.json", f"kd serve {run}: not a finished kdcli run.")
    checkpoint = (
        (report.get("teacher") or {}).get("checkpoint") if isinstance(report, dict) else None
    )
    if not isinstance(checkpoint, str) or not checkpoint:
        raise UserError(f"kd serve {run}: its report.json names no teacher checkpoint.")
    teacher = Path(checkpoint)
    if teacher.is_dir() and (teacher / "config.json").is_file():
        return _hugging_face(teacher, device)
    if not teacher.is_file():
        raise UserError(
            f"kd serve {run}: its teacher {teacher} is gone (the cache was cleaned?); serve a "
            "model file instead."
        )
    return _model_file(teacher, overrides, device, str(run))


def _model_file(path: Path, overrides: list[str], device: str, run_dir: str = "") -> Loaded:
    """A kdcli model file, rebuilt on its dataset (whose vocabulary is its tokenizer)."""
    file = read_model(path)
    info = model_info(file)
    if info.modality != "text":
        raise UserError(f"kd serve {path}: an image model; kd serve serves language models.")
    cfg = eval_config(path, [*overrides, f"device={device}"], info.name, run_dir)
    data = load_dataset(cfg, resolve_device(cfg.device))
    check_fits(path, {"name": info.name, "num_classes": info.num_classes}, data)
    vocabulary = getattr(data, "vocabulary", None)
    if vocabulary is None:
        raise UserError(f"kd serve {path}: dataset {data.info.name} has no tokenizer to serve.")
    module = build_from_checkpoint(file, data.info)
    name = file.option or path.stem
    eos = getattr(vocabulary, "eos_id", None)
    return Loaded(
        str(name),
        module,
        vocabulary,
        data.info.num_classes,
        data.info.image_size,
        eos,
        resolve_device(cfg.device),
    )


def _device(device: str) -> Any:
    from omegaconf import OmegaConf

    from kdcli.config.device import check_device

    node = OmegaConf.create({"type": device})
    check_device(node)
    return resolve_device(node)
