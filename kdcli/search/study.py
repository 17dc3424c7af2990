"""The study: its settings, storage, name and directory, and resuming a killed search.

A search is resumed by running the same command again, so what names it must not change
between two runs of one command: the default study name is derived from the search space and
the fixed overrides (not from the time), and the default sweep directory is
`outputs/search/<study name>`, holding the default storage (`study.db`, SQLite).

On resume, trials that the killed search left RUNNING are told as failed and their parameters
enqueued again (user attribute `retry_of`), so the retry continues from the student's training
state that kd saved in the cache (same config, same cache key); finished trials are kept and
count toward n_trials. This assumes one sweeper process per study (which may launch its trials
on many nodes): a second sweeper started on the same study would take the first's running
trials for stale ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from kdcli.config.build import instantiate_config
from kdcli.config.search_space import Space
from kdcli.errors import UserError, first_line
from kdcli.search.space import distributions

DEFAULT_PARENT = Path("outputs/search")
STORAGE_FILE = "study.db"
JOURNAL = "journal://"  # journal:///abs/path or journal://relative/path: Optuna's journal file
RETRY_OF = "retry_of"  # user attribute: the stopped trial (a kill, bad input) this one retries
STOPPED_BY_BAD_INPUT = "bad_input"  # user attribute: bad input stopped this trial's job
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class Settings:
    """hydra.sweeper's keys (configs/hydra/sweeper/optuna.yaml)."""

    direction: str
    study_name: str | None
    storage: str | None
    n_trials: int
    n_jobs: int
    sampler: Any  # a config node with a _target_, built by `sampler`
    pruner: Any  # None, "median" or a config node with a _target_
    val_fraction: float
    params: dict[str, Any]

    @classmethod
    def read(cls, settings: dict[str, Any]) -> Settings:
        params = settings.get("params") or {}
        if isinstance(params, DictConfig):
            params = OmegaConf.to_container(params)
        assert isinstance(params, dict)
        return cls(
            direction=settings.get("direction", "maximize"),
            study_name=settings.get("study_name"),
            storage=settings.get("storage"),
            n_trials=int(settings.get("n_trials", 20)),
            n_jobs=int(settings.get("n_jobs", 1)),
            sampler=settings.get("sampler"),
            pruner=settings.get("pruner"),
            val_fraction=settings.get("val_fraction", 0.1),
            params={str(key): value for key, value in params.items()},
        )


def study_name(space: Space) -> str:
    """`<searched keys>-<hash>`: the same for the same search space and fixed overrides."""
    text = json.dumps({"space": space.as_json(), "fixed": sorted(space.fixed)}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    keys = "_".join(key.split("@")[0].split(".")[-1] for key in space.axes)
    keys = re.sub(r"[^A-Za-z0-9_.-]", "", keys)[:60] or "search"
    return f"{keys}-{digest}"


def default_sweep_dir(name: str) -> Path:
    return DEFAULT_PARENT / re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def open_storage(spec: str | None, sweep_dir: Path) -> optuna.storages.BaseStorage:
    """hydra.sweeper.storage: null (SQLite in the sweep directory), journal://PATH or an RDB
    URL. Opening it is checked here, before any trial."""
    try:
        if spec is None:
            path = (sweep_dir / STORAGE_FILE).resolve()
            return optuna.storages.RDBStorage(f"sqlite:///{path}")
        if spec.startswith(JOURNAL):
            from optuna.storages.journal import JournalFileBackend

            path = Path(spec[len(JOURNAL) :]).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        return optuna.storages.RDBStorage(spec)
    except (ImportError, OSError, ValueError, RuntimeError) as error:
        raise UserError(
            f"hydra.sweeper.storage={spec}: could not open it ({first_line(error)}); give an "
            "RDB URL (sqlite:///path.db, postgresql://...), journal:///shared/path/study.log, "
            "or null for study.db in the sweep directory."
        ) from None
    except Exception as error:  # SQLAlchemy's errors for a URL it cannot use
        raise UserError(
            f"hydra.sweeper.storage={spec}: could not open it ({first_line(error)})."
        ) from None


def sampler(node: Any) -> optuna.samplers.BaseSampler:
    if node is None:
        return optuna.samplers.TPESampler(seed=0)
    return _built(node, "hydra.sweeper.sampler", optuna.samplers.BaseSampler)


def pruner(node: Any) -> optuna.pruners.BasePruner:
    """None: no pruning (Optuna's own default would be the median pruner); median: the median
    pruner with its defaults; or a config with a _target_."""
    if node is None:
        return optuna.pruners.NopPruner()
    if node == "median":
        return optuna.pruners.MedianPruner()
    return _built(node, "hydra.sweeper.pruner", optuna.pruners.BasePruner)


def _built(node: Any, key: str, kind: type) -> Any:
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise UserError(f"{key} must be a config with a _target_ (an Optuna class).")
    if not str(node._target_).startswith("optuna."):
        raise UserError(f"{key}._target_={node._target_}: a search takes Optuna's own classes.")
    built = instantiate_config(node, key)
    if not isinstance(built, kind):
        raise UserError(f"{key}._target_={node._target_} is not an Optuna {kind.__name__}.")
    return built


def open_study(settings: Settings, name: str, sweep_dir: Path) -> optuna.Study:
    """The study, made or found again (load_if_exists). A seeded sampler of a resumed study is
    seeded with seed + the number of trials it holds: with the seed alone it would draw again
    the points it drew first in the killed run."""
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(settings.storage, sweep_dir),
        sampler=optuna.samplers.RandomSampler(),  # replaced below
        pruner=pruner(settings.pruner),
        direction="maximize" if settings.direction == "maximize" else "minimize",
        load_if_exists=True,
    )
    node = settings.sampler
    held = len(study.get_trials(deepcopy=False))
    if held and isinstance(node, DictConfig) and isinstance(node.get("seed"), int):
        node = OmegaConf.merge(node, {"seed": node.seed + held})
    study.sampler = sampler(node)
    return study


def retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the stopped trials (killed, or stopped by bad input) a later trial retries."""
    return {int(t.user_attrs[RETRY_OF]) for t in trials if RETRY_OF in t.user_attrs}


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Tell the trials a killed search left RUNNING as failed and enqueue their parameters
    again; returns their numbers."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: trial.number})
    return [t.number for t in stale]


def retry_bad_input(study: optuna.Study) -> list[int]:
    """Enqueue again the parameters of the trials that bad input stopped (the last run ended
    on it; the input may be mended now) and that no later trial retries yet; their numbers."""
    trials = study.get_trials(deepcopy=False)
    replaced = retried(trials)
    stopped = [
        t for t in trials if t.user_attrs.get(STOPPED_BY_BAD_INPUT) and t.number not in replaced
    ]
    for trial in stopped:
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: trial.number})
    return [t.number for t in stopped]


def finished_count(study: optuna.Study) -> int:
    """Trials that count toward n_trials: finished, less the stopped ones retried."""
    trials = study.get_trials(deepcopy=False)
    replaced = retried(trials)
    return sum(t.state in FINISHED and t.number not in replaced for t in trials)


FIXED = "fixed_overrides"  # study user attribute: the overrides every trial of it shares


def check_same_search(study: optuna.Study, space: Space, sweep_dir: Path) -> None:
    """A study continued under its name must be the same search: the same space (Optuna would
    refuse a key's other kind deep in a trial, or mix trials of two ranges) and the same fixed
    overrides (trials of other settings would be compared as one). The first run records the
    fixed overrides in the study."""
    wanted = distributions(space)
    for trial in study.get_trials(deepcopy=False):
        if trial.distributions and trial.distributions != wanted:
            keys = set(wanted) | set(trial.distributions)
            changed = sorted(k for k in keys if wanted.get(k) != trial.distributions.get(k))
            raise _another_search(study, sweep_dir, f"its space differs in {', '.join(changed)}")
    recorded = study.user_attrs.get(FIXED)
    if recorded is None:
        study.set_user_attr(FIXED, list(space.fixed))
    elif list(recorded) != list(space.fixed):
        raise _another_search(study, sweep_dir, f"its trials shared {' '.join(recorded) or '-'}")


def _another_search(study: optuna.Study, sweep_dir: Path, why: str) -> UserError:
    return UserError(
        f"study {study.study_name} in {sweep_dir} holds another search ({why}). Run the command "
        "that began it to continue it, or start a new study with hydra.sweeper.study_name=NAME "
        "(or hydra.sweep.dir=DIR)."
    )
