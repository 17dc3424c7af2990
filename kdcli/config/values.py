"""The rules for the numeric settings that reach a constructor (an optimizer, a scheduler, a
model, a dataset, the loss) or the loop, and for the model names that name cache files,
checked on the composed tree before anything runs.

One table by leaf name, applied to every leaf of that name under the SECTIONS (so a key that a
new optimizer, scheduler or model config shares with the others is checked with no new code),
one by loss parameter (LOSS: also in a combo's terms and at a schedule's ends), and one by full
key for the settings of the run itself. Values are resolved first, so an interpolation
(`${...}`) is checked as what it stands for. A value that breaks a rule is a
`UserError` naming the full key, the value, what is accepted and an example.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kdcli.config.specs import (
    ANY_NUMBER,
    SEED,
    Rule,
    choice,
    file_name,
    increasing,
    number,
    numbers,
    rule_of,
    some_of,
    whole,
    whole_lists,
)
from kdcli.data.drills import KINDS as DRILL_KINDS
from kdcli.engine.distributed import STRATEGIES
from kdcli.errors import UserError, did_you_mean, first_line

SECTIONS = (
    "teacher.optimizer",
    "teacher.scheduler",
    "teacher.model",
    "student.optimizer",
    "student.scheduler",
    "student.model",
    "dataset",
)


POSITIVE_WHOLE = (
    "width",
    "depth",
    "widen_factor",
    "groups",
    "final_channels",
    "expansion",
    "layers",
    "heads",
    "block_size",
)
POSITIVE_LISTS = ("hidden", "widths", "blocks", "stage_channels", "stage_units")

# leaf name -> rule, for every leaf of that name under SECTIONS
BY_NAME: dict[str, Rule] = {
    # optimizers
    "lr": rule_of(number(0, low_in=False), "0.05"),
    "momentum": rule_of(number(0, 1), "0.9"),
    "dampening": rule_of(number(0, 1, high_in=True), "0"),
    "weight_decay": rule_of(number(0), "5e-4"),
    "eps": rule_of(number(0, low_in=False), "1e-8"),
    "betas": rule_of(numbers(2, number(0, 1)), "[0.9,0.999]"),
    # schedulers
    "milestones": rule_of(increasing(0), "[150,180,210]"),
    "gamma": rule_of(number(0, low_in=False), "0.1"),
    "warmup_epochs": rule_of(number(0), "2"),
    "epochs": rule_of(whole(1), "10"),
    "T_max": rule_of(whole(1), "10"),
    "eta_min": rule_of(number(0), "0"),
    "factor": rule_of(number(0, 1, high_in=True), "1.0"),
    "total_iters": rule_of(whole(0), "0"),
    "step_size": rule_of(whole(1), "30"),
    # models
    **{name: rule_of(whole(1), "16") for name in POSITIVE_WHOLE},
    **{name: rule_of(whole_lists(1), "[64,128]") for name in POSITIVE_LISTS},
    "width_mult": rule_of(number(0, low_in=False), "0.5"),
    "dropout": rule_of(number(0, 1), "0.1"),
    "bn_momentum": rule_of(choice(None, otherwise=number(0, 1, high_in=True)), "0.1"),
    "stem_stride": rule_of(choice(None, otherwise=whole(1)), "1"),
    # datasets
    "val_fraction": rule_of(number(0, 1), "0.1"),
    "noise": rule_of(number(0, 1), "0.25"),
    "negation": rule_of(number(0, 1, high_in=True), "0.3"),
    "count": rule_of(whole(30), "8000"),
    "letters": rule_of(whole(3), "6"),
    "digits": rule_of(whole(1), "3"),
    "max_length": rule_of(whole(2), "256"),
    "kinds": rule_of(some_of(DRILL_KINDS), "[rev,sort]"),
    "seed": rule_of(SEED, "0"),
    "test_fraction": rule_of(number(0, 1, low_in=False), "0.2"),
    "max_shift": rule_of(whole(0), "2"),
    "split_seed": rule_of(SEED, "0"),
    "windows": rule_of(choice("tokens", "characters"), "characters"),
    "max_chars": rule_of(choice(None, otherwise=whole(100)), "100000"),
    "image_size": rule_of(whole(8), "64"),
    "workers": rule_of(whole(0), "4"),
    "stats_images": rule_of(whole(1), "256"),
    "max_pixels": rule_of(whole(1, 2 * 89_478_485), "89478485"),  # Pillow refuses more itself
    "eval_crop": rule_of(number(0, 1, low_in=False, high_in=True), "0.875"),
    "crop_scale": rule_of(numbers(2, number(0, 1, low_in=False, high_in=True)), "[0.08,1.0]"),
    "channels": rule_of(choice("auto", 1, 3), "auto"),
    "mean": rule_of(choice(None, otherwise=numbers(None, ANY_NUMBER)), "[0.5,0.5,0.5]"),
    "std": rule_of(
        choice(None, otherwise=numbers(None, number(0, low_in=False))), "[0.25,0.25,0.25]"
    ),
}

# loss parameter -> rule, for the loss, the terms of a combo and the ends of a schedule
LOSS: dict[str, Rule] = {
    "alpha": rule_of(number(0, 1, high_in=True), "0.9"),
    "temperature": rule_of(number(0, low_in=False), "4"),
    "beta": rule_of(number(0), "1.0"),
    "skew": rule_of(number(0, 1), "0.1"),
    "lmbda": rule_of(number(0, 1, high_in=True), "0.5"),
    "gamma": rule_of(number(0), "1.0"),
    "p": rule_of(number(0, low_in=False), "2"),
    "ce_weight": rule_of(number(0), "1.0"),
    "weight": rule_of(number(0), "1.0"),
    "label_smoothing": rule_of(number(0, 1, high_in=True), "0.1"),
    "warmup": rule_of(whole(0), "5"),
    "schedule.epochs": rule_of(choice(None, otherwise=whole(1)), "5"),
}

# full key -> rule, for the run's own settings
BY_KEY: dict[str, Rule] = {
    "seed": rule_of(SEED, "0"),
    "teacher.name": rule_of(file_name(100), "resnet18"),
    "student.name": rule_of(file_name(100), "smallcnn"),
    "teacher.epochs": rule_of(whole(1), "10"),
    "teacher.clip_grad_norm": rule_of(choice(None, otherwise=number(0, low_in=False)), "1.0"),
    "student.clip_grad_norm": rule_of(choice(None, otherwise=number(0, low_in=False)), "1.0"),
    "student.epochs": rule_of(whole(1), "10"),
    "teacher.batch_size": rule_of(whole(1), "64"),
    "student.batch_size": rule_of(whole(1), "64"),
    "student.accumulate": rule_of(whole(1), "4"),
    "eval.batch_size": rule_of(choice("auto", otherwise=whole(1)), "256"),
    "eval.latency_runs": rule_of(whole(1), "50"),
    "plots": rule_of(
        choice("auto", otherwise=(lambda v: isinstance(v, bool), "true or false")), "auto"
    ),
    "checkpoint.every_s": rule_of(number(0), "300"),
    "distributed.strategy": rule_of(choice(*STRATEGIES), "fsdp"),
    "compress.amount": rule_of(number(0, 1), "0.5"),
    "compress.epochs": rule_of(whole(0), "3"),
    "compress.lr_scale": rule_of(number(0, low_in=False), "0.1"),
    "compress.calibration_images": rule_of(whole(1), "512"),
    "soft_labels.max_gb": rule_of(number(0, low_in=False), "2"),
    "soft_labels.topk": rule_of(choice(None, otherwise=whole(1)), "5"),
    "soft_labels.generate.prompt_fraction": rule_of(
        number(0, 1, low_in=False, high_in=False), "0.5"
    ),
    "soft_labels.generate.temperature": rule_of(number(0), "1.0"),
    "soft_labels.feature_budget_mb": rule_of(number(0), "512"),
}


def _names(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


# `student.lora`'s settings (kdcli/models/lora.py; r, alpha and dropout have defaults there)
LORA: dict[str, Rule] = {
    "r": rule_of(whole(1), "8"),
    "alpha": rule_of(number(0, low_in=False), "16"),
    "dropout": rule_of(number(0, 1), "0.05"),
    "target_modules": rule_of((_names, "a list of layer names"), "[qkv,proj]"),
}


def check_lora(cfg: DictConfig) -> None:
    """`student.lora` is null or a mapping of LORA's settings, each following its rule, with
    the layers named (whether they exist is checked on the built student)."""
    lora = _plain(cfg, "student.lora")
    if lora is None or lora is _UNSET:
        return
    example = "student.lora={r:8,alpha:16,target_modules:[qkv,proj]}"
    if not isinstance(lora, dict):
        raise UserError(f"student.lora={_shown(lora)} must be null or a mapping, e.g. {example}.")
    for name in lora:
        if name not in LORA:
            raise UserError(
                f"student.lora.{name} is not a LoRA setting.{did_you_mean(str(name), list(LORA))}"
                f" The settings: {', '.join(LORA)}, e.g. {example}."
            )
    if "target_modules" not in lora:
        raise UserError(
            "student.lora.target_modules is not set: name the layers to adapt, e.g. "
            f"{example} for the built-in GPT (`kd list student --layers NAME task=lm` shows a "
            "student's layers)."
        )
    for name, rule in LORA.items():
        if name in lora:
            check_rule(cfg, f"student.lora.{name}", rule)


def leaf_keys(node: Any, prefix: str) -> Iterator[str]:
    """The dotted keys of a config's leaves (a list is one leaf), without resolving them."""
    if isinstance(node, DictConfig):
        for key in node:
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_interpolation():
                yield from leaf_keys(child, f"{prefix}{key!s}.")
            else:
                yield f"{prefix}{key!s}"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return "null" if value is None else str(value)


