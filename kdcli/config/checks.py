"""Pre-flight checks on the config tree, before any work and before Hydra writes anything.

`check_overrides` composes the config for every point of the command line (each sweep point
with -m) and turns Hydra's composition errors and our own range checks into `UserError`s
that name the key and the fix. A run that fails here has written nothing. What needs built
objects (dataset files, layer paths, checkpoint fit) is checked by the pipeline when it
builds them, still before any training (kdcli/config/objects.py).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from kdcli.config import resolvers, search_space
from kdcli.config.build import training_recipe
from kdcli.config.device import check_device, check_shardable, resolve_device
from kdcli.config.endpoint import check_endpoint_config
from kdcli.config.groups import group_options, is_group
from kdcli.config.hydra_shim import split_sweep
from kdcli.config.loggers import check_logger
from kdcli.config.modality import check_modalities, modality
from kdcli.config.paths import config_dir
from kdcli.config.tokenizers import check_tokenizers
from kdcli.config.values import check_values, unresolvable
from kdcli.config.writable import check_writable_dir
from kdcli.engine.precision import CHOICES as PRECISIONS
from kdcli.errors import UserError, did_you_mean, first_line
from kdcli.knowledge.mode import soft_label_mode
from kdcli.pipeline.soft_labels import on_policy

log = logging.getLogger(__name__)

MAX_CHECKED_POINTS = 256  # a larger sweep has its first points checked in full
LONGEST_KEY = 200  # characters; kdcli's longest key has under 60
_ABSENT = object()


def _choices(override: Override) -> list[str]:
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()]
    return [str(override.value())]


def parse_overrides(overrides: list[str]) -> list[Override]:
    """`key=value` strings parsed by Hydra's grammar, keys no longer than any real one (Hydra
    looks for every key as a config group folder, and a key longer than a file name may be
    makes that look-up fail with an OSError)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        raise UserError(f"could not parse the overrides: {first_line(error)}") from None
    for override in parsed:
        key = override.key_or_group
        if len(key) > LONGEST_KEY:
            raise UserError(
                f"{key}: no setting has a name that long ({len(key)} characters; the longest "
                f"takes {LONGEST_KEY}); `kd train --cfg job` shows every key."
            )
    return parsed


def _line(override: Override) -> str:
    """The override as written (Hydra's parser records it on each override it parses)."""
    return override.input_line or ""


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
    if search_space.is_search(overrides):  # its bounds and choices (search_space.py)
        if not multirun:
            raise UserError("hydra/sweeper=optuna runs a search: add -m (multirun).")
        return search_space.check_points(search_space.space_of(overrides))
    if sweeps and not multirun:
        names = ", ".join(_line(o) for o in sweeps)
        raise UserError(f"{names} gives several values: add -m (multirun) to sweep over them.")
    if not sweeps:
        return [[_line(o) for o in overrides]]
    return split_sweep(overrides)


