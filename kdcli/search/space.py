"""The search space (kdcli/config/search_space.py's axes) as Optuna distributions, and a
trial's sampled parameters as the overrides of its job."""

from __future__ import annotations

from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from kdcli.config.search_space import Axis, Space, format_value


def distribution(axis: Axis) -> BaseDistribution:
    """One axis as Optuna samples it."""
    if axis.kind == "categorical":
        return CategoricalDistribution(list(axis.choices))
    assert axis.low is not None and axis.high is not None
    if axis.kind == "int":
        return IntDistribution(
            int(axis.low), int(axis.high), log=axis.log, step=int(axis.step or 1)
        )
    return FloatDistribution(axis.low, axis.high, log=axis.log, step=axis.step)


def distributions(space: Space) -> dict[str, BaseDistribution]:
    return {key: distribution(axis) for key, axis in space.axes.items()}


def trial_overrides(space: Space, params: dict[str, Any]) -> list[str]:
    """The overrides of the job that runs a trial with `params`: the fixed ones, then one per
    searched key."""
    return [*space.fixed, *(f"{key}={format_value(params[key])}" for key in space.axes)]
