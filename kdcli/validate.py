"""Checks that run before any work and before Hydra writes anything.

`check_overrides` composes the config for every point of the command line (each sweep point
with -m) and turns Hydra's composition errors and our own range checks into `UserError`s
that name the key and the fix. A run that fails here has written nothing.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException, InstantiationException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from kdcli.errors import UserError
from kdcli.paths import config_dir

MAX_CHECKED_POINTS = 256  # a larger sweep has its first points checked in full
_ABSENT = object()


def group_options(group: str) -> list[str]:
    """The option names of a config group (the YAML files in its directory)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def is_group(name: str) -> bool:
    return (config_dir() / name).is_dir() and not name.startswith("hydra")


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(close)}?" if close else ""


def _choices(override: Override) -> list[str]:
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()]
    return [str(override.value())]


def check_group_choices(overrides: list[Override]) -> None:
    """Every `group=option` names an existing option (with close matches when not)."""
    for override in overrides:
        group = override.key_or_group
        if not is_group(group) or override.is_delete():
            continue
        options = group_options(group)
        for choice in _choices(override):
            if choice not in options:
                raise UserError(
                    f"{group}={choice}: there is no '{choice}' in config group '{group}'."
                    f"{_did_you_mean(choice, options)} Options: {', '.join(options)} "
                    f"(`kd list {group}`)."
                )


SUBMITIT_LAUNCHERS = ("slurm", "submitit_slurm", "submitit_local")


def submitit_installed() -> bool:
    try:
        return importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
    except ModuleNotFoundError:  # no hydra_plugins package at all
        return False


def check_launcher(overrides: list[Override]) -> None:
    """`hydra/launcher=slurm` needs the optional hydra-submitit-launcher plugin."""
    for override in overrides:
        if override.key_or_group != "hydra/launcher" or override.is_delete():
            continue
        wanted = [c for c in _choices(override) if c in SUBMITIT_LAUNCHERS]
        if wanted and not submitit_installed():
            raise UserError(
                f"hydra/launcher={wanted[0]} needs the hydra-submitit-launcher plugin, which is "
                "not installed; install it with `pip install kdcli[slurm]` "
                "(or `pip install hydra-submitit-launcher`)."
            )


def sweep_points(overrides: list[Override], multirun: bool) -> list[list[str]]:
    """The override lists of every job the command line asks for (one without -m)."""
    sweeps = [o for o in overrides if o.is_sweep_override()]
    if sweeps and not multirun:
        names = ", ".join(o.input_line for o in sweeps)
        raise UserError(f"{names} gives several values: add -m (multirun) to sweep over them.")
    if not sweeps:
        return [[o.input_line for o in overrides]]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    batches = BasicSweeper.split_arguments(overrides, None)
    return [point for batch in batches for point in batch]


def flat_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a config, leaves and inner nodes, without resolving anything."""
    if isinstance(node, DictConfig):
        for key in node:
            path = f"{prefix}{key}"
            yield path
            yield from flat_keys(node._get_node(key), path + ".")


def _unknown_key_error(point: list[str], error: Exception) -> UserError:
    """Explain a composition error caused by overriding a key that does not exist."""
    parser = OverridesParser.create()
    overrides = parser.parse_overrides(point)
    groups_only = [o.input_line for o in overrides if is_group(o.key_or_group)]
    try:
        base = compose("train", overrides=groups_only)
    except HydraException:
        return UserError(_first_line(error))
    known = [k for k in flat_keys(base)]
    for override in overrides:
        key = override.key_or_group
        if override.type != OverrideType.CHANGE or is_group(key) or key.startswith("hydra"):
            continue
        if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
            return UserError(
                f"{key}: no such config key.{_did_you_mean(key, known)} `kd train --cfg job` "
                f"shows every key; to add a new one write +{override.input_line}."
            )
    return UserError(_first_line(error))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_overrides(overrides: list[str], multirun: bool = False) -> list[DictConfig]:
    """Compose and check the config of every job the command line asks for."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        raise UserError(f"could not parse the overrides: {_first_line(error)}") from None
    check_group_choices(parsed)
    check_launcher(parsed)
    points = sweep_points(parsed, multirun)
    configs = []
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="train"):
        for point in points[:MAX_CHECKED_POINTS]:
            try:
                cfg = compose("train", overrides=point)
            except HydraException as error:
                raise _unknown_key_error(point, error) from None
            check_config(cfg)
            configs.append(cfg)
    return configs


