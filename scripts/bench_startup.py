"""Benchmark: how long the commands a user types to find their way take, against Python's own
start-up, in one script run.

    python scripts/bench_startup.py              # 7 runs of each, medians
    python scripts/bench_startup.py --runs 15

Each command is `python -m kdcli ...` in a subprocess (what `kd ...` runs), timed from start to
exit, `--runs` times in turn; the table gives each one's median wall, what kd adds to
`python -c pass` (the interpreter's start), and the median CPU time (user + system) the process
used, which a machine busy with other work inflates less than the wall. The goal (issue 27):
`kd --help`, `kd list` and `kd train --help` under 0.5 s. tests/cli/test_fast_commands.py
checks the reason they are fast (torch is never imported on these paths) without a clock.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "kd --help": ["-m", "kdcli", "--help"],
    "kd list": ["-m", "kdcli", "list"],
    "kd list loss": ["-m", "kdcli", "list", "loss"],
    "kd train --help": ["-m", "kdcli", "train", "--help"],
    "kd completion (a Tab on `kd train student.`)": [
        *("-m", "kdcli", "completion", "bash", "--line=kd train student."),
    ],
}
GOAL_S = 0.5


def measure(args: list[str], cwd: str) -> tuple[float, float]:
    """Wall seconds from start to exit of `python ARGS` (its output thrown away), and the CPU
    seconds it used."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"python {' '.join(args)} failed:\n{done.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each command (median)")
    runs = parser.parse_args().runs
    walls: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpus: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as cwd:
        for args in COMMANDS.values():
            measure(args, cwd)  # once unmeasured: files read from disk the first time
        for _ in range(runs):  # in turn, so that a busy moment falls on every command alike
            for name, args in COMMANDS.items():
                seconds, cpu = measure(args, cwd)
                walls[name].append(seconds)
                cpus[name].append(cpu)
    python = statistics.median(walls["python -c pass"])
    print(f"{runs} runs each; goal: a median wall under {GOAL_S} s\n")
    print("| command | median wall s | min-max s | minus python -c pass | median CPU s | goal |")
    print("|---|---|---|---|---|---|")
    for name, seconds in walls.items():
        median = statistics.median(seconds)
        kd = name != "python -c pass"
        own = f"{median - python:.3f}" if kd else ""
        met = ("met" if median < GOAL_S else "MISSED") if kd else ""
        print(f"| {name} | {median:.3f} | {min(seconds):.3f}-{max(seconds):.3f} | {own} | "
              f"{statistics.median(cpus[name]):.3f} | {met} |")  # fmt: skip


if __name__ == "__main__":
    main()
