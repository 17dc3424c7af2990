"""The study's storage, name, and what a resumed search does with a killed one's trials."""

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from kdcli.config.search_space import Axis, Space
from kdcli.errors import UserError
from kdcli.search.record import record
from kdcli.search.study import (
    RETRY_OF,
    STOPPED_BY_BAD_INPUT,
    Settings,
    check_same_search,
    finished_count,
    open_storage,
    open_study,
    pruner,
    retry_bad_input,
    retry_interrupted,
    study_name,
)

SPACE = Space({"loss.alpha": Axis("loss.alpha", "float", 0.1, 0.9)}, ["teacher.epochs=1"])
DISTRIBUTIONS = {"loss.alpha": FloatDistribution(0.1, 0.9)}


def settings(**changes):
    base = {"sampler": OmegaConf.create({"_target_": "optuna.samplers.TPESampler", "seed": 0}),
            "n_trials": 4}  # fmt: skip
    return Settings.read({**base, **changes})


def test_the_study_name_follows_the_search_not_the_time():
    other = Space(SPACE.axes, ["teacher.epochs=2"])
    assert study_name(SPACE) == study_name(Space(dict(SPACE.axes), list(SPACE.fixed)))
    assert study_name(SPACE) != study_name(other)
    assert study_name(SPACE).startswith("alpha-")


def test_a_killed_searchs_running_trials_are_failed_and_asked_again(tmp_path):
    study = open_study(settings(), "s", tmp_path)
    done = study.ask(DISTRIBUTIONS)
    study.tell(done, 0.5)
    killed = [study.ask(DISTRIBUTIONS) for _ in range(2)]  # left RUNNING by kill -9
    assert finished_count(study) == 1

    again = open_study(settings(), "s", tmp_path)  # the same command, run again
    assert retry_interrupted(again) == [t.number for t in killed]
    retry = again.ask(DISTRIBUTIONS)
    assert retry.params == killed[0].params  # same config: the student resumes from its state
    assert retry.user_attrs[RETRY_OF] == killed[0].number
    again.tell(retry, 0.7)
    assert finished_count(again) == 2  # the kept trial and the retry; the killed ones not
    assert again.trials[done.number].value == 0.5
    states = {t.number: t.state for t in again.trials}
    assert states[killed[0].number] == TrialState.FAIL

    written = record(again, SPACE, "val_top1", 4)
    numbers = [t["number"] for t in written["trials"]]
    assert killed[0].number not in numbers and killed[1].number not in numbers
    assert written["best"] == retry.number
    [entry] = [t for t in written["trials"] if t["number"] == retry.number]
    assert entry[RETRY_OF] == killed[0].number  # kd report names the trial run again


def test_a_trial_that_bad_input_stopped_runs_again_once_on_the_next_run(tmp_path):
    study = open_study(settings(), "s", tmp_path)
    study.tell(study.ask(DISTRIBUTIONS), 0.5)
    stopped = study.ask(DISTRIBUTIONS)
    stopped.set_user_attr(STOPPED_BY_BAD_INPUT, True)  # as the sweeper tells it
    study.tell(stopped, state=TrialState.FAIL)

    again = open_study(settings(), "s", tmp_path)  # the same command, after the fix
    assert retry_bad_input(again) == [stopped.number]
    assert retry_bad_input(again) == [], "enqueued once, however often the command runs"
    retry = again.ask(DISTRIBUTIONS)
    assert retry.params == stopped.params and retry.user_attrs[RETRY_OF] == stopped.number
    again.tell(retry, 0.6)
    assert finished_count(again) == 2, "the retry stands for the stopped trial"
    assert retry_bad_input(again) == []


def test_a_resumed_seeded_sampler_does_not_draw_its_first_points_again(tmp_path):
    first = open_study(settings(), "s", tmp_path)
    drawn = first.ask(DISTRIBUTIONS).params
    first.tell(0, 0.1)
    again = open_study(settings(), "s", tmp_path)
    assert again.ask(DISTRIBUTIONS).params != drawn


def test_a_journal_file_and_an_rdb_url_are_storages(tmp_path):
    journal = open_storage(f"journal://{tmp_path}/j/study.log", tmp_path)
    assert isinstance(journal, optuna.storages.JournalStorage)
    url = open_storage(f"sqlite:///{tmp_path}/other.db", tmp_path)
    assert isinstance(url, optuna.storages.RDBStorage)
    with pytest.raises(UserError, match="hydra.sweeper.storage"):
        open_storage("nosuchdialect://x", tmp_path)


def test_no_pruner_means_none_and_median_means_the_median_pruner():
    assert isinstance(pruner(None), optuna.pruners.NopPruner)
    assert isinstance(pruner("median"), optuna.pruners.MedianPruner)
    node = OmegaConf.create({"_target_": "optuna.pruners.MedianPruner", "n_warmup_steps": 2})
    assert isinstance(pruner(node), optuna.pruners.MedianPruner)
    with pytest.raises(UserError, match="Optuna's own"):
        pruner(OmegaConf.create({"_target_": "os.system"}))


def test_a_study_continued_under_its_name_must_be_the_same_search(tmp_path):
    study = open_study(settings(), "s", tmp_path)
    check_same_search(study, SPACE, tmp_path)  # the first run records the fixed overrides
    study.tell(study.ask(DISTRIBUTIONS), 0.5)
    again = open_study(settings(), "s", tmp_path)
    check_same_search(again, SPACE, tmp_path)  # the same command: fine
    narrower = Space({"loss.alpha": Axis("loss.alpha", "float", 0.4, 0.5)}, SPACE.fixed)
    choices = Space({"loss.alpha": Axis("loss.alpha", "categorical", choices=(0.2, 0.5))}, [])
    other_fixed = Space(SPACE.axes, ["teacher.epochs=2"])
    for other, words in [(narrower, "differs in loss.alpha"), (choices, "differs in loss.alpha"),
                         (other_fixed, "shared teacher.epochs=1")]:  # fmt: skip
        with pytest.raises(UserError, match=words) as refused:
            check_same_search(again, other, tmp_path)
        assert "hydra.sweeper.study_name" in str(refused.value)