def flat_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a config, leaves and inner nodes, without resolving anything."""
    if isinstance(node, DictConfig):
        for key in node:
            path = f"{prefix}{key!s}"
            yield path
            yield from flat_keys(node._get_node(key), path + ".")


# keys that were replaced, and what to write instead
RENAMED = {
    "epoch_checkpoints": "use checkpoint.save (true or false) instead; the state now lives in "
    "the cache, so the same command resumes from any run directory.",
    "device.amp": "use precision=fp32 for what device.amp=false did, precision=bf16 (or the "
    "default precision=auto) for device.amp=true.",
}


def unknown_key_error(point: list[str], error: Exception) -> UserError:
    """Explain a composition error caused by overriding a key that does not exist."""
    parser = OverridesParser.create()
    overrides = parser.parse_overrides(point)
    groups_only = [_line(o) for o in overrides if is_group(o.key_or_group)]
    try:
        base = compose("train", overrides=groups_only)
    except HydraException:
        return UserError(first_line(error))
    known = [k for k in flat_keys(base)]
    for override in overrides:
        key = override.key_or_group
        if override.type != OverrideType.CHANGE or is_group(key) or key.startswith("hydra"):
            continue
        if key in RENAMED:
            return UserError(f"{key} is no longer a setting: {RENAMED[key]}")
        parent, _, name = key.rpartition(".")
        if parent and OmegaConf.select(base, parent, default=_ABSENT) is None:
            return UserError(
                f"{key}: {parent} is null by default, and holds only the keys it is given: "
                f"give it whole, {parent}={{{name}:...}} with its other keys, or add this one "
                f"with +{override.input_line}."
            )
        if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
            return UserError(
                f"{key}: no such config key.{did_you_mean(key, known)} `kd train --cfg job` "
                f"shows every key; to add a new one write +{override.input_line}."
            )
    return UserError(first_line(error))


def check_overrides(
    overrides: list[str], multirun: bool = False, values: bool = True
) -> list[DictConfig]:
    """Compose and check the config of every job the command line asks for.

    `values=False` checks only that the configs compose (group options and keys exist), for
    commands that print a config instead of running it (`kd train --cfg job`).
    """
    parsed = parse_overrides(overrides)
    check_group_choices(parsed)
    check_launcher(parsed)
    points = sweep_points(parsed, multirun)
    search = search_space.is_search(parsed)
    resolvers.register()  # the run directories' ${kd.slurm_tag:}
    configs = []
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="train"):
        if search:
            points = search_space.search_points(parsed)
        for point in points[:MAX_CHECKED_POINTS]:
            try:
                cfg = compose("train", overrides=point, return_hydra_config=True)
            except HydraException as error:
                raise unknown_key_error(point, error) from None
            if values:
                key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
                example = "outputs/sweep1" if multirun else "outputs/run1"
                check_writable_dir(key, resolved(cfg, key), example)
            choices = dict(cfg.hydra.runtime.choices)
            with open_dict(cfg):
                del cfg["hydra"]  # the job's config, as the job sees it
            if values:
                check_modalities(cfg, choices)
                try:
                    check_config(cfg)
                except UserError as error:
                    raise search_space.hint(error) if search else error from None
                if search:
                    search_space.check_validation(OmegaConf.select(cfg, "dataset.val_fraction"))
            configs.append(cfg)
    return configs


def resolved(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key)
    except OmegaConfBaseException as error:
        raise unresolvable(key, error) from None


# ---- the config's values -------------------------------------------------------------------


def _language_model(cfg: DictConfig) -> bool:
    return modality(cfg.task) == "text"


def _check_soft_label_mode(cfg: DictConfig) -> None:
    """What the config alone tells of `soft_labels.mode` and on-policy distillation goes through
    the one decision the soft-label stage takes (kdcli/knowledge/mode.py)."""
    soft_label_mode(
        cfg.soft_labels.mode, language_model=_language_model(cfg), on_policy=on_policy(cfg)
    )


def _number(cfg: DictConfig, key: str, name: str | None = None) -> float:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name or key}={value!r} must be a number.")
    return float(value)


def check_config(cfg: DictConfig) -> None:
    """Range checks on one composed config tree (built objects are checked by the pipeline)."""
    for role in ("teacher", "student"):
        _check_model_choice(cfg, role)
    _check_dataset_keys(cfg.dataset)
    check_values(cfg)  # every interpolation resolves; the numbers that reach a constructor
    check_endpoint_config(cfg)
    check_shardable(cfg)
    _check_min_top1(cfg)
    check_device(cfg.device)
    _check_precision(cfg)
    check_logger(cfg)
    _check_compress(cfg)
    _check_soft_label_mode(cfg)
    check_tokenizers(cfg, _language_model(cfg))
    if cfg.soft_labels.dtype not in ("float16", "float32"):
        raise UserError(f"soft_labels.dtype={cfg.soft_labels.dtype!r} must be float16 or float32.")
    if cfg.soft_labels.features not in ("auto", "stored", "online"):
        raise UserError(
            f"soft_labels.features={cfg.soft_labels.features!r} must be auto, stored or online."
        )
    for role in ("teacher", "student"):
        check_training(cfg, role)
    check_writable_dir("cache_dir", cfg.cache_dir, "outputs/cache")
    if cfg.teacher.checkpoint and not _is_file(Path(str(cfg.teacher.checkpoint)).expanduser()):
        raise UserError(
            f"teacher.checkpoint={cfg.teacher.checkpoint}: no such file. Give the path of a "
            "checkpoint file."
        )


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def check_training(cfg: DictConfig, role: str) -> None:
    """The stage's optimizer and scheduler build, on one stand-in parameter: what the rules of
    values.py cannot see (nesterov without momentum, an argument the class does not take)."""
    import torch

    from kdcli.engine.loop import build_scheduler

    recipe = training_recipe(cfg[role], role)
    part = "optimizer"
    try:
        optimizer = recipe.optimizer([torch.nn.Parameter(torch.zeros(1))])
        part = "scheduler"
        build_scheduler(recipe.scheduler, optimizer, steps_per_epoch=1)
    except Exception as error:  # whatever the constructor refuses is this key's fault
        raise UserError(
            f"{role}.{part} could not be built: {first_line(error)} (`kd train --cfg job` "
            f"shows {role}.{part}'s keys)."
        ) from None


def _check_precision(cfg: DictConfig) -> None:
    """`precision` is one of engine/precision.py's choices; fp16 needs a CUDA device."""
    if cfg.precision not in PRECISIONS:
        raise UserError(f"precision={cfg.precision!r} must be one of {', '.join(PRECISIONS)}.")
    if not isinstance(cfg.compile, bool):
        raise UserError(f"compile={cfg.compile!r} must be true or false.")
    if cfg.channels_last not in ("auto", True, False):
        raise UserError(f"channels_last={cfg.channels_last!r} must be auto, true or false.")
    if cfg.precision == "fp16" and resolve_device(cfg.device).type != "cuda":
        raise UserError(
            "precision=fp16 needs a CUDA GPU (fp16 autocast with a gradient scaler) and this run "
            "is on the CPU; use precision=bf16 (or precision=auto, which picks bf16 where the "
            "CPU runs it natively) or precision=fp32."
        )


