"""The settings `kd eval CHECKPOINT [overrides]` evaluates with: a dataset, `eval.batch_size`
and the device.

Without a `dataset=` override the checkpoint is evaluated on the dataset it was trained on:
the `dataset` section of the config of the run that made it (`config.yaml` beside a run's
`student.pt`, or the run a cache entry's manifest names), else the `dataset` group option
of the checkpoint's dataset name. `dataset.<key>=...` overrides apply on top either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from kdcli.config.build import _instantiate
from kdcli.config.checks import _unknown_key_error
from kdcli.config.groups import group_options
from kdcli.config.paths import config_dir
from kdcli.config.values import check_values
from kdcli.data import Dataset, DatasetInfo
from kdcli.engine.compress import quantize_int8
from kdcli.errors import UserError
from kdcli.store.checkpoint import check_compatible, restore_scalars

ALLOWED = ("dataset", "eval.batch_size", "device")


def eval_config(
    checkpoint: Path, overrides: list[str], trained_on: str | None, run_dir: str = ""
) -> DictConfig:
    """The composed config (dataset, eval, device) for evaluating `checkpoint`;
    `trained_on` is the dataset name the checkpoint records, `run_dir` the run that made it
    when known (an exported file's description names it)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    for override in parsed:
        key = override.key_or_group
        if not any(key == a or key.startswith(f"{a}.") for a in ALLOWED):
            raise UserError(
                f"kd eval {override.input_line}: kd eval takes only dataset=..., "
                "dataset.<key>=..., eval.batch_size=... and device=... (it trains nothing)."
            )
    picks_dataset = any(o.key_or_group == "dataset" for o in parsed)
    run_dataset = None if picks_dataset else _run_dataset(checkpoint, run_dir)
    group = []
    if not picks_dataset and run_dataset is None:
        if trained_on not in group_options("dataset"):
            raise UserError(
                f"{checkpoint}: kd eval cannot tell which dataset to use (no config.yaml of the "
                "run that made it); give one, e.g. dataset=cifar10 dataset.root=/data."
            )
        group = [f"dataset={trained_on}"]
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="eval"):
        try:
            cfg = compose("train", overrides=[*group, *overrides])
        except HydraException as error:
            raise _unknown_key_error([*group, *overrides], error) from None
    if run_dataset is not None:
        with open_dict(cfg):
            cfg.dataset = run_dataset
            for override in parsed:  # dataset.<key>=... on top of the run's dataset
                if override.key_or_group.startswith("dataset."):
                    key = override.key_or_group.removeprefix("dataset.")
                    OmegaConf.update(cfg.dataset, key, override.value(), force_add=True)
    check_values(cfg)
    return cfg


def load_dataset(cfg: DictConfig, device: torch.device) -> Dataset:
    return _instantiate(cfg.dataset, "dataset").load().to(device)


def build_from_checkpoint(path: Path, facts: dict[str, Any], info: DatasetInfo) -> nn.Module:
    """The checkpoint's model, rebuilt from its config for `info` and loaded (eval mode); a
    compressed student's int8 model is rebuilt by quantizing and then loading its scales."""
    model_cfg = OmegaConf.create(facts["model_config"])
    model = _instantiate(model_cfg, "the checkpoint's model", **info.model_kwargs())
    if (facts.get("compression") or {}).get("int8"):
        example = torch.zeros(1, info.channels, info.image_size, info.image_size)
        model = quantize_int8(model, [example])  # the calibration is replaced by the file's
        model.load_state_dict(restore_scalars(facts["state_dict"], model))
        return model.eval()
    check_compatible(
        facts["state_dict"], model, "checkpoint", path, f"its model on {info.describe()}"
    )
    model.load_state_dict(facts["state_dict"])
    return model.eval()


def _run_dataset(checkpoint: Path, run_dir: str = "") -> DictConfig | None:
    """The `dataset` section of the run that wrote `checkpoint`, when it can be found."""
    extra = [Path(run_dir) / "config.yaml"] if run_dir else []
    for config in [*_run_configs(checkpoint), *extra]:
        if config.is_file():
            return OmegaConf.load(config).dataset
    return None


def _run_configs(checkpoint: Path) -> list[Path]:
    candidates = [checkpoint.parent / "config.yaml"]  # a run directory's student.pt
    manifest = checkpoint.parent / "manifest.json"  # a cache entry's model.pt
    if manifest.is_file():
        try:
            made_by: Any = json.loads(manifest.read_text()).get("made_by") or {}
            if made_by.get("run_dir"):
                candidates.append(Path(made_by["run_dir"]) / "config.yaml")
        except (OSError, ValueError, AttributeError):
            pass
    return candidates
