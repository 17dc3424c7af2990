"""Benchmark: fp32 against bf16, accuracy with seeds and speed per stage, in one script run.

    python scripts/bench_precision.py                       # digits default + a CIFAR-shaped pair
    python scripts/bench_precision.py --only digits --seeds 0,1,2

Every run is the real `kd train` in a subprocess with a fresh cache, once per precision and
seed, for two settings:

- `digits`: the embedded default, `kd train` with no other override.
- `cifar`: a CIFAR-shaped pair (`--teacher resnet8x4 --student resnet8`), on `--images`
  generated 32x32 colour images written in the real CIFAR-10 layout (scripts/peer_data.py),
  `--teacher-epochs` and `--epochs` each.

For each setting and precision it prints the teacher's, student's and baseline's test top-1
(mean ± std over the seeds), the KD gain (mean ± std, and each seed's 95% interval), and each
training stage's images/s (mean over seeds) with its ratio to fp32's. `precision=auto` makes
bf16 the default only where the CPU (or GPU) runs it natively and the model has enough work per
image and per weight (kdcli/engine/precision.py); this table is the accuracy check behind that.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from peer_data import cifar_shaped, write_cifar10

STAGES = ("teacher", "soft_labels", "distill", "baseline")


def kd_train(workdir: Path, name: str, overrides: list[str]) -> dict:
    """One `kd train` with a fresh cache; its report.json."""
    run = workdir / "runs" / name
    with tempfile.TemporaryDirectory(prefix="bench_precision_cache_") as cache:
        command = [sys.executable, "-m", "kdcli", "train", *overrides]
        command += [f"cache_dir={cache}", f"hydra.run.dir={run}"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"kd train {' '.join(overrides)} failed:\n{done.stderr[-3000:]}")
    return json.loads((run / "report.json").read_text())


def mean_std(values: list[float], scale: float = 100.0, sign: str = "") -> str:
    mean = scale * statistics.mean(values)
    std = scale * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:{sign}.2f} ± {std:.2f}"


def rate(report: dict, stage: str) -> float | None:
    entry = report["stages"].get(stage) or {}
    return None if entry.get("reused") else entry.get("images_per_s")


def rows(setting: str, by_precision: dict[str, list[dict]]) -> list[str]:
    lines = []
    base = {s: [rate(r, s) for r in by_precision["fp32"]] for s in STAGES}
    for precision, reports in by_precision.items():
        cells = [setting, precision, f"{reports[0]['stages']['distill'].get('precision')}"]
        for role in ("teacher", "student", "baseline"):
            cells.append(mean_std([r[role]["top1"] for r in reports]))
        cells.append(mean_std([r["kd_gain"] for r in reports], sign="+"))
        intervals = [[100 * x for x in r["kd_gain_ci"]] for r in reports]
        cells.append(", ".join(f"{low:+.1f} to {high:+.1f}" for low, high in intervals))
        for stage in STAGES:
            rates = [x for x in (rate(r, stage) for r in reports) if x]
            ref = [x for x in base[stage] if x]
            if not rates:
                cells.append("–")
                continue
            shown = f"{statistics.mean(rates):,.0f}"
            if precision != "fp32" and ref:
                shown += f" ({statistics.mean(rates) / statistics.mean(ref):.2f}x)"
            cells.append(shown)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--only", default="digits,cifar", help="settings to run: digits, cifar")
    add("--seeds", default="0,1,2")
    add("--precisions", default="fp32,bf16")
    add("--teacher", default="resnet8x4")
    add("--student", default="resnet8")
    add("--teacher-epochs", type=int, default=5)
    add("--epochs", type=int, default=5, help="student epochs (cifar setting)")
    add("--images", type=int, default=2000, help="CIFAR-shaped training images")
    add("--test-images", type=int, default=500)
    add("--workdir", help="keep the data and runs here (default: a temporary directory)")
    add("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more kd train overrides")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    seeds = [int(s) for s in args.seeds.split(",")]
    precisions = args.precisions.split(",")
    if precisions[0] != "fp32":
        sys.exit("--precisions must start with fp32 (the reference of the speed ratios)")
    header = ["setting", "precision", "ran as"]
    header += ["teacher top-1 %", "student top-1 %", "baseline top-1 %", "KD gain pts"]
    header += ["KD gain 95% CI per seed"]
    header += [f"{stage} img/s" for stage in STAGES]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    with tempfile.TemporaryDirectory(prefix="kd-bench-precision-") as scratch:
        workdir = Path(args.workdir or scratch)
        settings: dict[str, list[str]] = {}
        if "digits" in args.only:
            settings["digits (default)"] = []
        if "cifar" in args.only:
            data = workdir / "data"
            train = cifar_shaped(args.images, seed=1)
            write_cifar10(data, train, cifar_shaped(args.test_images, seed=2))
            settings[f"CIFAR-shaped {args.teacher} -> {args.student}"] = [
                "dataset=cifar10",
                f"dataset.root={data}",
                f"teacher={args.teacher}",
                f"student={args.student}",
                f"teacher.epochs={args.teacher_epochs}",
                f"student.epochs={args.epochs}",
            ]
        for setting, overrides in settings.items():
            by_precision: dict[str, list[dict]] = {p: [] for p in precisions}
            for seed in seeds:
                for precision in precisions:  # alternating, so that load changes fall on both
                    print(f"{setting}: precision={precision}, seed={seed} ...", file=sys.stderr)
                    name = f"{len(lines)}-{precision}-{seed}"
                    point = [*overrides, *args.set, f"precision={precision}", f"seed={seed}"]
                    by_precision[precision].append(kd_train(workdir, name, point))
            lines += rows(setting, by_precision)
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    print(
        f"Seeds {seeds}; {os.cpu_count()} CPUs, OMP_NUM_THREADS={threads}; 1-minute load average "
        f"at the end {os.getloadavg()[0]:.2f}. 'ran as': the distill stage's precision.\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
