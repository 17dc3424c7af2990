"""Checks that run before any work and before Hydra writes anything.

`check_overrides` composes the config for every point of the command line (each sweep point
with -m) and turns Hydra's composition errors and our own range checks into `UserError`s
that name the key and the fix. A run that fails here has written nothing.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException, InstantiationException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from kdcli.data import DatasetInfo
from kdcli.errors import UserError, did_you_mean
from kdcli.paths import config_dir

log = logging.getLogger(__name__)

MAX_CHECKED_POINTS = 256  # a larger sweep has its first points checked in full
_ABSENT = object()


def group_options(group: str) -> list[str]:
    """The option names of a config group (the YAML files in its directory)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def is_group(name: str) -> bool:
    return (config_dir() / name).is_dir() and not name.startswith("hydra")


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
                    f"{did_you_mean(choice, options)} Options: {', '.join(options)} "
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
                f"{key}: no such config key.{did_you_mean(key, known)} `kd train --cfg job` "
                f"shows every key; to add a new one write +{override.input_line}."
            )
    return UserError(_first_line(error))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_overrides(
    overrides: list[str], multirun: bool = False, values: bool = True
) -> list[DictConfig]:
    """Compose and check the config of every job the command line asks for.

    `values=False` checks only that the configs compose (group options and keys exist), for
    commands that print a config instead of running it (`kd train --cfg job`).
    """
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        raise UserError(f"could not parse the overrides: {_first_line(error)}") from None
    check_group_choices(parsed)
    check_launcher(parsed)
    points = sweep_points(parsed, multirun)
    configs = []
    datasets: dict[str, DatasetInfo] = {}  # a sweep's points mostly share one dataset
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="train"):
        for point in points[:MAX_CHECKED_POINTS]:
            try:
                cfg = compose("train", overrides=point)
            except HydraException as error:
                raise _unknown_key_error(point, error) from None
            if values:
                check_config(cfg, datasets)
            configs.append(cfg)
    return configs


# ---- the config's values -------------------------------------------------------------------


def _number(cfg: DictConfig, key: str, name: str | None = None) -> float:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name or key}={value!r} must be a number.")
    return float(value)


def _integer_at_least(cfg: DictConfig, key: str, minimum: int) -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(
            f"{key}={value!r} must be a whole number >= {minimum} (e.g. {key}={max(minimum, 10)})."
        )


