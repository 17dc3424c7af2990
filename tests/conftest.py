"""Shared fixtures. End-to-end tests drive the real command (`python -m kdcli`) in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from kd_settings import TINY


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    cwd: Path

    def runs(self) -> list[Path]:
        """Run directories (the ones holding a report.json), oldest first."""
        return sorted(p.parent for p in self.cwd.glob("outputs/**/report.json"))

    def report(self) -> dict:
        runs = self.runs()
        assert len(runs) == 1, f"expected one run, found {runs}\n{self.stderr}"
        return json.loads((runs[0] / "report.json").read_text())


@pytest.fixture
def tiny() -> list[str]:
    """Overrides for a `kd train` that finishes in seconds: tiny models, one epoch each."""
    return list(TINY)


@pytest.fixture
def kd(tmp_path: Path):
    """Run `kd ARGS` in a fresh working directory (its cache under outputs/cache)."""

    def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> Result:
        where = cwd or tmp_path
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        environment.pop("KD_CACHE_DIR", None)
        done = subprocess.run(
            [sys.executable, "-m", "kdcli", *args],
            cwd=where,
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return Result(done.returncode, done.stdout, done.stderr, where)

    return run
