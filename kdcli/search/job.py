"""A trial's side of a search: what one `kd train` job of the study returns, and its pruning.

The job may run in another process or on another node (hydra/launcher=slurm), so it reaches
its trial through the study's storage: the sweeper pins the study name and the sweep
directory in the job's Hydra config and puts the trial's id in `hydra.job.env_set`
(KD_SEARCH_TRIAL_ID, also in the job's environment). The job returns a plain dict
(`Outcome`), which the sweeper tells the study:

    {"state": "complete", "value": student's val_<metric>, "objective": "val_<metric>"}
    {"state": "failed", "reason": one line}       a RunError (NaN loss, out of memory, ...)
    {"state": "pruned", "epoch": E}               the pruner stopped it after epoch E
    {"state": "bad input", "reason": one line}    kd's exit 2: the search stops after the
                                                  batch, and the trial runs again on a rerun

The objective is the student's headline metric on the validation split, never on test.
Per-epoch validation figures of the student reach the trial through a wrapper of the run's
metrics logger (`TrialLog`), so the pipeline knows nothing of Optuna.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kdcli.config.search_space import SWEEPER
from kdcli.errors import RunError, UserError, first_line
from kdcli.pipeline.metrics import JsonlLog, StoppedOnPurpose
from kdcli.pipeline.objects import Objects

log = logging.getLogger(__name__)

TRIAL_ENV = "KD_SEARCH_TRIAL_ID"
STUDENT = "student"  # the stage whose validation figure is the objective
Outcome = dict[str, Any]


class Pruned(StoppedOnPurpose):
    """The pruner stopped the trial after `epoch`."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"pruned after epoch {epoch}")
        self.epoch = epoch


@dataclass(frozen=True)
class TrialLink:
    """How a job finds its trial: the study, where it is stored, the trial's id."""

    study_name: str
    storage: str | None
    sweep_dir: Path
    trial_id: int
    pruner: Any  # hydra.sweeper.pruner (None: report, never prune)

    def trial(self) -> Any:
        import optuna

        from kdcli.search.study import open_storage, pruner

        study = optuna.load_study(
            study_name=self.study_name,
            storage=open_storage(self.storage, self.sweep_dir),
            pruner=pruner(self.pruner),
        )
        return optuna.Trial(study, self.trial_id)


def link(hydra: Any) -> TrialLink | None:
    """The job's trial, or None when the job is not a search's (Hydra's config of the job)."""
    if hydra.runtime.choices.get("hydra/sweeper") != SWEEPER:
        return None
    trial_id = hydra.job.env_set.get(TRIAL_ENV)
    if trial_id is None:
        return None
    return TrialLink(
        study_name=str(hydra.sweeper.study_name),
        storage=hydra.sweeper.storage,
        sweep_dir=Path(str(hydra.sweep.dir)),
        trial_id=int(trial_id),
        pruner=hydra.sweeper.pruner,
    )


class TrialLog(JsonlLog):
    """The run's logger, which also reports the student's per-epoch validation figure to the
    trial and stops the run (raises Pruned) when the pruner says so."""

    def __init__(self, inner: JsonlLog, trial_link: TrialLink) -> None:
        self.inner = inner
        self.path = inner.path
        self.link = trial_link
        self._trial: Any = None

    def row(self, row: dict[str, Any]) -> None:
        self.inner.row(row)
        figures = [v for k, v in row.items() if k.startswith("val_")]
        if row.get("stage") != STUDENT or not figures or figures[0] is None:
            return
        if self._trial is None:
            self._trial = self.link.trial()
        epoch = int(row["epoch"])
        self._trial.report(float(figures[0]), epoch)
        if self.link.pruner is not None and self._trial.should_prune():
            raise Pruned(epoch)

    def close(self, hparams: dict[str, Any], final: dict[str, float]) -> None:
        self.inner.close(hparams, final)

    def stop(self, error: BaseException) -> None:  # pruned or failed: the tracker's run ends
        self.inner.stop(error)


def watch(objects: Objects, trial_link: TrialLink) -> Objects:
    """The run's objects with the logger wrapped by TrialLog."""
    make = objects.logger
    return replace(objects, logger=lambda run_dir: TrialLog(make(run_dir), trial_link))


def refused(cfg: Any) -> Outcome | None:
    """The trial's config checked as the pre-flight checks a run's: the pre-flight composed
    each searched value once, not every combination the sampler may draw (e.g.
    compress.epochs above student.epochs). A combination the checks refuse fails the trial,
    with the check's message as its reason, and the search goes on."""
    from kdcli.config.checks import check_config

    try:
        check_config(cfg)
    except UserError as error:
        return failed(error)
    return None


def complete(report: Any) -> Outcome:
    """The objective: the student's headline metric on the validation split."""
    objective = f"val_{report['metric']}"
    value = report["student"].get(objective)
    if value is None:
        return failed(RunError(f"the report has no student.{objective} (no validation split)"))
    return {"state": "complete", "value": float(value), "objective": objective}


def failed(error: BaseException) -> Outcome:
    reason = first_line(error)
    log.error("trial failed: %s", reason)
    return {"state": "failed", "reason": reason}


def bad_input(error: UserError) -> Outcome:
    """Bad input that only the job could see (a missing file): kd's message is printed, and
    the sweeper stops the search once the batch is told."""
    return {"state": "bad input", "reason": first_line(error)}


def pruned(stop: Pruned) -> Outcome:
    log.info("trial pruned after epoch %d", stop.epoch)
    return {"state": "pruned", "epoch": stop.epoch}
