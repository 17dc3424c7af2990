"""Parallel `kd train` processes share one cache: one builds each entry, the rest reuse it.

These start the real command several times at once against one cache directory, the way a
SLURM array or Hydra's joblib launcher would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout
from kd_command import ONE_THREAD, start_kd
from kd_settings import TINY

from kdcli.store.cache import read_verified

# every run here is `kd train RUN ...` with ONE_THREAD: several runs share the machine's cores
RUN = ["train", *TINY, "baseline=false"]


def finish(process: subprocess.Popen) -> str:
    """Wait for `process`; its stderr, after checking that it succeeded."""
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    return stderr


def only_report(cwd: Path) -> dict:
    [path] = cwd.glob("outputs/runs/*/*/report.json")
    return json.loads(path.read_text())


def entries(cache: Path, kind: str) -> list[Path]:
    """The cache's complete entries of one kind (not the lock files, not temporary dirs)."""
    return [p for p in (cache / kind).iterdir() if p.is_dir() and not p.name.startswith(".")]


@pytest.fixture(scope="module")
def three_at_once(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Three concurrent runs with one teacher setting and different alphas, one shared cache."""
    root = tmp_path_factory.mktemp("concurrent")
    cache = root / "cache"
    alphas = ("0.2", "0.5", "0.8")
    processes = [
        start_kd(
            *RUN, f"cache_dir={cache}", f"loss.alpha={alpha}", cwd=root / f"job{i}", env=ONE_THREAD
        )
        for i, alpha in enumerate(alphas)
    ]
    for process in processes:
        finish(process)
    return cache, [only_report(root / f"job{i}") for i in range(len(alphas))]


def test_three_concurrent_runs_train_the_teacher_exactly_once(three_at_once):
    cache, reports = three_at_once
    assert sorted(r["teacher"]["reused"] for r in reports) == [False, True, True]
    assert sorted(r["soft_labels"]["reused"] for r in reports) == [False, True, True]
    assert len({r["teacher"]["top1"] for r in reports}) == 1, "one teacher serves all three"
    assert len(entries(cache, "teachers")) == 1
    assert len(entries(cache, "soft_labels")) == 1
    leftovers = [p.name for p in (cache / "teachers").iterdir() if p.name.startswith(".")]
    assert leftovers == [], "no temporary directories are left behind"


def test_a_corrupted_soft_label_file_is_recomputed_not_trusted(three_at_once, tmp_path):
    shared, _ = three_at_once
    cache = tmp_path / "cache"
    shutil.copytree(shared, cache)
    [entry] = entries(cache, "soft_labels")
    logits = entry / "logits.npy"
    good = logits.read_bytes()
    logits.write_bytes(good[: len(good) // 2])  # truncated, as by a full disk or a killed copy

    finish(start_kd(*RUN, f"cache_dir={cache}", cwd=tmp_path / "run", env=ONE_THREAD))
    report = only_report(tmp_path / "run")
    assert report["teacher"]["reused"] is True
    assert report["soft_labels"]["reused"] is False, "the damaged entry was not used"
    assert logits.read_bytes() == good, "the teacher's logits were computed again"
    assert read_verified(entry) is not None


def lock_is_held(lock: Path) -> bool:
    """True while some process holds the flock on `lock`."""
    if not lock.exists():
        return False
    try:
        with FileLock(lock, timeout=0):
            return False
    except Timeout:
        return True


def test_a_run_killed_while_building_the_teacher_does_not_block_the_next(tmp_path):
    cache = tmp_path / "cache"
    run = [*RUN, "teacher.epochs=2", f"cache_dir={cache}"]
    victim = start_kd(*run, cwd=tmp_path / "killed", env=ONE_THREAD)
    deadline = time.monotonic() + 300
    while not any(lock_is_held(lock) for lock in cache.glob("teachers/*.lock")):
        assert victim.poll() is None, f"finished before it could be killed: {victim.stderr.read()}"
        assert time.monotonic() < deadline, "the run never took the teacher's lock"
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=60)

    started = time.monotonic()
    finish(start_kd(*run, cwd=tmp_path / "next", env=ONE_THREAD))
    assert time.monotonic() - started < 300
    report = only_report(tmp_path / "next")
    assert report["teacher"]["reused"] is False, "the killed run left no teacher behind"
    assert not list((tmp_path / "killed").glob("outputs/runs/*/*/report.json"))
    assert len(entries(cache, "teachers")) == 1
    leftovers = [p.name for p in (cache / "teachers").iterdir() if p.name.startswith(".")]
    assert leftovers == [], "the killed run's half-built entry was cleaned up"
