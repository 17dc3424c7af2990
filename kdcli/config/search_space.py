"""A search's space, read from Hydra's override grammar (`kd train -m hydra/sweeper=optuna ...`).

Plain values only (no Optuna here): the pre-flight checks (checks.py) compose and check the
points this module lists before any trial runs, and kdcli/search turns the same axes into
Optuna distributions. The grammar is Hydra's Optuna sweeper's:

    key=interval(a,b)             float in [a, b] (Hydra reads an interval's bounds as floats)
    key=int(interval(a,b))        int in [a, b]
    key=tag(log,interval(a,b))    the same on a log scale
    key=choice(x,y,z) / key=x,y,z categorical
    key=range(a,b[,step])         int (float when any of them is) from a up to b, step apart
    key=value                     fixed: the same in every trial

`params` (hydra.sweeper.params in a config) holds overrides in the same form; the command line
wins over it for the same key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.errors import OverrideParseException

from kdcli.errors import UserError

SWEEPER = "optuna"  # hydra/sweeper=optuna: configs/hydra/sweeper/optuna.yaml
VAL_KEY = "dataset.val_fraction"


@dataclass(frozen=True)
class Axis:
    """One searched key: `kind` float, int or categorical (search.json's `space` entry)."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def as_json(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"kind": "categorical", "choices": list(self.choices)}
        return {"kind": self.kind, "low": self.low, "high": self.high, "log": self.log,
                "step": self.step}  # fmt: skip

    def endpoints(self) -> list[Any]:
        """The values the pre-flight checks: both bounds, or every choice."""
        if self.kind == "categorical":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        high = self.high
        if self.step is not None:  # the last value the range reaches
            high = self.low + self.step * int((self.high - self.low) / self.step + 1e-9)
        if self.kind == "int":
            return [int(self.low), int(high)]
        return [float(self.low), float(high)]


def is_search(overrides: list[Override]) -> bool:
    """Whether the command line picks kdcli's Optuna sweeper."""
    return any(
        o.key_or_group == "hydra/sweeper" and not o.is_sweep_override() and o.value() == SWEEPER
        for o in overrides
    )


def format_value(value: Any) -> str:
    """A sampled value as Hydra's grammar writes it (strings are kept as encoded)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _bad(override: Override, why: str) -> UserError:
    return UserError(
        f"{override.input_line}: {why} A search takes interval(a,b), tag(log,interval(a,b)), "
        "choice(x,y,...) or x,y,..., range(a,b[,step]) (docs/search.md)."
    )


def _interval(override: Override, key: str, value: IntervalSweep) -> Axis:
    ints = isinstance(value.start, int) and isinstance(value.end, int)  # int(interval(a,b))
    low, high = float(value.start or 0.0), float(value.end or 0.0)
    if not low < high:
        raise _bad(override, f"the lower bound {low:g} must be below the upper bound {high:g}.")
    log = "log" in value.tags
    if log and low <= 0:
        raise _bad(override, "a log scale needs a lower bound above 0.")
    if ints:
        return Axis(key, "int", int(low), int(high), log=log, step=1)
    return Axis(key, "float", low, high, log=log)


def _range(override: Override, key: str, value: RangeSweep) -> Axis:
    start, stop, step = value.start, value.stop, value.step
    assert start is not None and stop is not None
    if step is not None and step < 0:
        raise _bad(override, "a search's range goes upwards (a negative step).")
    if not step or (stop - start) / step <= 1:
        raise _bad(override, "the range holds fewer than two values.")
    last = start + step * ((stop - start - 1e-12) // step)  # range() stops before `stop`
    if all(isinstance(v, int) for v in (start, stop, step)):
        return Axis(key, "int", int(start), int(last), step=int(step))
    return Axis(key, "float", float(start), float(last), step=float(step))


def _axis(override: Override) -> Axis:
    key = override.get_key_element()
    value = override.value()
    other_tags = set(getattr(value, "tags", set())) - {"log"}
    if other_tags:
        raise _bad(override, f"the tags {sorted(other_tags)} mean nothing here.")
    if getattr(value, "shuffle", False):
        raise _bad(override, "shuffle() means nothing in a search (the sampler picks the order).")
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        return _interval(override, key, value)
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        return _range(override, key, value)
    if override.is_choice_sweep() and isinstance(value, ChoiceSweep):
        if "log" in value.tags:
            raise _bad(override, "a log scale applies to interval(a,b) only.")
        choices = tuple(override.sweep_iterator(transformer=Transformer.encode))
        if any(not isinstance(c, (str, int, float, bool)) for c in choices):
            raise _bad(override, "each choice must be a plain value (text, number, true/false).")
        if len(set(choices)) < len(choices):
            raise _bad(override, "a choice is listed twice.")
        return Axis(key, "categorical", choices=choices)
    raise _bad(override, "this kind of sweep (glob?) is not one a search takes.")


@dataclass(frozen=True)
class Space:
    """The searched axes and the overrides every trial shares (as written)."""

    axes: dict[str, Axis]
    fixed: list[str]

    def as_json(self) -> dict[str, Any]:
        return {key: axis.as_json() for key, axis in self.axes.items()}


def parse(lines: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(lines)
    except OverrideParseException as error:
        raise UserError(f"could not parse the search: {str(error).splitlines()[0]}") from None


def merged(params: dict[str, Any] | None, overrides: list[Override]) -> list[Override]:
    """`hydra.sweeper.params` and the command line's overrides, the latter winning per key."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()]
    by_key: dict[str, Override] = {o.get_key_element(): o for o in parse(lines)}
    for override in overrides:
        by_key.pop(override.get_key_element(), None)
        by_key[override.get_key_element()] = override
    return list(by_key.values())


def space_of(overrides: list[Override], params: dict[str, Any] | None = None) -> Space:
    """The search that `overrides` (a job's, without Hydra's own keys) and `params` ask for."""
    axes: dict[str, Axis] = {}
    fixed: list[str] = []
    for override in merged(params, overrides):
        if override.is_hydra_override():
            continue
        if override.is_sweep_override():
            axes[override.get_key_element()] = _axis(override)
        else:
            fixed.append(override.input_line or "")
    return Space(axes, fixed)


def with_validation(space: Space, val_fraction: float) -> tuple[Space, bool]:
    """The space with `dataset.val_fraction` set when the user left it out (True: it was added).
    Trials are judged on the validation split, so a search cannot run without one."""
    given = [line for line in space.fixed if line.split("=")[0].lstrip("+") == VAL_KEY]
    if VAL_KEY in space.axes or given:
        return space, False
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise UserError(f"hydra.sweeper.val_fraction={val_fraction!r} must be a number.")
    if not 0 < val_fraction < 1:
        raise UserError(
            f"hydra.sweeper.val_fraction={val_fraction} must lie in (0, 1): a search judges "
            "its trials on a validation split held out of the training data, e.g. 0.1."
        )
    return Space(space.axes, [*space.fixed, f"{VAL_KEY}={val_fraction}"]), True


def check_validation(value: Any) -> None:
    """A composed trial's `dataset.val_fraction` must leave a validation split."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{VAL_KEY}={value!r}: a search needs a validation split, e.g. 0.1.")
    if value <= 0:
        raise UserError(
            f"{VAL_KEY}={value}: a search judges its trials on the validation split, never on "
            f"test, so it needs one: leave {VAL_KEY} out (the search sets "
            f"hydra.sweeper.val_fraction, 0.1 by default) or give a fraction such as 0.1."
        )


def check_points(space: Space) -> list[list[str]]:
    """The override lists the pre-flight composes and checks: every fixed override with each
    axis at its first endpoint, then each other endpoint or choice of one axis at a time (one
    point per value, not their product, so a search of many keys checks in seconds)."""
    first = {key: axis.endpoints()[0] for key, axis in space.axes.items()}

    def point(key: str | None = None, value: Any = None) -> list[str]:
        values = {**first, **({} if key is None else {key: value})}
        return [*space.fixed, *(f"{k}={format_value(v)}" for k, v in values.items())]

    points = [point()]
    for key, axis in space.axes.items():
        points += [point(key, value) for value in axis.endpoints()[1:]]
    return points


def search_points(overrides: list[Override]) -> list[list[str]]:
    """The points a search's pre-flight composes and checks (inside checks.py's Hydra
    context): its space's endpoints and choices with `hydra.sweeper.params` and the validation
    split the search adds, as the sweeper (kdcli/search) will run its trials. A command whose
    fixed overrides do not compose gets its plain points, whose check names the bad key."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    hydra_lines = [o.input_line or "" for o in overrides if o.is_hydra_override()]
    try:
        base = compose("train", overrides=[*hydra_lines, *space_of(overrides).fixed],
                       return_hydra_config=True)  # fmt: skip
    except HydraException:
        return [[*hydra_lines, *point] for point in check_points(space_of(overrides))]
    sweeper = base.hydra.sweeper
    check_sweeper(sweeper)
    params = OmegaConf.to_container(sweeper.params) if sweeper.get("params") else {}
    assert isinstance(params, dict)
    space, _ = with_validation(space_of(overrides, {str(k): v for k, v in params.items()}),
                               sweeper.val_fraction)  # fmt: skip
    require_axes(space)
    return [[*hydra_lines, *point] for point in check_points(space)]