# ---- the config's values -------------------------------------------------------------------


def _number(cfg: DictConfig, key: str) -> float:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key}={value!r} must be a number.")
    return float(value)


def _integer_at_least(cfg: DictConfig, key: str, minimum: int) -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(
            f"{key}={value!r} must be a whole number >= {minimum} (e.g. {key}={max(minimum, 10)})."
        )


def check_config(cfg: DictConfig) -> None:
    """Range and file checks on one composed config."""
    if "alpha" in cfg.loss and not 0.0 <= _number(cfg, "loss.alpha") <= 1.0:
        raise UserError(f"loss.alpha={cfg.loss.alpha} must lie in [0, 1] (e.g. loss.alpha=0.9).")
    if "temperature" in cfg.loss and _number(cfg, "loss.temperature") <= 0:
        raise UserError(
            f"loss.temperature={cfg.loss.temperature} must be > 0 (e.g. loss.temperature=4)."
        )
    for key in ("teacher.epochs", "student.epochs"):
        _integer_at_least(cfg, key, 1)
    for key in ("teacher.batch_size", "student.batch_size", "eval.batch_size"):
        _integer_at_least(cfg, key, 1)
    _check_shardable(cfg)
    _integer_at_least(cfg, "eval.latency_runs", 1)
    _integer_at_least(cfg, "seed", 0)
    if cfg.device.type not in ("auto", "cpu", "cuda"):
        raise UserError(f"device.type={cfg.device.type!r} must be auto, cpu or cuda.")
    if cfg.device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible; use device=auto or device=cpu.")
    if cfg.soft_labels.mode != "static":
        raise UserError(f"soft_labels.mode={cfg.soft_labels.mode!r}: only 'static' is available.")
    if cfg.soft_labels.dtype not in ("float16", "float32"):
        raise UserError(f"soft_labels.dtype={cfg.soft_labels.dtype!r} must be float16 or float32.")
    _check_buildable(cfg)


def _check_shardable(cfg: DictConfig) -> None:
    """Under torchrun each of N processes takes batch_size / N samples of every batch."""
    from kdcli.distributed import env_world_size

    processes = env_world_size()
    for key in ("teacher.batch_size", "student.batch_size"):
        size = OmegaConf.select(cfg, key)
        if size % processes:
            fits = -(-size // processes) * processes
            raise UserError(
                f"{key}={size} is the global batch, split over {processes} torchrun processes, "
                f"so it must be a multiple of {processes} (e.g. {key}={fits})."
            )


def _instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """Instantiate a config node, reporting a bad argument as the key's fault."""
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        cause = error.__cause__ or error
        raise UserError(f"{key} could not be built: {_first_line(cause)}") from None


def _check_buildable(cfg: DictConfig) -> None:
    """The dataset, loss and models build, and a teacher checkpoint fits its model."""
    from kdcli.checkpoint import check_compatible, read_state_dict
    from kdcli.pipeline import describe_model

    source = _instantiate(cfg.dataset, "dataset")
    if hasattr(source, "check"):
        source.check()
    info = source.info
    _instantiate(cfg.loss, "loss")
    with torch.device("meta"):
        models = {
            role: _instantiate(cfg[role].model, f"{role}.model", **info.model_kwargs())
            for role in ("teacher", "student")
        }
    if cfg.teacher.checkpoint:
        path = Path(cfg.teacher.checkpoint).expanduser()
        state_dict = read_state_dict(path, "teacher.checkpoint")
        check_compatible(
            state_dict,
            models["teacher"],
            "teacher.checkpoint",
            path,
            describe_model(cfg.teacher, info),
        )