def _check_compress(cfg: DictConfig) -> None:
    """The fine-tune replays the student's epochs' soft labels, so it cannot run longer."""
    epochs = OmegaConf.select(cfg, "compress.epochs", default=0) or 0
    if isinstance(epochs, int) and epochs > cfg.student.epochs:
        raise UserError(
            f"compress.epochs={epochs} is more than student.epochs={cfg.student.epochs}: the "
            "fine-tune reuses the student's soft labels epoch by epoch; lower compress.epochs."
        )
    _check_lora(cfg, epochs)


def _check_lora(cfg: DictConfig, epochs: int) -> None:
    """LoRA (student.lora) needs peft, and no pruning fine-tune (of every weight) after it."""
    if cfg.student.get("lora") and epochs and OmegaConf.select(cfg, "compress.amount"):
        raise UserError(
            "student.lora with a pruning fine-tune (compress.amount > 0, compress.epochs > 0): "
            "a merged LoRA update is dense, so adapters would undo the pruning, and a fine-tune "
            "of every weight is what LoRA avoids. Use compress=int8, or compress.epochs=0."
        )
    if cfg.student.get("lora") and importlib.util.find_spec("peft") is None:
        raise UserError(
            "student.lora needs the peft package, which is not installed: "
            "`pip install kdcli[lora]` (or `pip install peft`)."
        )


def _check_min_top1(cfg: DictConfig) -> None:
    """`teacher.min_top1` is null or a fraction (0.97, not 97)."""
    value = OmegaConf.select(cfg, "teacher.min_top1")
    if value is not None and not 0.0 <= _number(cfg, "teacher.min_top1") <= 1.0:
        raise UserError(
            f"teacher.min_top1={value} must lie in [0, 1]: a fraction of the split, e.g. "
            "teacher.min_top1=0.97 for 97%, or null to accept any teacher."
        )


def _check_model_choice(cfg: DictConfig, role: str) -> None:
    """A model picked by name has its name, one read from a directory its path, and
    `pretrained` is asked only where it exists."""
    if OmegaConf.is_missing(cfg[role], "name"):
        raise UserError(
            f"{role}.name is not set: {role}=torchvision needs a torchvision classifier, "
            f"e.g. {role}.name=efficientnet_b0."
        )
    if OmegaConf.is_missing(cfg[role], "path"):  # False where there is no such key
        raise UserError(
            f"{role}.path is not set: {role}={cfg[role].name} reads a model from a directory "
            f"that save_pretrained() wrote, e.g. {role}.path=~/models/gpt2 (never downloaded)."
        )
    if cfg[role].get("pretrained") and "pretrained" not in cfg[role].model:
        raise UserError(
            f"{role}.pretrained=true: {role}={cfg[role].name} has no pretrained weights; "
            f"torchvision models do (e.g. {role}=resnet18, or {role}=torchvision "
            f"{role}.name=efficientnet_b0)."
        )


def _check_dataset_keys(node: DictConfig) -> None:
    """The dataset keys that must be given on the command line are (`dataset.root`)."""
    missing = sorted(str(k) for k in node if OmegaConf.is_missing(node, k))
    if missing:
        keys = " ".join(f"dataset.{k}=..." for k in missing)
        raise UserError(f"this dataset needs {keys} on the command line (`kd train {keys}`).")
