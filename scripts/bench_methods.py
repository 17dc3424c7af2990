"""Every distillation method on digits, 3 seeds each: mean ± std top-1 of the distilled student
beside the baseline student (same student, cross-entropy only, same seed).

    python scripts/bench_methods.py [--epochs 30] [--seeds 0 1 2] [--out outputs/bench_methods]

One teacher serves every run: it is trained once (seed 0) and then passed to every run as
`teacher.checkpoint`, so the seeds vary only the student's initialisation and batch order.
The pair is a wide SmallCNN teacher (width 64) and a narrow SmallCNN student (width 16),
which trains in minutes on a laptop CPU; the feature methods tap `stage1` / `stage2`.
Each method runs as one `kd train -m seed=...` sweep, in a subprocess, like a user would.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PAIR = [
    "teacher=smallcnn",
    "teacher.model.width=64",
    "student=smallcnn",
    "student.model.width=16",
    "eval.latency_runs=2",
]

# (label, overrides): the configs' defaults unless a layer path must fit the SmallCNN pair
METHODS = [
    ("kd", ["loss=kd"]),
    ("kd, T cosine 8->2", ["loss=kd", "loss.schedule.temperature={kind:cosine,start:8,end:2}"]),
    ("kd_ls", ["loss=kd_ls"]),
    ("dkd", ["loss=dkd"]),
    ("dist", ["loss=dist"]),
    ("hard", ["loss=hard"]),
    ("fitnet", ["loss=fitnet", "loss.student_layer=stage2", "loss.teacher_layer=stage2"]),
    (
        "at",
        ["loss=at", "loss.student_layers=[stage1,stage2]", "loss.teacher_layers=[stage1,stage2]"],
    ),
    (
        "combo (kd + fitnet)",
        [
            "loss=combo",
            "loss.terms.fitnet.loss.student_layer=stage2",
            "loss.terms.fitnet.loss.teacher_layer=stage2",
        ],
    ),
]


def kd_train(args: list[str], env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "kdcli", "train", *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * std:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_methods"))
    options = parser.parse_args()
    out = options.out.resolve()
    # one thread per process: small models on a shared CPU run several times faster so
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    common = [
        *PAIR,
        f"teacher.epochs={options.teacher_epochs}",
        f"student.epochs={options.epochs}",
        f"cache_dir={out / 'cache'}",
    ]

    started = time.perf_counter()
    kd_train([*common, "loss=ce", "baseline=false", f"hydra.run.dir={out / 'teacher'}"], env)
    report = json.loads((out / "teacher" / "report.json").read_text())
    common.append(f"teacher.checkpoint={report['teacher']['checkpoint']}")
    print(f"teacher: {report['teacher']['name']} top-1 {100 * report['teacher']['top1']:.2f}%")

    seeds = ",".join(str(seed) for seed in options.seeds)
    rows = []
    for number, (label, overrides) in enumerate(METHODS):
        sweep_dir = out / f"method{number}"
        kd_train(["-m", *common, *overrides, f"seed={seeds}", f"hydra.sweep.dir={sweep_dir}"], env)
        reports = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/report.json"))]
        student = [r["student"]["top1"] for r in reports]
        baseline = [r["baseline"]["top1"] for r in reports]
        gains = [s - b for s, b in zip(student, baseline, strict=True)]
        rows.append((label, mean_std(student), mean_std(baseline), mean_std(gains)))
        print(f"  {label}: {rows[-1][1]} ({time.perf_counter() - started:.0f} s)", flush=True)

    print()
    print(
        f"digits, smallcnn(64) -> smallcnn(16), {options.epochs} student epochs, "
        f"seeds {seeds}; top-1 % on the test split, mean ± std"
    )
    print("| method | student | baseline (CE) | gain |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
