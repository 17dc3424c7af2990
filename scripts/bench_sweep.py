"""Benchmark: a 4-point alpha sweep with the shared cache against 4 independent runs.

    python scripts/bench_sweep.py                       # small defaults: a few minutes on a CPU
    python scripts/bench_sweep.py --set device=cuda teacher=resnet50 teacher.epochs=30

Shared: one `kd train -m loss.alpha=...` sweep with one fresh cache directory, so the teacher,
its soft labels and the baseline are computed once and reused by the other three points.
Independent: four `kd train loss.alpha=...` runs, one after another, each with its own fresh
cache directory, so each computes everything. Both measure the whole command's wall time
(process start included), in one run of this script, and print the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALPHAS = ("0.1", "0.3", "0.5", "0.9")
# A teacher that costs several times the student, as in practice, yet small enough for a CPU.
DEFAULTS = [
    "teacher=smallcnn",
    "teacher.model.width=64",
    "teacher.epochs=8",
    "student=mlp",
    "student.epochs=4",
    "eval.latency_runs=10",
]


def kd_train(cwd: Path, args: list[str]) -> float:
    """Run `kd train ARGS` in `cwd`; its wall time in seconds."""
    cwd.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ}
    environment.pop("KD_CACHE_DIR", None)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "kdcli", "train", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"kd train {' '.join(args)} failed:\n{done.stderr}")
    return seconds


def teacher_builds(cwd: Path) -> int:
    """How many of the runs under `cwd` trained their teacher (rather than reusing it)."""
    reports = [json.loads(p.read_text()) for p in cwd.glob("outputs/**/report.json")]
    return sum(not r["teacher"]["reused"] for r in reports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help=f"kd train overrides for every run, after the defaults {' '.join(DEFAULTS)}",
    )
    args = parser.parse_args()
    common = [*DEFAULTS, *args.set]

    with tempfile.TemporaryDirectory(prefix="kd-bench-sweep-") as scratch:
        root = Path(scratch)
        shared_dir = root / "shared"
        shared = kd_train(
            shared_dir, ["-m", *common, f"loss.alpha={','.join(ALPHAS)}", f"cache_dir={root}/c"]
        )
        independent = 0.0
        for i, alpha in enumerate(ALPHAS):
            cache = root / f"cache-{i}"  # fresh each time: nothing to reuse
            independent += kd_train(
                root / "independent", [*common, f"loss.alpha={alpha}", f"cache_dir={cache}"]
            )
        builds = (teacher_builds(shared_dir), teacher_builds(root / "independent"))

    print(f"kd train {' '.join(common)}, loss.alpha in {', '.join(ALPHAS)}")
    print(f"shared cache, one 4-point sweep:  {shared:7.1f} s  (teacher trained {builds[0]}x)")
    print(f"4 independent runs, no cache:     {independent:7.1f} s  (teacher trained {builds[1]}x)")
    print(f"time ratio shared / independent:  {shared / independent:7.2f}")
    print(f"speed-up of the shared cache:     {independent / shared:7.2f}x")


if __name__ == "__main__":
    main()
