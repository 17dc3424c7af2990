"""Shared fixtures. End-to-end tests drive the real command (`python -m kdcli`) in a subprocess,
started the one way tests/kd_command.py has."""

from __future__ import annotations

from pathlib import Path

import pytest
from kd_command import Result, run_kd
from kd_settings import TINY


@pytest.fixture
def tiny() -> list[str]:
    """Overrides for a `kd train` that finishes in seconds: tiny models, one epoch each."""
    return list(TINY)


@pytest.fixture
def kd(tmp_path: Path):
    """Run `kd ARGS` in a fresh working directory (its cache under outputs/cache); the keywords
    of kd_command.run_kd (cwd, env, launcher, timeout) pass through."""

    def run(*args: str, cwd: Path | None = None, **options) -> Result:
        return run_kd(*args, cwd=cwd or tmp_path, **options)

    return run