_UNSET = object()


def _plain(cfg: DictConfig, key: str) -> Any:
    """The value at `key`, resolved, as plain Python (lists and dicts included); _UNSET when
    the key is absent or not set (`???`)."""
    value = OmegaConf.select(cfg, key, default=_UNSET)
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def check_rule(cfg: DictConfig, key: str, rule: Rule) -> None:
    value = _plain(cfg, key)
    if not rule.accepts(value):
        shown = "???" if value is _UNSET else _shown(value)
        raise UserError(f"{key}={shown} must be {rule.accepted}, e.g. {key}={rule.example}.")


def unresolvable(key: str | None, error: Exception) -> UserError:
    where = f"{key}: its value" if key else "a value of the config"
    return UserError(
        f"{where} could not be resolved ({first_line(error)}); fix the interpolation or give "
        "a plain value (`kd train --cfg job` shows every key)."
    )


def check_resolvable(cfg: DictConfig) -> None:
    """Every interpolation resolves (a missing key or environment variable names its key)."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        raise unresolvable(getattr(error, "full_key", None), error) from None


def _loss_parameter(key: str) -> str | None:
    """The loss parameter a key sets: `loss.alpha` and `loss.schedule.alpha.start` set alpha,
    `loss.schedule.alpha.epochs` a schedule's epochs; `loss.schedule.alpha` (null or a
    schedule) none."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[-3] == "schedule":
        return parts[-2] if parts[-1] in ("start", "end") else f"schedule.{parts[-1]}"
    return None if len(parts) >= 2 and parts[-2] == "schedule" else parts[-1]


def check_loss(cfg: DictConfig) -> None:
    """Every loss parameter that LOSS names follows its rule, in combos and schedules too."""
    for key in leaf_keys(cfg.loss, "loss."):
        rule = LOSS.get(_loss_parameter(key) or "")
        if rule is not None:
            check_rule(cfg, key, rule)


def check_values(cfg: DictConfig) -> None:
    """Every setting of BY_KEY, and every leaf under SECTIONS that BY_NAME names, follows its
    rule."""
    check_resolvable(cfg)
    for key, rule in BY_KEY.items():
        check_rule(cfg, key, rule)
    for section in SECTIONS:
        check_section(cfg, section)
    check_loss(cfg)
    check_lora(cfg)


def check_section(cfg: DictConfig, section: str) -> None:
    """Every leaf under `section` that BY_NAME names follows its rule (a model's or a
    dataset's values, from the command line or read from a file)."""
    for key in leaf_keys(OmegaConf.select(cfg, section), f"{section}."):
        rule = BY_NAME.get(key.rsplit(".", 1)[-1])
        if rule is not None:
            check_rule(cfg, key, rule)
