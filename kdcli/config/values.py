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

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kdcli.config.build import first_line
from kdcli.errors import UserError, did_you_mean

SECTIONS = (
    "teacher.optimizer",
    "teacher.scheduler",
    "teacher.model",
    "student.optimizer",
    "student.scheduler",
    "student.model",
    "dataset",
)


@dataclass(frozen=True)
class Rule:
    accepts: Callable[[Any], bool]
    accepted: str  # what is accepted, after "must be"
    example: str  # a value that is accepted


Spec = tuple[Callable[[Any], bool], str]  # a test of a plain value, and what it accepts


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


ANY_NUMBER = (_is_number, "a number")


def number(low: float, high: float = math.inf, *, low_in: bool = True, high_in: bool = False):
    """A finite number between `low` and `high` (each end included or not)."""

    def accepts(value: Any) -> bool:
        if not _is_number(value):
            return False
        above = value >= low if low_in else value > low
        below = value <= high if high_in else value < high
        return above and below

    if high == math.inf:
        return accepts, f"a number {'>=' if low_in else '>'} {low:g}"
    ends = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
    return accepts, f"a number in {ends}"


def whole(minimum: int, maximum: float = math.inf) -> Spec:
    def accepts(value: Any) -> bool:
        return _is_whole(value) and minimum <= value <= maximum

    if maximum == math.inf:
        return accepts, f"a whole number >= {minimum}"
    return accepts, f"a whole number in [{minimum}, {maximum}]"


SEED = whole(0, 2**32 - 1)  # numpy (and scikit-learn's splits) take no larger seed


def file_name(longest: int) -> Spec:
    """A name that is one path component: the cache names a model's files after it, so a `/`,
    `..` or NUL would put them elsewhere (or fail)."""

    def accepts(value: Any) -> bool:
        name = value if isinstance(value, str) else str(value) if _is_whole(value) else ""
        return 0 < len(name) <= longest and name not in (".", "..") and not set(name) & set("/\\\0")

    return accepts, (
        f"a name of 1 to {longest} characters that can name a file (no / or \\, no NUL byte, "
        "not . or ..)"
    )


def whole_lists(minimum: int) -> Spec:
    """A list of whole numbers >= `minimum`, or of such lists (VGG's blocks)."""

    def accepts(value: Any) -> bool:
        if not isinstance(value, list):
            return False
        return all(
            accepts(v) if isinstance(v, list) else _is_whole(v) and v >= minimum for v in value
        )

    return accepts, f"a list of whole numbers >= {minimum}"


def increasing(minimum: int) -> Spec:
    def accepts(value: Any) -> bool:
        if not isinstance(value, list) or not all(_is_whole(v) and v >= minimum for v in value):
            return False
        return all(a < b for a, b in zip(value, value[1:], strict=False))

    return accepts, f"a list of increasing whole numbers >= {minimum}"


def numbers(length: int | None, spec: Spec) -> Spec:
    """A list (of `length` items, when given) whose every item is what `spec` accepts."""
    item, described = spec

    def accepts(value: Any) -> bool:
        right_length = length is None or (isinstance(value, list) and len(value) == length)
        return isinstance(value, list) and right_length and all(item(v) for v in value)

    count = f"{length} " if length else ""
    each = described.removeprefix("a number")
    return accepts, f"a list of {count}numbers" + (f", each{each}" if each else "")


def choice(*words: Any, otherwise: Spec | None = None) -> Spec:
    """One of `words` (null, auto, ...), or what `otherwise` accepts."""
    names = [("null" if w is None else str(w)) for w in words]
    if otherwise is not None:
        names.append(otherwise[1])

    def accepts(value: Any) -> bool:
        if not isinstance(value, bool) and value in words:
            return True
        return otherwise is not None and otherwise[0](value)

    return accepts, ", ".join(names[:-1]) + f" or {names[-1]}"


