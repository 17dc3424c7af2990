"""`kd train -m hydra/sweeper=optuna ...` end to end on digits: a search of 8 trials with one
teacher and one soft-label set, judged on validation; kill -9 and the same command resumes;
a bound out of range stops it before any trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from kd_command import command_line, kd_environment
from kd_settings import TINY
from optuna.trial import TrialState

SEARCH = ["train", "-m", "hydra/sweeper=optuna", *TINY, "baseline=false",
          "loss.alpha=interval(0.1,0.9)", "loss.temperature=interval(1.0,8.0)"]  # fmt: skip
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def record(cwd: Path) -> dict:
    [path] = cwd.glob("outputs/search/*/search.json")
    return json.loads(path.read_text())


def cache_entries(cwd: Path, kind: str) -> list[Path]:
    return [p for p in (cwd / "outputs/cache" / kind).iterdir() if p.is_dir()]


@pytest.mark.e2e
def test_a_search_of_8_trials_shares_one_teacher_and_picks_on_validation(kd, tmp_path):
    done = kd(*SEARCH, "hydra.sweeper.n_trials=8", env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    found = record(tmp_path)
    assert found["kind"] == "kdcli search" and found["objective"] == "val_top1"
    trials = found["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 8
    assert set(found["space"]) == {"loss.alpha", "loss.temperature"}
    best = max(trials, key=lambda t: t["value"])
    assert found["best"] == best["number"]
    sweep_dir = next(tmp_path.glob("outputs/search/*"))
    for trial in trials:
        report = json.loads((sweep_dir / trial["run_dir"] / "report.json").read_text())
        assert report["student"]["val_top1"] == pytest.approx(trial["value"])  # not test
        assert "1" in trial["intermediate"]
    assert len(cache_entries(tmp_path, "teachers")) == 1
    assert len(cache_entries(tmp_path, "soft_labels")) == 1
    assert f"best trial {best['number']}" in done.stdout + done.stderr
    shown = kd("report", str(sweep_dir))  # search.json as kd report reads it (the contract)
    assert shown.returncode == 0, shown.stderr
    assert f"best trial: {best['number']}" in shown.stdout


def complete(cwd: Path) -> list[dict]:
    try:
        return [t for t in record(cwd)["trials"] if t["state"] == "complete"]
    except (ValueError, FileNotFoundError):  # not written yet
        return []


@pytest.mark.e2e
def test_a_search_killed_with_kill_9_resumes_keeping_its_finished_trials(kd, tmp_path):
    args = [*SEARCH, "hydra.sweeper.n_trials=4"]
    process = subprocess.Popen(command_line(args), cwd=tmp_path, start_new_session=True,
                               env=kd_environment(ONE_THREAD), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(complete(tmp_path)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = {t["number"]: t["value"] for t in complete(tmp_path)}
    assert 2 <= len(before) < 4, "the search ended before it could be killed"

    again = kd(*args, env=ONE_THREAD)  # the same command
    assert again.returncode == 0, again.stderr
    after = {t["number"]: t["value"] for t in complete(tmp_path)}
    assert len(after) == 4
    assert {n: after[n] for n in before} == before  # kept, not run again
    assert len(list(tmp_path.glob("outputs/search/*"))) == 1  # the same sweep directory


@pytest.mark.e2e
@pytest.mark.parametrize(
    "bad, key",
    [("loss.alpha=interval(0.1,1.5)", "loss.alpha"),  # a bound outside [0, 1]
     ("dataset.val_fraction=0", "dataset.val_fraction")],  # a search judges on validation
)  # fmt: skip
def test_bad_input_stops_the_search_before_any_trial(kd, tmp_path, bad, key):
    done = kd("train", "-m", "hydra/sweeper=optuna", *TINY, "loss.temperature=interval(1,8)", bad)
    assert done.returncode == 2
    assert key in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.e2e
def test_failed_trials_do_not_end_the_search(kd, tmp_path):
    diverging = "student.optimizer.lr=choice(1e30)"  # NaN loss: a RunError in every trial
    done = kd(*SEARCH[:-2], diverging, "hydra.sweeper.n_trials=2", env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    found = record(tmp_path)
    assert [t["state"] for t in found["trials"]] == ["failed", "failed"]
    assert all("nan" in t["reason"] for t in found["trials"]) and found["best"] is None


def test_bad_input_in_a_batch_is_told_with_its_batch_mates_and_said():
    """A job that met bad input: every trial of its batch is told (the finished ones kept),
    the stopped one as failed with its reason and marked to run again."""
    import optuna
    from hydra.core.utils import JobReturn, JobStatus

    from kdcli.search.study import STOPPED_BY_BAD_INPUT
    from kdcli.search.sweep import tell_all

    study = optuna.create_study(direction="maximize")
    trials = [study.ask() for _ in range(2)]
    outcomes = [{"state": "complete", "value": 0.5}, {"state": "bad input", "reason": "x.pt?"}]
    results = [JobReturn(status=JobStatus.COMPLETED, _return_value=o) for o in outcomes]
    assert tell_all(study, trials, results) is True
    finished, stopped = study.get_trials()
    assert finished.state == TrialState.COMPLETE and finished.value == 0.5
    assert stopped.state == TrialState.FAIL and stopped.user_attrs[STOPPED_BY_BAD_INPUT]
    assert stopped.user_attrs["reason"] == "bad input: x.pt?"
    assert tell_all(study, [study.ask()], results[:1]) is False


@pytest.mark.e2e
def test_bad_input_in_a_trial_stops_the_search_and_the_fixed_command_runs_it_again(kd, tmp_path):
    from kdcli.models.smallcnn import SmallCNN

    # a teacher checkpoint of another width: the pre-flight sees the file, the job reads it
    checkpoint = tmp_path / "teacher.pt"
    torch.save(SmallCNN(10, 1, 8, width=16).state_dict(), checkpoint)
    args = [*SEARCH, "hydra.sweeper.n_trials=2", f"teacher.checkpoint={checkpoint}"]
    stopped = kd(*args, env=ONE_THREAD)
    assert stopped.returncode == 2, stopped.stderr
    assert "does not match" in stopped.stderr and "Traceback" not in stopped.stderr
    assert "search: stopped on bad input" in stopped.stdout  # Hydra's log
    [trial] = record(tmp_path)["trials"]
    assert trial["state"] == "failed" and trial["reason"].startswith("bad input: ")

    torch.save(SmallCNN(10, 1, 8, width=8).state_dict(), checkpoint)  # the fix
    again = kd(*args, env=ONE_THREAD)  # the same command
    assert again.returncode == 0, again.stderr
    assert f"trial {trial['number']} met bad input last time; it runs again" in again.stdout
    trials = record(tmp_path)["trials"]
    assert [t["state"] for t in trials] == ["complete", "complete"]
    [retry] = [t for t in trials if t.get("retry_of") == trial["number"]]
    assert retry["params"] == trial["params"]


def test_a_crashed_job_is_raised_after_its_batch_mates_are_told():
    """One crash in a batch: the trials that finished are told (kept), then the crash."""
    import optuna
    from hydra.core.utils import JobReturn, JobStatus

    from kdcli.search.sweep import tell_all

    study = optuna.create_study(direction="maximize")
    trials = [study.ask() for _ in range(3)]
    crashed = JobReturn(status=JobStatus.FAILED, _return_value=IndexError("boom"))
    results = [
        JobReturn(status=JobStatus.COMPLETED, _return_value={"state": "complete", "value": 0.5}),
        crashed,
        JobReturn(status=JobStatus.COMPLETED, _return_value={"state": "complete", "value": 0.7}),
    ]
    with pytest.raises(IndexError, match="boom"):
        tell_all(study, trials, results)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
