"""Benchmark: what a sweep point costs beyond its own distillation, once the cache is filled.

    OMP_NUM_THREADS=1 python scripts/bench_sweep.py     # CIFAR-shaped: ~3.5 min on a 2-core CPU
    python scripts/bench_sweep.py --train 100 --test 50 --epochs 1 --teacher smallcnn --student mlp

CIFAR-10 files (random images in the on-disk layout) go into a temporary directory; a
resnet32x4 teacher and a resnet8x4 student (`--teacher`, `--student`; batch 64, `--epochs`
each) run once with `loss.alpha=0.1`, which fills the cache (teacher, soft labels, baseline
and their evaluations); then one 4-point `kd train -m loss.alpha=...` sweep runs, timed as a
whole command. Printed: each point's distill and evaluate stages (report.json `stages`,
seconds), beside the student's own share of the evaluation (its test pass and measurements)
and the teacher's and baseline's (read from the cache: `evaluation_reused`), and the sweep's
wall over the sum of its distill stages (goal: at most 1.5). `--keep DIR` keeps the data and
the cache in DIR, and a later run with the same DIR reuses them.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ALPHAS = ("0.1", "0.3", "0.5", "0.9")
GOAL = 1.5


def write_cifar10(root: Path, train: int, test: int) -> None:
    """torchvision's CIFAR-10 layout (5 training batches, a test batch) of random images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = [train // 5 + (i < train % 5) for i in range(5)]
    batches = [(f"data_batch_{i + 1}", n) for i, n in enumerate(sizes)] + [("test_batch", test)]
    for name, count in batches:
        entry = {
            "batch_label": name,
            "labels": (np.arange(count) % 10).tolist(),
            "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            "filenames": [f"{i}.png" for i in range(count)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))


def kd_train(cwd: Path, args: list[str]) -> float:
    """Run `kd train ARGS` in `cwd`; its wall time in seconds."""
    cwd.mkdir(parents=True, exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if k != "KD_CACHE_DIR"}
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
        sys.exit(f"kd train {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000, help="training images")
    parser.add_argument("--test", type=int, default=1000, help="test images")
    parser.add_argument("--epochs", type=int, default=2, help="teacher and student epochs")
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument(
        "--keep", type=Path, help="work in this directory and keep it (data, cache, runs)"
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kd-bench-sweep-") as scratch:
        root = args.keep.resolve() if args.keep else Path(scratch)
        if not (root / "data").exists():  # (--keep: made by an earlier run)
            write_cifar10(root / "data", args.train, args.test)
        common = [
            "dataset=cifar10",
            f"dataset.root={root / 'data'}",
            f"teacher={args.teacher}",
            f"student={args.student}",
            f"teacher.epochs={args.epochs}",
            f"student.epochs={args.epochs}",
            "teacher.batch_size=64",
            "student.batch_size=64",
            f"cache_dir={root / 'cache'}",
            *args.set,
        ]
        fill = kd_train(root / "fill", [*common, f"loss.alpha={ALPHAS[0]}"])
        sweep_dir = root / time.strftime("sweep-%H%M%S")
        sweep = kd_train(sweep_dir, ["-m", *common, f"loss.alpha={','.join(ALPHAS)}"])
        reports = [json.loads(p.read_text()) for p in sweep_dir.glob("**/report.json")]
    if len(reports) != len(ALPHAS):
        sys.exit(f"the sweep wrote {len(reports)} reports, not {len(ALPHAS)}")
    reports.sort(key=lambda r: r["loss"]["alpha"])

    shown = [o for o in common if not o.startswith(("dataset.root=", "cache_dir="))]
    print(f"kd train -m {' '.join(shown)} loss.alpha={','.join(ALPHAS)}")
    print(f"({args.train} training and {args.test} test images; cache filled in {fill:.1f} s)")
    print("| alpha | distill s | evaluate s | student's evaluation s | teacher's + baseline's s |")
    print("|---|---:|---:|---:|---:|")
    distill = 0.0
    for report in reports:
        stages = report["stages"]
        distill += stages["distill"]["seconds"]
        own = report["student"].get("evaluation_seconds", float("nan"))
        cached = [report[role] for role in ("teacher", "baseline") if role in report]
        others = sum(figures.get("evaluation_seconds", float("nan")) for figures in cached)
        reused = all(figures.get("evaluation_reused") for figures in cached)
        print(
            f"| {report['loss']['alpha']} | {stages['distill']['seconds']:.1f} "
            f"| {stages['evaluate']['seconds']:.1f} | {own:.1f} "
            f"| {others:.2f} ({'reused' if reused else 'computed'}) |"
        )
    print(f"sweep wall {sweep:.1f} s, sum of distill stages {distill:.1f} s")
    print(f"wall / sum of distill stages: {sweep / distill:.2f} (goal: at most {GOAL})")


if __name__ == "__main__":
    main()
