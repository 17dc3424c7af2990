"""The sweeper's loop: ask the study for a batch of trials, launch them as jobs through the
configured launcher, tell the study what each job returned, write search.json; until the
study holds n_trials finished trials.

Each trial's job runs in `<sweep dir>/<trial number>` (hydra.sweep.subdir is set per job), so
a resumed search never writes into a finished trial's directory. A trial that fails while
running (a RunError: NaN loss, out of memory) is told as failed and the search goes on; bad
input (kd's exit 2) stops it once the batch is told, and so does a signal; the same command
resumes it, running such trials again (study.py).
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.trial import TrialState

from kdcli.config.build import instantiate_config
from kdcli.config.search_space import (
    Space,
    format_value,
    parse,
    require_axes,
    space_of,
    with_validation,
)
from kdcli.errors import UserError, report_error, shorten
from kdcli.search.job import TRIAL_ENV
from kdcli.search.record import REASON, record, write_record
from kdcli.search.space import distributions, trial_overrides
from kdcli.search.study import (
    STOPPED_BY_BAD_INPUT,
    Settings,
    check_same_search,
    default_sweep_dir,
    finished_count,
    open_study,
    retry_bad_input,
    retry_interrupted,
    study_name,
)

log = logging.getLogger("kdcli.search")
EXIT_BAD_INPUT = 2  # kd's exit code for bad input


def quoted(text: str) -> str:
    """A value in Hydra's grammar as a quoted string (paths with any character)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sweep_dir_of(config: DictConfig, name: str) -> Path:
    """hydra.sweep.dir when the command line gives it, else outputs/search/<study name>."""
    given = [o for o in config.hydra.overrides.hydra if str(o).startswith("hydra.sweep.dir=")]
    return Path(str(config.hydra.sweep.dir)) if given else default_sweep_dir(name)


def pin(config: DictConfig, sweep_dir: Path, name: str) -> None:
    """Put the sweep directory and the study name in every job's config: Hydra composes each
    job again from config.hydra.overrides.hydra and the job's own overrides."""
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.sweep.dir = str(sweep_dir)
        config.hydra.sweeper.study_name = name
        config.hydra.overrides.hydra.append(f"hydra.sweep.dir={quoted(str(sweep_dir))}")
        config.hydra.overrides.hydra.append(f"hydra.sweeper.study_name={quoted(name)}")


def objective_name(config: DictConfig) -> str:
    """What the trials are judged on: the task's headline metric on the validation split."""
    return f"val_{instantiate_config(config.task, 'task').metric}"


def job_overrides(space: Space, trial: optuna.Trial) -> list[str]:
    return [
        *trial_overrides(space, trial.params),
        f"hydra.sweep.subdir={trial.number}",
        f"++hydra.job.env_set.{TRIAL_ENV}={trial._trial_id}",  # Optuna keeps the id private
    ]


def tell_all(
    study: optuna.Study, trials: Sequence[optuna.Trial], results: Sequence[JobReturn]
) -> bool:
    """Tell every trial of a batch, then raise the first crash among them (so that the
    batch-mates that finished are kept). Whether a trial's job met bad input."""
    crash: Exception | None = None
    bad_input = False
    for trial, result in zip(trials, results, strict=True):
        try:
            bad_input |= tell(study, trial, result)
        except Exception as error:
            crash = crash or error
    if crash is not None:
        raise crash
    return bad_input