def _loss_parameter(key: str) -> str:
    """The loss parameter a key sets: `loss.alpha` and `loss.schedule.alpha.start` set alpha."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[-3] == "schedule" and parts[-1] in ("start", "end"):
        return parts[-2]
    return parts[-1]


def check_loss_values(loss: DictConfig) -> None:
    """Every alpha in [0, 1] and every temperature > 0, also inside combos and schedules."""
    for key in flat_keys(loss, "loss."):
        value = OmegaConf.select(loss, key.removeprefix("loss."))
        if value is None or isinstance(value, DictConfig):
            continue
        parameter = _loss_parameter(key)
        if parameter == "alpha":
            number = _number(loss, key.removeprefix("loss."), key)
            if not 0.0 <= number <= 1.0:
                raise UserError(f"{key}={value} must lie in [0, 1] (e.g. {key}=0.9).")
        elif parameter == "temperature" and _number(loss, key.removeprefix("loss."), key) <= 0:
            raise UserError(f"{key}={value} must be > 0 (e.g. {key}=4).")


def check_config(cfg: DictConfig, datasets: dict[str, DatasetInfo] | None = None) -> None:
    """Range and file checks on one composed config (`datasets`: those already checked)."""
    check_loss_values(cfg.loss)
    for key in ("teacher.epochs", "student.epochs"):
        _integer_at_least(cfg, key, 1)
    for key in ("teacher.batch_size", "student.batch_size", "eval.batch_size"):
        _integer_at_least(cfg, key, 1)
    _check_shardable(cfg)
    _integer_at_least(cfg, "eval.latency_runs", 1)
    _integer_at_least(cfg, "seed", 0)
    _check_min_top1(cfg)
    if cfg.device.type not in ("auto", "cpu", "cuda"):
        raise UserError(f"device.type={cfg.device.type!r} must be auto, cpu or cuda.")
    if cfg.device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible; use device=auto or device=cpu.")
    if cfg.soft_labels.mode not in ("auto", "static", "views", "online"):
        raise UserError(
            f"soft_labels.mode={cfg.soft_labels.mode!r} must be auto, static, views or online."
        )
    if _number(cfg, "soft_labels.max_gb") <= 0:
        raise UserError(f"soft_labels.max_gb={cfg.soft_labels.max_gb} must be > 0 (e.g. 2).")
    if cfg.soft_labels.topk is not None:
        _integer_at_least(cfg, "soft_labels.topk", 1)
    if cfg.soft_labels.dtype not in ("float16", "float32"):
        raise UserError(f"soft_labels.dtype={cfg.soft_labels.dtype!r} must be float16 or float32.")
    if cfg.soft_labels.features not in ("auto", "stored", "online"):
        raise UserError(
            f"soft_labels.features={cfg.soft_labels.features!r} must be auto, stored or online."
        )
    if _number(cfg, "soft_labels.feature_budget_mb") < 0:
        raise UserError("soft_labels.feature_budget_mb must be >= 0 (e.g. 512).")
    for role in ("teacher", "student"):
        _check_model_choice(cfg, role)
    _check_buildable(cfg, {} if datasets is None else datasets)


def _check_min_top1(cfg: DictConfig) -> None:
    """`teacher.min_top1` is null or a fraction (0.97, not 97)."""
    value = OmegaConf.select(cfg, "teacher.min_top1")
    if value is not None and not 0.0 <= _number(cfg, "teacher.min_top1") <= 1.0:
        raise UserError(
            f"teacher.min_top1={value} must lie in [0, 1]: a fraction of the split, e.g. "
            "teacher.min_top1=0.97 for 97%, or null to accept any teacher."
        )


def _check_model_choice(cfg: DictConfig, role: str) -> None:
    """A model picked by name has its name, and `pretrained` is asked only where it exists."""
    if OmegaConf.is_missing(cfg[role], "name"):
        raise UserError(
            f"{role}.name is not set: {role}=torchvision needs a torchvision classifier, "
            f"e.g. {role}.name=efficientnet_b0."
        )
    if cfg[role].get("pretrained") and "pretrained" not in cfg[role].model:
        raise UserError(
            f"{role}.pretrained=true: {role}={cfg[role].name} has no pretrained weights; "
            f"torchvision models do (e.g. {role}=resnet18, or {role}=torchvision "
            f"{role}.name=efficientnet_b0)."
        )


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


def _dataset_info(node: DictConfig, checked: dict[str, DatasetInfo]) -> DatasetInfo:
    """Build the dataset source and run its file checks, once per distinct dataset config."""
    missing = sorted(k for k in node if OmegaConf.is_missing(node, k))
    if missing:
        keys = " ".join(f"dataset.{k}=..." for k in missing)
        raise UserError(f"this dataset needs {keys} on the command line (`kd train {keys}`).")
    key = OmegaConf.to_yaml(node, resolve=True)
    if key not in checked:
        source = _instantiate(node, "dataset")
        if hasattr(source, "check"):
            source.check()
        checked[key] = source.info
    return checked[key]


def _build_on_meta(cfg: DictConfig, role: str, dataset_kwargs: dict[str, int]) -> torch.nn.Module:
    """Build `cfg[role].model` without allocating weights; errors name the role and model."""
    try:
        with torch.device("meta"):
            return _instantiate(cfg[role].model, f"{role}.model", **dataset_kwargs)
    except UserError as error:
        raise UserError(f"{role}={cfg[role].name}: {error}") from None


def _check_buildable(cfg: DictConfig, datasets: dict[str, DatasetInfo]) -> None:
    """The dataset, loss and models build, and a teacher checkpoint fits its model."""
    from kdcli.checkpoint import check_compatible, read_state_dict
    from kdcli.pipeline import describe_model

    info = _dataset_info(cfg.dataset, datasets)
    loss = _instantiate(cfg.loss, "loss")
    models = {
        role: _build_on_meta(cfg, role, info.model_kwargs()) for role in ("teacher", "student")
    }
    if loss.uses_features:
        check_layers(cfg, loss, models)
        check_layer_shapes(loss, models, info)
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


def check_layers(cfg: DictConfig, loss: Any, models: dict[str, Any]) -> None:
    """The layer paths a feature loss names exist in the student and the teacher."""
    for role, paths in (("student", loss.student_layers), ("teacher", loss.teacher_layers)):
        names = [name for name, _ in models[role].named_modules() if name]
        for path in paths:
            if path not in names:
                raise UserError(
                    f"{_layer_key(cfg.loss, role, path)}={path!r}: the {role} "
                    f"({cfg[role].name}) has no layer '{path}'.{did_you_mean(path, names)} "
                    f"`kd list {role} --layers {cfg[role].name}` shows the layers that can be "
                    "tapped."
                )


def _layer_key(loss: DictConfig, role: str, path: str) -> str:
    """The config key that names `path` for `role` (e.g. loss.terms.fitnet.student_layer)."""
    for key in flat_keys(loss, "loss."):
        if not key.rsplit(".", 1)[-1].startswith(f"{role}_layer"):
            continue
        value = OmegaConf.select(loss, key.removeprefix("loss."))
        if value == path or (not isinstance(value, str) and path in list(value or [])):
            return key
    return f"loss.{role}_layers"


def check_layer_shapes(loss: Any, models: dict[str, Any], info: Any) -> None:
    """Let a feature loss check the shapes of its layers (e.g. AT needs [C, H, W] maps), from
    a forward pass of meta tensors. A model that cannot run on the meta device is checked
    later, with real tensors, before the student trains."""
    from kdcli.knowledge import feature_shapes

    example = torch.empty(2, info.channels, info.image_size, info.image_size, device="meta")
    try:
        shapes = {
            role: feature_shapes(models[role], getattr(loss, f"{role}_layers"), example)
            for role in ("student", "teacher")
        }
    except (NotImplementedError, RuntimeError) as error:
        log.debug("layer shapes not checked on the meta device: %s", error)
        return
    loss.build(shapes["student"], shapes["teacher"])
