"""Benchmark: what each `compress=` option does to a distilled student, measured in one run.

    python scripts/bench_compress.py         # smallcnn, resnet8, mobilenetv2 on digits
    python scripts/bench_compress.py --students smallcnn --set teacher.epochs=5

For each student, one `kd train -m compress=none,int8,prune,prune_int8` sweep (one teacher,
one set of soft labels, shared through the cache) on the embedded digits data. For each
compressed model the table gives its test top-1 against the uncompressed student's (same run),
the checkpoint bytes and batch-1 CPU latency as ratios to the student's, and the share of
zero weights. Targets (issue 14): int8 <= 0.35x the bytes within 1 point; 50 % pruning within
2 points after the fine-tune; int8 latency below the fp32 student's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

OPTIONS = ("int8", "prune", "prune_int8")


def sweep(workdir: Path, student: str, extra: list[str]) -> list[dict]:
    """Run the sweep for `student`; its reports, one per compress option."""
    args = [sys.executable, "-m", "kdcli", "train", "-m", f"compress={','.join(OPTIONS)}",
            f"student={student}", "baseline=false", "eval.latency_runs=200", *extra]  # fmt: skip
    environment = {**os.environ, "KD_CACHE_DIR": str(workdir / "cache")}
    done = subprocess.run(args, cwd=workdir, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return [
        json.loads(p.read_text()) for p in sorted(workdir.glob("outputs/multirun/**/report.json"))
    ]


def rows(student: str, reports: list[dict]) -> list[str]:
    lines = []
    for report in reports:
        s, c = report["student"], report["compressed"]
        lines.append(
            f"| {student} | {c['name'].split('(')[-1].rstrip(')')} | {100 * s['top1']:.2f} | "
            f"{100 * c['top1']:.2f} | {100 * (c['top1'] - s['top1']):+.2f} | "
            f"{c['checkpoint_bytes'] / s['checkpoint_bytes']:.2f}x | "
            f"{c['latency_ms'] / s['latency_ms']:.2f}x | {100 * c['sparsity']:.0f}% |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", default="smallcnn,resnet8,mobilenetv2")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra kd train overrides for every run")  # fmt: skip
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kd-bench-compress-"))
    table = [
        "| student | compress | student top-1 | compressed top-1 | change (points) | bytes | "
        "CPU latency, batch 1 | zero weights |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for student in args.students.split(","):
        workdir = root / student
        workdir.mkdir()
        table += rows(student, sweep(workdir, student, args.set))
        print("\n".join(table), flush=True)
    print(f"\nruns: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
