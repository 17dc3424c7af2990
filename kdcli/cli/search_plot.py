"""`kd report` on a search: Optuna's optimisation history and parameter importances, as PNGs.

The study is rebuilt in memory from search.json's plain values (its space as Optuna's
distributions, each finished trial with its parameters, state and validation figure): no
storage named anywhere is opened. optuna and matplotlib are optional (`kdcli[search]`,
`kdcli[plot]`) and are imported only here, when a search is reported.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdcli.cli.search_file import Param, Search
from kdcli.errors import UserError

if TYPE_CHECKING:
    import optuna

HISTORY, IMPORTANCE = "search_history.png", "search_importance.png"
EXTRAS = {"optuna": "search", "matplotlib": "plot"}  # module -> the kdcli extra that has it


def missing() -> tuple[str, str] | None:
    """What is not installed for the plots and the command that installs it (None when all
    is)."""
    absent = [name for name in EXTRAS if not _installed(name)]
    if not absent:
        return None
    extras = ",".join(EXTRAS[name] for name in absent)
    return " and ".join(absent), f"`pip install kdcli[{extras}]`"


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules
        return False


def require() -> None:
    """A UserError naming the extra when the plots cannot be drawn (for `--plot`)."""
    absent = missing()
    if absent:
        raise UserError(
            f"--plot on a search needs {absent[0]}, which is not installed; install it with "
            f"{absent[1]}, or leave out --plot."
        )


def _distribution(param: Param) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if param.kind == "categorical":
        return CategoricalDistribution(param.choices)
    assert param.low is not None and param.high is not None  # search_file checked them
    if param.kind == "int":
        step = 1 if param.step is None else int(param.step)
        return IntDistribution(int(param.low), int(param.high), log=param.log, step=step)
    return FloatDistribution(param.low, param.high, log=param.log, step=param.step)


STATES = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}


def study(search: Search, figures: dict[int, float | None]) -> optuna.Study:
    """An in-memory study holding the search's finished trials (a complete trial without a
    validation figure, and a running one, are left out): `figures` maps a trial's number to
    its validation figure."""
    import optuna

    direction = optuna.study.StudyDirection[search.direction.upper()]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory"
    try:
        result = optuna.create_study(study_name=search.study, direction=direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    with warnings.catch_warnings():  # a range that its step does not divide, narrowed
        warnings.simplefilter("ignore", UserWarning)
        space = {_literal(name): _distribution(param) for name, param in search.space.items()}
    for trial in sorted(search.trials, key=lambda t: t.number):
        value = figures.get(trial.number)
        if trial.state not in STATES or (trial.state == "complete" and value is None):
            continue
        params = {_literal(name): value for name, value in trial.params.items()}
        frozen = optuna.trial.create_trial(
            state=getattr(optuna.trial.TrialState, STATES[trial.state]),
            value=value if trial.state == "complete" else None,
            params=params,
            distributions={name: space[name] for name in params},
            intermediate_values=trial.intermediate,
        )
        result.add_trial(frozen)
    return result


def _literal(name: str) -> str:
    """A parameter's name as matplotlib shows it as written (a `$` would start math)."""
    return name.replace("$", r"\$")


def draw(search: Search, figures: dict[int, float | None], folder: Path, label: str) -> list[str]:
    """Both plots in `folder` (HISTORY, IMPORTANCE); one line for each drawn or skipped."""
    absent = missing()
    if absent:
        return [f"plots: not drawn, {absent[0]} is not installed ({absent[1]})."]
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    import optuna.visualization.matplotlib as plots

    try:
        built = study(search, figures)
    except ValueError as error:  # a parameter off its step's grid, say
        return [f"plots: not drawn, the trials do not fit their space ({error})."]
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in built.trials)
    if complete == 0:
        return ["plots: not drawn, no trial has completed."]
    lines = [_save(plots.plot_optimization_history, built, folder / HISTORY, label)]
    if complete < 2:
        lines.append("importance plot: not drawn, it needs at least 2 complete trials.")
    else:
        lines.append(_save(plots.plot_param_importances, built, folder / IMPORTANCE, label))
    return lines


def _save(plot: Any, built: optuna.Study, path: Path, label: str) -> str:
    """`plot` of the study saved as a PNG at `path`; the line that says where (or why not:
    too few distinct trials, a parameter name matplotlib cannot typeset)."""
    import matplotlib.pyplot as plt
    import optuna

    figure = None
    with warnings.catch_warnings():  # the plots are "experimental"; few trials make notes
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
        try:
            figure = plot(built, target_name=label).get_figure()
            path.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path, dpi=100, bbox_inches="tight")  # the legend sits outside
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            return f"{path.name}: not drawn ({' '.join(str(error).split())[:200]})."
        finally:
            if figure is not None:
                plt.close(figure)
    return f"plot: {path}"
