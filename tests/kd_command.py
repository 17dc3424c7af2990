"""The one way the tests start the real command, `python -m kdcli`, in a subprocess: its
environment, its command line, and what it leaves behind.

Imported as `from kd_command import run_kd` (a module name no other test folder uses, like
kd_settings). Most tests take the `kd` fixture of tests/conftest.py, a thin wrapper over
`run_kd`; module-scoped fixtures and helpers call `run_kd` or `start_kd` directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the repository: configs/, scripts/, pyproject.toml

# One thread per run: for runs that share the machine's cores with others (concurrent runs,
# torchrun's processes, multiruns next to the other pytest workers).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}

# Variables the parent may hold that would change what kd does: another cache, or a place
# in a torchrun group. Dropped unless the caller sets them.
INHERITED_NOT_WANTED = ("KD_CACHE_DIR", "RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass
class Result:
    """A finished kd: the attributes of a CompletedProcess, and the directory it ran in."""

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


def torchrun(processes: int) -> list[str]:
    """A launcher for `run_kd`: kd under torchrun, `processes` of it on this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
    ]


def kd_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, unbuffered, with `env` on top; see INHERITED_NOT_WANTED."""
    env = dict(env or {})
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    for name in INHERITED_NOT_WANTED:
        if name not in env:
            environment.pop(name, None)
    return environment


def command_line(args: Sequence[str], launcher: Sequence[str] | None = None) -> list[str]:
    """`python -m kdcli ARGS`, or `LAUNCHER kdcli ARGS` (a launcher ends in its `-m`)."""
    return [*(launcher or [sys.executable, "-m"]), "kdcli", *args]


def run_kd(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    launcher: Sequence[str] | None = None,
    timeout: float = 600,
) -> Result:
    """Run `kd ARGS` in `cwd` (made if missing) and wait for it."""
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        command_line(args, launcher),
        cwd=cwd,
        env=kd_environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr, cwd)


def start_kd(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    launcher: Sequence[str] | None = None,
) -> subprocess.Popen:
    """Start `kd ARGS` in `cwd` (made if missing) without waiting: text pipes for its output."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        command_line(args, launcher),
        cwd=cwd,
        env=kd_environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
