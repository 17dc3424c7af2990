"""Resume by rerunning, end to end: `kd train` stopped by SIGTERM or killed with kill -9 in the
middle of a stage, then run again with the same command (a new run directory), ends with
the accuracies of a run that was never stopped."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from kd_command import ONE_THREAD, run_kd, start_kd
from kd_settings import TINY

from kdcli.store.cache import read_verified

# Three epochs a stage and a saved state after every step, so that a signal lands mid-epoch.
RUN = ["train", *TINY, "teacher.epochs=3", "student.epochs=3", "checkpoint.every_s=0"]
ACCURACIES = ("teacher", "student", "baseline")


def accuracies(report: dict) -> dict[str, float]:
    return {role: report[role]["top1"] for role in ACCURACIES}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    """The report of the same run, never stopped."""
    result = run_kd(*RUN, cwd=tmp_path_factory.mktemp("straight"), env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    return result.report()


def stop_when_saved(process: subprocess.Popen, state: str, cache: Path, signum: int) -> str:
    """Send `signum` once a state file matching `state` (a glob in the cache) appears; return
    the process's stderr."""
    deadline = time.monotonic() + 300
    while not list(cache.glob(state)):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no training state appeared"
        time.sleep(0.005)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return stderr


def rerun(cwd: Path, cache: Path) -> dict:
    """The same command again, in a new run directory; its report."""
    result = run_kd(*RUN, f"cache_dir={cache}", cwd=cwd, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    return result.report()


def assert_no_torn_entries(cache: Path) -> None:
    """Every entry in the cache is complete and verified; no temporary files are left."""
    for entry in cache.glob("*/*"):
        assert not entry.name.startswith("."), f"left behind: {entry}"
        if entry.is_dir():
            assert read_verified(entry) is not None, entry
    assert not list(cache.glob("*/*.state.pt")), "finished stages remove their state"


def test_sigterm_mid_distillation_saves_and_the_same_command_continues(straight, tmp_path):
    cache = tmp_path / "cache"
    process = start_kd(*RUN, f"cache_dir={cache}", cwd=tmp_path / "first", env=ONE_THREAD)
    stderr = stop_when_saved(process, "students/*.state.pt", cache, signal.SIGTERM)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert "kd: stopped by SIGTERM; saved the state of student, epoch" in stderr, stderr
    assert "Run the same command again to continue." in stderr

    resumed = rerun(tmp_path / "second", cache)
    assert resumed["teacher"]["reused"] is True
    assert resumed["stages"]["distill"]["resumed_from"] is not None
    assert accuracies(resumed) == accuracies(straight)
    assert_no_torn_entries(cache)


def test_kill_9_mid_teacher_then_the_same_command_gives_the_same_accuracies(straight, tmp_path):
    cache = tmp_path / "cache"
    process = start_kd(*RUN, f"cache_dir={cache}", cwd=tmp_path / "first", env=ONE_THREAD)
    stop_when_saved(process, "teachers/*.state.pt", cache, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    entries = [p for p in (cache / "teachers").iterdir() if p.is_dir()]
    assert all(p.name.startswith(".") for p in entries), "only the killed build's temporary dir"

    resumed = rerun(tmp_path / "second", cache)
    assert resumed["stages"]["teacher"]["resumed_from"] is not None
    assert accuracies(resumed) == accuracies(straight)
    assert_no_torn_entries(cache)
