"""scripts/bench_sweep.py in its smallest setting: tiny models on 100 CIFAR-shaped images."""

from __future__ import annotations

import subprocess
import sys

from kd_command import REPO, kd_environment

SCRIPT = REPO / "scripts" / "bench_sweep.py"


def test_smallest_run_prints_each_point_and_the_ratio(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--train=100", "--test=50", "--epochs=1"]
        + ["--teacher=smallcnn", "--student=mlp"]
        + ["--set", "teacher.model.width=8", "student.model.hidden=[16]", "eval.latency_runs=2"]
        + ["plots=false"],
        cwd=tmp_path,
        env=kd_environment({"OMP_NUM_THREADS": "1"}),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 0.")]
    assert [row.split("|")[1].strip() for row in rows] == ["0.1", "0.3", "0.5", "0.9"]
    assert all(row.split("|")[5].strip().endswith("(reused)") for row in rows)
    [ratio] = [line for line in done.stdout.splitlines() if line.startswith("wall / sum")]
    assert float(ratio.split(":")[1].split()[0]) > 0