def require_axes(space: Space) -> None:
    """A search with nothing to search is a mistake, not a single run."""
    if not space.axes:
        raise UserError(
            "hydra/sweeper=optuna: nothing to search; give a key a range, e.g. "
            "'loss.alpha=interval(0.1,0.9)' (docs/search.md)."
        )


def check_sweeper(sweeper: Any) -> None:
    """The search's own keys (hydra.sweeper.*), before any trial."""
    if sweeper.direction != "maximize":
        raise UserError(
            f"hydra.sweeper.direction={sweeper.direction}: every task's headline metric (top-1, "
            "exact match, ROUGE-L) is higher-is-better, so a search maximizes it; leave "
            "direction out."
        )
    for key in ("n_trials", "n_jobs"):
        value = sweeper[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"hydra.sweeper.{key}={value!r} must be a whole number of 1 or more.")
    pruner = sweeper.pruner
    if pruner is not None and pruner != "median" and not hasattr(pruner, "keys"):
        raise UserError(
            f"hydra.sweeper.pruner={pruner!r} must be null (no pruning), median, or a config "
            "with a _target_ (an optuna.pruners class)."
        )


def hint(error: UserError) -> UserError:
    """A searched key refused as not whole: interval(a,b) gives floats, as in Hydra."""
    if "whole number" not in str(error):
        return error
    return UserError(
        f"{error} A search's interval(a,b) draws floats (Hydra reads its bounds as floats): "
        "use int(interval(a,b)) or range(a,b) for a whole number."
    )
