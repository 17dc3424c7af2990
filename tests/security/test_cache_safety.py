"""The cache tools lose nothing by accident: the real `kd cache rm` and `kd train` in a
subprocess (about 1.5 s a `kd cache`, 4 s a `kd train`). The finer cases run in process in
tests/cli/test_cache_command.py and tests/store/test_cache.py.

Every `kd cache` here reads an empty stdin, as in a script: never a terminal that it could ask.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from kd_command import ONE_THREAD, command_line, kd_environment
from kd_settings import TINY

from kdcli.store.cache import ArtifactCache


def write(tmp: Path) -> dict:
    (tmp / "model.pt").write_bytes(b"weights")
    return {}


@pytest.fixture
def cache(tmp_path) -> Path:
    """kd's default cache in `tmp_path` (outputs/cache): two teachers and their soft labels."""
    root = tmp_path / "outputs" / "cache"
    with ArtifactCache(root) as store:
        for kind, key in [("teachers", "aaaa"), ("teachers", "bbbb"), ("soft_labels", "cccc")]:
            store.get_or_make(kind, "t", key, write)
    return root


def kd_cache(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command_line(["cache", *args]),
        cwd=cwd,
        env=kd_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def entries(cache: Path) -> list[str]:
    return sorted(f"{p.parent.name}/{p.name}" for p in cache.glob("*/*") if p.is_dir())


EVERY_ENTRY = ["soft_labels/t-cccc", "teachers/t-aaaa", "teachers/t-bbbb"]


def test_rm_of_an_empty_name_or_of_slash_exits_2_and_removes_nothing(cache):
    for name in ("", "/"):  # `kd cache rm "$UNSET"`, `kd cache rm "$UNSET/"`
        done = kd_cache(cache.parent.parent, "rm", name)
        assert done.returncode == 2, done.stderr
        assert f'kd: error: kd cache rm "{name}": not the name of an item' in done.stderr
        assert "Traceback" not in done.stderr
    assert entries(cache) == EVERY_ENTRY


def test_rm_keeps_and_names_an_entry_that_a_running_job_uses(cache):
    with ArtifactCache(cache) as running:  # what a kd train that reused the entry holds
        assert running.get_or_make("teachers", "t", "aaaa", write).reused
        done = kd_cache(cache.parent.parent, "rm", "teachers/t-aaaa")
    assert done.returncode == 1, done.stderr
    assert "kept teachers/t-aaaa: a running job holds it" in done.stderr
    assert entries(cache) == EVERY_ENTRY


def test_rm_of_several_items_without_yes_exits_2_when_stdin_is_no_terminal(cache):
    done = kd_cache(cache.parent.parent, "rm", "teachers/")
    assert done.returncode == 2, done.stderr
    assert "will remove teachers/t-aaaa (" in done.stdout
    assert "will remove teachers/t-bbbb (" in done.stdout
    assert "2 items match (listed above)" in done.stderr and "Add --yes" in done.stderr
    assert entries(cache) == EVERY_ENTRY


def test_rm_older_than_a_time_with_a_zone(cache):
    manifest = cache / "teachers" / "t-bbbb" / "manifest.json"
    long_ago = datetime(2019, 6, 1).timestamp()
    os.utime(manifest, (long_ago, long_ago))
    done = kd_cache(cache.parent.parent, "rm", "--older-than", "2020-01-01T00:00+00:00")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("removed teachers/t-bbbb (")
    assert entries(cache) == ["soft_labels/t-cccc", "teachers/t-aaaa"]


# `kd train`, with the teacher's cache entry deleted by hand (rm -rf, past the locks) after
# the teacher stage and before the evaluation reads its checkpoint
DELETED_BEFORE_EVALUATION = """
import shutil, sys
from kdcli.cli.main import main
from kdcli.pipeline import run

evaluate = run.evaluate_stage

def evaluate_without_the_entry(ctx, models, *given):
    shutil.rmtree(models["teacher"].checkpoint.parent)
    return evaluate(ctx, models, *given)

run.evaluate_stage = evaluate_without_the_entry
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_whose_cache_entry_vanished_exits_1_saying_to_run_it_again(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", DELETED_BEFORE_EVALUATION, "train", *TINY, "baseline=false"],
        cwd=tmp_path,
        env=kd_environment(ONE_THREAD),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [failed] = [line for line in done.stderr.splitlines() if line.startswith("kd: failed:")]
    assert failed.startswith("kd: failed: the cache entry teachers/smallcnn-")
    assert "in outputs/cache vanished while this run used it" in failed
    assert failed.endswith("Run the same command again: it builds the entry anew.")
