"""Models and datasets rebuilt from what a file records, through kdcli's own configs.

A model file records the option of the `model` config group (`model: resnet8x4`) and that
config's plain values; a run's config.yaml holds the dataset's plain values. The object is
built from `configs/<group>/<option>.yaml` with the file's values merged in and checked by
the rules that check command-line values (kdcli/config/values.py). Nothing read from a file is
instantiated: the `_target_` always comes from kdcli's own config, and a file that carries
one (or `_partial_`, `_args_`, an interpolation) is refused (kdcli/store/plain.py).

Files written before the option was recorded (kdcli-model/1, and every run's config.yaml)
name a `_target_`: it is only compared with the targets of kdcli's options to find the option
that builds the same thing, never imported.
"""

from __future__ import annotations

from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kdcli.config.build import instantiate_config
from kdcli.config.endpoint import is_endpoint
from kdcli.config.groups import group_options
from kdcli.config.paths import config_dir
from kdcli.config.values import check_section
from kdcli.data import DatasetInfo
from kdcli.errors import UserError
from kdcli.store.checkpoint import ModelFile
from kdcli.store.plain import plain_data

TARGET = "_target_"


def option_config(group: str, option: str) -> dict[str, Any]:
    """`configs/<group>/<option>.yaml` as written (a model or dataset config: no defaults)."""
    return yaml.safe_load((config_dir() / group / f"{option}.yaml").read_text())


def _interpolated(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def option_for_target(group: str, target: Any, keys: set[str], source: str, key: str) -> str:
    """The option of `group` whose config builds `target` and has every key in `keys` (one
    with exactly those keys first); a UserError naming `source` and `key` (where the file
    holds them) when there is none."""
    fitting = []
    for option in group_options(group):
        config = option_config(group, option)
        if config.get(TARGET) == target and keys <= set(config) - {TARGET}:
            fitting.append((set(config) - {TARGET} != keys, option))
    if not fitting:
        raise UserError(
            f"{source}: {key}._target_={str(target)[:100]!r} with keys {sorted(keys)[:20]} "
            f"is none of kdcli's {group} configs (`kd list {group}`), and kdcli builds "
            "nothing else from a file. Use a file that kdcli wrote, or give "
            f"{group}=... on the command line."
        )
    return min(fitting)[1]


def merged_config(group: str, option: str, values: dict[str, Any], source: str, key: str):
    """`configs/<group>/<option>.yaml` with `values` (read from `source`, where they sit
    under `key`) in place of its own, checked like command-line values."""
    if option not in group_options(group):
        raise UserError(
            f"{source}: {group}={option[:100]!r} is not one of kdcli's {group} configs "
            f"(`kd list {group}`)."
        )
    values = plain_data(values, source, key)
    config = option_config(group, option)
    unknown = sorted(set(values) - set(config) - {TARGET})
    if unknown:
        raise UserError(
            f"{source}: {key}.{unknown[0][:100]} is not a setting of {group}={option}; "
            "the file was not written by this kdcli (or was altered)."
        )
    merged = {}
    for name, default in config.items():
        if name != TARGET and name in values:
            merged[name] = values[name]
        elif _interpolated(default):  # set from another key at run time: the file must say
            raise UserError(f"{source}: {key}.{name} is missing; not a complete kdcli file.")
        else:
            merged[name] = default
    node = OmegaConf.create({key: merged})
    try:
        check_section(node, key)
    except UserError as error:
        raise UserError(f"{source}: {error}") from None
    return node[key]


def model_option(file: ModelFile) -> str:
    """The `model` config a model file's weights belong to (found by its `_target_` in a
    kdcli-model/1 file)."""
    if file.option is not None:
        return file.option
    source = f"checkpoint={file.path}"
    return option_for_target("model", file.target, set(file.values), source, "model_config")


def rebuild_model(file: ModelFile, info: DatasetInfo) -> nn.Module:
    """The model a kdcli model file's weights belong to, built from kdcli's config for it
    (not loaded: the caller loads the weights)."""
    source = f"checkpoint={file.path}"
    option = model_option(file)
    node = merged_config("model", option, file.values, source, "model_config")
    if "pretrained" in node:
        node.pretrained = False  # the file's weights replace any; nothing is downloaded
    return instantiate_config(node, f"{source}: model={option}", **info.model_kwargs())


def model_record(cfg: DictConfig, role: str) -> dict[str, Any]:
    """What a model file records of how `cfg[role].model` was built: its `model` option and
    plain values (no `_target_`). The option is None when the config builds something none
    of kdcli's model configs builds (a `_target_` overridden on the command line): kd eval
    then refuses the file rather than guess."""
    if role == "teacher" and is_endpoint(cfg):  # a server's model: no file records it
        return {"model": None, "model_config": {}}
    values = OmegaConf.to_container(cfg[role].model, resolve=True)
    assert isinstance(values, dict)
    target = values.pop(TARGET, None)
    option = None
    if HydraConfig.initialized():
        option = HydraConfig.get().runtime.choices.get(f"model@{role}.model")
    if option is None:  # built outside `kd train` (tests, scripts): the option that fits
        try:
            option = option_for_target("model", target, {str(k) for k in values}, role, role)
        except UserError:
            return {"model": None, "model_config": values}
    if option_config("model", option).get(TARGET) != target:
        option = None
    return {"model": option, "model_config": values}


def dataset_config(values: Any, source: str) -> tuple[str, DictConfig]:
    """The `dataset` config rebuilt from a file's plain `dataset` section (a run's
    config.yaml): the option that builds its `_target_`, and that config with its values."""
    if not isinstance(values, dict):
        raise UserError(f"{source}: dataset is not a mapping; not a kdcli run's config.")
    values = dict(values)
    target = values.pop(TARGET, None)
    option = option_for_target("dataset", target, set(values), source, "dataset")
    return option, merged_config("dataset", option, values, source, "dataset")
