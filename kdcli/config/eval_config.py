"""The settings `kd eval CHECKPOINT [overrides]` evaluates with: a dataset, `eval.batch_size`
and the device.

Without a `dataset=` override the checkpoint is evaluated on the dataset it was trained on:
the plain values of the `dataset` section of the config of the run that made it
(`config.yaml` beside a run's `student.pt`, or the run a cache entry's manifest names) in
kdcli's own config for that dataset, else the `dataset` group option of the checkpoint's
dataset name. `dataset.<key>=...` overrides apply on top either way. Nothing a file names is
instantiated (kdcli/config/from_files.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from torch import nn

from kdcli.config.build import instantiate_config
from kdcli.config.checks import parse_overrides, unknown_key_error
from kdcli.config.device import check_device
from kdcli.config.from_files import dataset_config, rebuild_model
from kdcli.config.groups import group_options
from kdcli.config.paths import config_dir
from kdcli.config.values import check_values
from kdcli.data import Dataset, DatasetInfo
from kdcli.engine.compress import quantize_int8
from kdcli.errors import UserError
from kdcli.store.checkpoint import ModelFile, check_compatible, restore_scalars
from kdcli.store.plain import read_json, read_yaml

ALLOWED = ("dataset", "eval.batch_size", "device")


def eval_config(
    checkpoint: Path, overrides: list[str], trained_on: str | None, run_dir: str = ""
) -> DictConfig:
    """The composed config (dataset, eval, device) for evaluating `checkpoint`;
    `trained_on` is the dataset name the checkpoint records, `run_dir` the run that made it
    when known (an exported file's description names it)."""
    parsed = parse_overrides(overrides)
    for override in parsed:
        key = override.key_or_group
        if not any(key == a or key.startswith(f"{a}.") for a in ALLOWED):
            raise UserError(
                f"kd eval {override.input_line}: kd eval takes only dataset=..., "
                "dataset.<key>=..., eval.batch_size=... and device=... (it trains nothing)."
            )
    picks_dataset = any(o.key_or_group == "dataset" for o in parsed)
    run = None if picks_dataset else _run_dataset(checkpoint, run_dir)
    group = []
    if run is not None:
        group = [f"dataset={run[0]}"]
    elif not picks_dataset:
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
            raise unknown_key_error([*group, *overrides], error) from None
    if run is not None:  # the run's values, but where dataset.<key>=... says otherwise
        keys = [o.key_or_group for o in parsed]
        given = {k.split(".")[1] for k in keys if k.startswith("dataset.")}
        for name, value in run[1].items():
            if name not in given:
                cfg.dataset[name] = value
    check_values(cfg)
    check_device(cfg.device)
    return cfg


def load_dataset(cfg: DictConfig, device: torch.device) -> Dataset:
    return instantiate_config(cfg.dataset, "dataset").load().to(device)


def build_from_checkpoint(file: ModelFile, info: DatasetInfo) -> nn.Module:
    """The model file's model, rebuilt from kdcli's config for it (kdcli/config/from_files.py)
    for `info` and loaded (eval mode); a compressed student's int8 model is rebuilt by
    quantizing and then loading its scales."""
    model = rebuild_model(file, info)
    if file.int8:
        example = torch.zeros(1, info.channels, info.image_size, info.image_size)
        model = quantize_int8(model, [example])  # the calibration is replaced by the file's
        try:
            model.load_state_dict(restore_scalars(file.state_dict, model))
        except (RuntimeError, KeyError, ValueError) as error:
            raise UserError(
                f"checkpoint={file.path}: its int8 weights do not fit its model "
                f"({str(error).strip()[:200]}); not a kdcli file, or altered."
            ) from None
        return model.eval()
    check_compatible(
        file.state_dict, model, "checkpoint", file.path, f"its model on {info.describe()}"
    )
    model.load_state_dict(file.state_dict)
    return model.eval()


def _run_dataset(checkpoint: Path, run_dir: str = "") -> tuple[str, DictConfig] | None:
    """The dataset option and values of the run that wrote `checkpoint`, when it can be
    found: its config.yaml's plain values in kdcli's own config (never what the file names)."""
    extra = [Path(run_dir) / "config.yaml"] if run_dir else []
    for config in [*_run_configs(checkpoint), *extra]:
        if config.is_file():
            fix = "Give the dataset on the command line (dataset=... dataset.root=...)."
            run = read_yaml(config, fix)
            if not isinstance(run, dict):
                raise UserError(f"{config} is not a run's config (not a mapping). {fix}")
            return dataset_config(run.get("dataset"), str(config))
    return None


def _run_configs(checkpoint: Path) -> list[Path]:
    candidates = [checkpoint.parent / "config.yaml"]  # a run directory's student.pt
    manifest = checkpoint.parent / "manifest.json"  # a cache entry's model.pt
    if manifest.is_file():
        try:
            made_by = read_json(manifest, "").get("made_by") or {}
            if isinstance(made_by.get("run_dir"), str) and made_by["run_dir"]:
                candidates.append(Path(made_by["run_dir"]) / "config.yaml")
        except (UserError, AttributeError):
            pass  # an unreadable manifest: the cache rebuilds the entry; no run to ask
    return candidates
