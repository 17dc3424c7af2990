"""scripts/bench_lm.py in its quickest setting: no sweeps, the key-value cache's timing only;
and its refusals, before any run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kd_command import REPO

SCRIPT = REPO / "scripts" / "bench_lm.py"


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_without_sweeps_it_times_writing_with_and_without_the_cache(tmp_path):
    done = bench("--sweeps", "none", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| precision | with the cache (s) | whole window per token (s) |")
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[1:]]
    assert [row[0] for row in rows] == ["fp32", "bf16"]
    for row in rows:
        assert float(row[1]) > 0 and float(row[2]) > 0 and row[3].endswith("x")


def test_an_unknown_sweep_is_refused_naming_the_choices(tmp_path):
    done = bench("--sweeps", "losses,nope", cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown nope; choose from losses, stores, on_policy, instruct" in done.stderr


@pytest.mark.parametrize(
    ("override", "key"),
    [("loss.lmbda=0.2", "loss.lmbda"), ("soft_labels.mode=generate", "soft_labels.mode")],
)
def test_a_key_the_instruct_sweep_sets_per_row_is_refused_in_set(tmp_path, override, key):
    done = bench("--sweeps", "instruct", "--set", "dataset.count=300", override, cwd=tmp_path)
    assert done.returncode == 2
    assert f"--set {override}: the instruct sweep sets {key} itself" in done.stderr
    assert not list(tmp_path.iterdir()), "refused before any run"
