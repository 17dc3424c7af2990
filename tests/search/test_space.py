"""The search space as Optuna distributions, and a trial's overrides."""

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from kdcli.config.search_space import Axis, Space
from kdcli.search.space import distribution, trial_overrides


def test_each_kind_of_axis_becomes_its_distribution():
    assert distribution(Axis("a", "float", 0.1, 0.9)) == FloatDistribution(0.1, 0.9)
    assert distribution(Axis("a", "float", 1e-3, 0.1, log=True)) == FloatDistribution(
        1e-3, 0.1, log=True
    )
    assert distribution(Axis("a", "int", 2, 8, step=2)) == IntDistribution(2, 8, step=2)
    assert distribution(Axis("a", "categorical", choices=("kd", 1))) == CategoricalDistribution(
        ["kd", 1]
    )


def test_a_trials_overrides_are_the_fixed_ones_then_each_searched_key():
    space = Space({"loss.alpha": Axis("loss.alpha", "float", 0.1, 0.9),
                   "baseline": Axis("baseline", "categorical", choices=(True, False))},
                  ["teacher.epochs=1"])  # fmt: skip
    assert trial_overrides(space, {"loss.alpha": 0.25, "baseline": False}) == [
        "teacher.epochs=1",
        "loss.alpha=0.25",
        "baseline=false",
    ]
