"""scripts/bench_precision.py in its smallest setting: tiny digits models, one seed."""

from __future__ import annotations

import subprocess
import sys

from kd_command import REPO
from kd_settings import TINY

SCRIPTS = REPO / "scripts"


def test_smallest_run_prints_fp32_and_bf16_rows(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_precision.py"), "--only=digits", "--seeds=0"]
        + ["--set", *TINY],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| setting | precision | ran as | teacher top-1 % |")
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[1:]]
    assert [row[1:3] for row in rows] == [["fp32", "fp32"], ["bf16", "bf16"]]
    for row in rows:
        assert all(" ± " in cell for cell in row[3:7])  # three models' top-1 and the gain
    assert rows[1][-1].endswith("x)"), "bf16's speed is given against fp32's"