def told_bad_input(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Fail a trial that bad input stopped; a rerun of the command runs its values again."""
    trial.set_user_attr(REASON, reason)
    trial.set_user_attr(STOPPED_BY_BAD_INPUT, True)
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def tell(study: optuna.Study, trial: optuna.Trial, result: JobReturn) -> bool:
    """Tell the study what the trial's job returned, and log one line for it; whether the job
    met bad input."""
    params = " ".join(f"{k}={format_value(v)}" for k, v in trial.params.items())
    try:
        outcome = result.return_value
    except Exception as error:  # a crash of no known kind: the search stops on it
        trial.set_user_attr(REASON, shorten(str(error)) or type(error).__name__)
        study.tell(trial, state=TrialState.FAIL)
        log.error("trial %d (%s): crashed", trial.number, params)
        raise
    state = outcome.get("state") if isinstance(outcome, dict) else None
    if state == "bad input":
        told_bad_input(study, trial, f"bad input: {outcome.get('reason', '')}")
        log.error("trial %d: %s -> bad input: %s", trial.number, params, outcome.get("reason"))
        return True
    if state == "complete":
        study.tell(trial, outcome["value"])
        log.info("trial %d: %s -> %.4f", trial.number, params, outcome["value"])
    elif state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d: %s -> pruned after epoch %d", trial.number, params, outcome["epoch"])
    else:
        reason = outcome.get("reason", "no result") if isinstance(outcome, dict) else "no result"
        trial.set_user_attr(REASON, reason)
        study.tell(trial, state=TrialState.FAIL)
        log.info("trial %d: %s -> failed: %s", trial.number, params, reason)
    return False


def launch(launcher: Any, batch: list[list[str]], trials: Sequence[optuna.Trial],
           study: optuna.Study) -> Sequence[JobReturn]:  # fmt: skip
    """Run one batch. A job that exits for bad input before it could return its outcome
    takes the batch with it: its trials are told as stopped by bad input (a signal leaves
    them running); the same command runs them again."""
    try:
        return launcher.launch(batch, initial_job_idx=trials[0].number)
    except SystemExit as stop:
        if stop.code == EXIT_BAD_INPUT:
            for trial in trials:
                told_bad_input(study, trial, "bad input (the message above)")
        raise


def run_search(
    settings: dict[str, Any],
    arguments: list[str],
    *,
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
) -> list[Sequence[JobReturn]]:
    """The sweeper's `sweep`: bad input ends in kd's one-paragraph message and exit 2."""
    try:
        return _search(Settings.read(settings), arguments, hydra_context, task_function, config)
    except UserError as error:
        sys.exit(report_error(error))


def _search(
    settings: Settings,
    arguments: list[str],
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
) -> list[Sequence[JobReturn]]:
    space, added = with_validation(
        space_of(parse(arguments), settings.params), settings.val_fraction
    )
    require_axes(space)
    if added:
        log.info("search: trials are judged on a validation split, %s", space.fixed[-1])
    name = settings.study_name or study_name(space)
    sweep_dir = sweep_dir_of(config, name)
    made = next((p for p in reversed([sweep_dir, *sweep_dir.parents]) if not p.exists()), None)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    pin(config, sweep_dir, name)
    try:
        study = open_study(settings, name, sweep_dir)
    except UserError:
        if made is not None:  # a storage it could not open: leave nothing behind
            shutil.rmtree(made, ignore_errors=True)
        raise
    objective = objective_name(config)
    check_same_search(study, space, sweep_dir)
    for number in retry_interrupted(study):
        log.info("search: trial %d was interrupted; it runs again (from its saved state)", number)
    for number in retry_bad_input(study):
        log.info("search: trial %d met bad input last time; it runs again", number)
    log.info("search: study %s in %s", name, sweep_dir)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    launcher = Plugins.instance().instantiate_launcher(
        hydra_context=hydra_context, task_function=task_function, config=config
    )
    returns = []
    while (left := settings.n_trials - finished_count(study)) > 0:
        trials = [study.ask(distributions(space)) for _ in range(min(settings.n_jobs, left))]
        batch = [job_overrides(space, trial) for trial in trials]
        try:
            results = launch(launcher, batch, trials, study)
            bad_input = tell_all(study, trials, results)
        finally:
            write_record(sweep_dir, record(study, space, objective, settings.n_trials))
        if bad_input:
            log.error(
                "search: stopped on bad input (above); the finished trials are kept, and the "
                "stopped ones run again when the same command runs after the fix"
            )
            sys.exit(EXIT_BAD_INPUT)
        returns.append(results)
    summary = record(study, space, objective, settings.n_trials)
    path = write_record(sweep_dir, summary)
    best = summary["best"]
    if best is None:
        log.info("search: no trial completed; %s", path)
    else:
        value = next(t["value"] for t in summary["trials"] if t["number"] == best)
        log.info(
            "search: best trial %d (%s %.4f) in %s", best, objective, value, sweep_dir / str(best)
        )
    return returns
