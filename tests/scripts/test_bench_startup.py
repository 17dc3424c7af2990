"""scripts/bench_startup.py with one run of each command: it prints a row per command with its
median wall and CPU time and whether the 0.5 s goal is met (not asserted: a busy machine)."""

from __future__ import annotations

import subprocess
import sys

from kd_command import REPO


def test_one_run_prints_a_row_per_command(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_startup.py"), "--runs", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [cell.strip() for cell in rows[0]][:2] == ["command", "median wall s"]
    names = [row[0].strip() for row in rows[1:]]
    assert names[:3] == ["python -c pass", "kd --help", "kd list"]
    assert "kd train --help" in names
    for row in rows[2:]:
        assert float(row[1]) > 0 and row[-1].strip() in ("met", "MISSED")
