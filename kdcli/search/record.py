"""`search.json` in the sweep directory: the study as plain JSON, for `kd report` and people.

Written atomically after every batch of trials and when the search ends. Version 1:

    {"kind": "kdcli search", "version": 1, "study": NAME, "direction": "maximize",
     "objective": "val_top1", "n_trials": N, "space": {KEY: {...}},
     "trials": [{"number", "state", "params", "value", "run_dir", "intermediate"}, ...],
     "best": NUMBER | null}

`state` is complete, pruned, failed or running; `run_dir` is relative to the sweep directory
(named by the trial's number); `intermediate` maps an epoch to the student's validation figure
reported to the trial; a failed trial also has its one-line `reason`. A stopped trial (a kill,
bad input) that a later one retries (study.py) is left out: the retry stands for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from kdcli.config.search_space import Space
from kdcli.search.study import RETRY_OF, retried
from kdcli.store.atomic import write_json_atomic

RECORD_FILE = "search.json"
KIND = "kdcli search"
VERSION = 1
REASON = "reason"  # user attribute of a failed trial: why, in one line
STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


def trial_entry(trial: FrozenTrial) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "number": trial.number,
        "state": STATES.get(trial.state, "running"),
        "params": dict(trial.params),
        "value": trial.value if trial.state == TrialState.COMPLETE else None,
        "run_dir": str(trial.number),
        "intermediate": {str(step): value for step, value in trial.intermediate_values.items()},
    }
    if trial.state == TrialState.FAIL and REASON in trial.user_attrs:
        entry[REASON] = trial.user_attrs[REASON]
    if RETRY_OF in trial.user_attrs:  # it ran again a stopped trial's values (a kill, bad input)
        entry[RETRY_OF] = int(trial.user_attrs[RETRY_OF])
    return entry


def best_number(trials: list[FrozenTrial], direction: str) -> int | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    pick = max if direction == "maximize" else min
    return pick(complete, key=lambda t: (t.value, -t.number)).number  # ties: the first


def record(study: optuna.Study, space: Space, objective: str, n_trials: int) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    replaced = retried(trials)
    kept = [t for t in trials if t.number not in replaced and t.state != TrialState.WAITING]
    direction = (
        "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"
    )
    return {
        "kind": KIND,
        "version": VERSION,
        "study": study.study_name,
        "direction": direction,
        "objective": objective,
        "n_trials": n_trials,
        "space": space.as_json(),
        "trials": [trial_entry(t) for t in kept],
        "best": best_number(kept, direction),
    }


def write_record(sweep_dir: Path, data: dict[str, Any]) -> Path:
    path = sweep_dir / RECORD_FILE
    write_json_atomic(path, data)
    return path
