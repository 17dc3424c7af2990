"""A trial's side: the objective it returns, and the per-epoch figures that reach the pruner."""

import pytest
from omegaconf import OmegaConf

from kdcli.errors import RunError
from kdcli.pipeline.metrics import JsonlLog
from kdcli.search.job import Pruned, TrialLink, TrialLog, complete, failed, link, pruned


class FakeTrial:
    def __init__(self, prune_at=None):
        self.reported, self.prune_at = {}, prune_at

    def report(self, value, step):
        self.reported[step] = value

    def should_prune(self):
        return self.prune_at is not None and max(self.reported) >= self.prune_at


def trial_log(tmp_path, trial, pruner="median"):
    log = TrialLog(JsonlLog(tmp_path), TrialLink("s", None, tmp_path, 1, pruner))
    log._trial = trial
    return log


def test_the_students_validation_figures_are_reported_each_epoch(tmp_path):
    trial = FakeTrial()
    log = trial_log(tmp_path, trial)
    log.row({"stage": "teacher", "epoch": 1, "val_top1": 0.9})
    log.row({"stage": "baseline", "epoch": 1, "val_top1": 0.5})
    log.row({"stage": "student", "epoch": 1, "loss": 1.0, "val_top1": 0.6})
    log.row({"stage": "student", "epoch": 2, "loss": 0.5, "val_top1": 0.8})
    assert trial.reported == {1: 0.6, 2: 0.8}
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4  # all still logged


def test_the_pruner_stops_the_run_and_without_one_nothing_is_pruned(tmp_path):
    log = trial_log(tmp_path, FakeTrial(prune_at=2))
    log.row({"stage": "student", "epoch": 1, "val_top1": 0.1})
    with pytest.raises(Pruned) as stop:
        log.row({"stage": "student", "epoch": 2, "val_top1": 0.1})
    assert pruned(stop.value) == {"state": "pruned", "epoch": 2}
    no_pruner = trial_log(tmp_path, FakeTrial(prune_at=1), pruner=None)
    no_pruner.row({"stage": "student", "epoch": 1, "val_top1": 0.1})  # reported, not pruned


def test_the_objective_is_the_validation_figure_never_test():
    report = {"metric": "top1", "student": {"top1": 0.99, "val_top1": 0.91}}
    assert complete(report) == {"state": "complete", "value": 0.91, "objective": "val_top1"}
    no_validation = complete({"metric": "top1", "student": {"top1": 0.99}})
    assert no_validation["state"] == "failed" and "val_top1" in no_validation["reason"]


def test_a_run_error_is_a_failed_trial_with_its_reason():
    outcome = failed(RunError("the loss is NaN at epoch 1\nmore"))
    assert outcome == {"state": "failed", "reason": "the loss is NaN at epoch 1"}


def test_a_job_knows_its_trial_only_under_a_search():
    hydra = OmegaConf.create({
        "runtime": {"choices": {"hydra/sweeper": "optuna"}},
        "job": {"env_set": {"KD_SEARCH_TRIAL_ID": "7"}},
        "sweeper": {"study_name": "s", "storage": None, "pruner": "median"},
        "sweep": {"dir": "outputs/search/s"},
    })  # fmt: skip
    found = link(hydra)
    assert found is not None and (found.trial_id, found.pruner) == (7, "median")
    hydra.runtime.choices["hydra/sweeper"] = "basic"
    assert link(hydra) is None


def test_a_job_reaches_its_trial_through_the_storage_and_is_pruned(tmp_path):
    import optuna
    from optuna.distributions import FloatDistribution

    from kdcli.search.study import open_storage

    study = optuna.create_study(study_name="s", storage=open_storage(None, tmp_path),
                                direction="maximize")  # fmt: skip
    space = {"loss.alpha": FloatDistribution(0.1, 0.9)}
    good = study.ask(space)
    good.report(0.9, 1)
    study.tell(good, 0.9)
    trial = study.ask(space)
    node = OmegaConf.create({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1})
    log = TrialLog(JsonlLog(tmp_path), TrialLink("s", None, tmp_path, trial._trial_id, node))
    with pytest.raises(Pruned):
        log.row({"stage": "student", "epoch": 1, "val_top1": 0.1})
    assert study.trials[trial.number].intermediate_values == {1: 0.1}


def test_a_stopped_run_reaches_the_inner_logger(tmp_path):
    """A pruned or failed trial's tracker (e.g. MLflow) ends its run: stop() is passed on."""

    class Inner(JsonlLog):
        stopped: list = []

        def stop(self, error):
            self.stopped.append(error)

    inner = Inner(tmp_path)
    log = TrialLog(inner, TrialLink("s", None, tmp_path, 1, "median"))
    log.stop(Pruned(2))
    assert [str(e) for e in inner.stopped] == ["pruned after epoch 2"]


def test_a_combination_the_checks_refuse_fails_the_trial(tmp_path, monkeypatch):
    """The pre-flight composes each searched value once; a combination of two (here
    compress.epochs above student.epochs) is checked in the trial's job and fails it."""
    from kdcli.config.checks import check_overrides
    from kdcli.search.job import refused

    monkeypatch.chdir(tmp_path)
    prune = ["compress=prune"]
    [bad] = check_overrides([*prune, "student.epochs=2", "compress.epochs=3"], values=False)
    outcome = refused(bad)
    assert outcome is not None and outcome["state"] == "failed"
    assert "compress.epochs=3" in outcome["reason"]
    [good] = check_overrides([*prune, "student.epochs=3", "compress.epochs=2"], values=False)
    assert refused(good) is None