def _rule(spec: Spec, example: str) -> Rule:
    return Rule(spec[0], spec[1], example)


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
    "lr": _rule(number(0, low_in=False), "0.05"),
    "momentum": _rule(number(0, 1), "0.9"),
    "dampening": _rule(number(0, 1, high_in=True), "0"),
    "weight_decay": _rule(number(0), "5e-4"),
    "eps": _rule(number(0, low_in=False), "1e-8"),
    "betas": _rule(numbers(2, number(0, 1)), "[0.9,0.999]"),
    # schedulers
    "milestones": _rule(increasing(0), "[150,180,210]"),
    "gamma": _rule(number(0, low_in=False), "0.1"),
    "warmup_epochs": _rule(number(0), "2"),
    "epochs": _rule(whole(1), "10"),
    "T_max": _rule(whole(1), "10"),
    "eta_min": _rule(number(0), "0"),
    "factor": _rule(number(0, 1, high_in=True), "1.0"),
    "total_iters": _rule(whole(0), "0"),
    "step_size": _rule(whole(1), "30"),
    # models
    **{name: _rule(whole(1), "16") for name in POSITIVE_WHOLE},
    **{name: _rule(whole_lists(1), "[64,128]") for name in POSITIVE_LISTS},
    "width_mult": _rule(number(0, low_in=False), "0.5"),
    "dropout": _rule(number(0, 1), "0.1"),
    "bn_momentum": _rule(choice(None, otherwise=number(0, 1, high_in=True)), "0.1"),
    "stem_stride": _rule(choice(None, otherwise=whole(1)), "1"),
    # datasets
    "val_fraction": _rule(number(0, 1), "0.1"),
    "test_fraction": _rule(number(0, 1, low_in=False), "0.2"),
    "max_shift": _rule(whole(0), "2"),
    "split_seed": _rule(SEED, "0"),
    "max_chars": _rule(choice(None, otherwise=whole(100)), "100000"),
    "image_size": _rule(whole(8), "64"),
    "workers": _rule(whole(0), "4"),
    "stats_images": _rule(whole(1), "256"),
    "max_pixels": _rule(whole(1, 2 * 89_478_485), "89478485"),  # Pillow refuses more itself
    "eval_crop": _rule(number(0, 1, low_in=False, high_in=True), "0.875"),
    "crop_scale": _rule(numbers(2, number(0, 1, low_in=False, high_in=True)), "[0.08,1.0]"),
    "channels": _rule(choice("auto", 1, 3), "auto"),
    "mean": _rule(choice(None, otherwise=numbers(None, ANY_NUMBER)), "[0.5,0.5,0.5]"),
    "std": _rule(
        choice(None, otherwise=numbers(None, number(0, low_in=False))), "[0.25,0.25,0.25]"
    ),
}

# loss parameter -> rule, for the loss, the terms of a combo and the ends of a schedule
LOSS: dict[str, Rule] = {
    "alpha": _rule(number(0, 1, high_in=True), "0.9"),
    "temperature": _rule(number(0, low_in=False), "4"),
    "beta": _rule(number(0), "1.0"),
    "skew": _rule(number(0, 1), "0.1"),
    "lmbda": _rule(number(0, 1, high_in=True), "0.5"),
    "gamma": _rule(number(0), "1.0"),
    "p": _rule(number(0, low_in=False), "2"),
    "ce_weight": _rule(number(0), "1.0"),
    "weight": _rule(number(0), "1.0"),
    "label_smoothing": _rule(number(0, 1, high_in=True), "0.1"),
    "warmup": _rule(whole(0), "5"),
    "schedule.epochs": _rule(choice(None, otherwise=whole(1)), "5"),
}

# full key -> rule, for the run's own settings
BY_KEY: dict[str, Rule] = {
    "seed": _rule(SEED, "0"),
    "teacher.name": _rule(file_name(100), "resnet18"),
    "student.name": _rule(file_name(100), "smallcnn"),
    "teacher.epochs": _rule(whole(1), "10"),
    "teacher.clip_grad_norm": _rule(choice(None, otherwise=number(0, low_in=False)), "1.0"),
    "student.clip_grad_norm": _rule(choice(None, otherwise=number(0, low_in=False)), "1.0"),
    "student.epochs": _rule(whole(1), "10"),
    "teacher.batch_size": _rule(whole(1), "64"),
    "student.batch_size": _rule(whole(1), "64"),
    "student.accumulate": _rule(whole(1), "4"),
    "eval.batch_size": _rule(choice("auto", otherwise=whole(1)), "256"),
    "eval.latency_runs": _rule(whole(1), "50"),
    "checkpoint.every_s": _rule(number(0), "300"),
    "compress.amount": _rule(number(0, 1), "0.5"),
    "compress.epochs": _rule(whole(0), "3"),
    "compress.lr_scale": _rule(number(0, low_in=False), "0.1"),
    "compress.calibration_images": _rule(whole(1), "512"),
    "soft_labels.max_gb": _rule(number(0, low_in=False), "2"),
    "soft_labels.topk": _rule(choice(None, otherwise=whole(1)), "5"),
    "soft_labels.generate.prompt_fraction": _rule(number(0, 1, low_in=False, high_in=False), "0.5"),
    "soft_labels.generate.temperature": _rule(number(0, low_in=False), "1.0"),
    "soft_labels.feature_budget_mb": _rule(number(0), "512"),
}


def _names(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


# `student.lora`'s settings (kdcli/models/lora.py; r, alpha and dropout have defaults there)
LORA: dict[str, Rule] = {
    "r": _rule(whole(1), "8"),
    "alpha": _rule(number(0, low_in=False), "16"),
    "dropout": _rule(number(0, 1), "0.05"),
    "target_modules": _rule((_names, "a list of layer names"), "[qkv,proj]"),
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
