"""Every option of the `teacher` config group, trained on digits with its own recipe: test top-1.

    python scripts/bench_zoo.py [--only resnet50,vgg8] [--jobs 2] [--min-top1 0.97]

Each teacher is trained by the real command, `kd train teacher=NAME`, in a subprocess with a
fresh cache, so nothing is reused and the recipe is the one a user gets. The other overrides
(`loss=ce student=mlp student.epochs=1 baseline=false eval.latency_runs=1`) only shorten what
comes after the teacher stage; they are not part of the teacher's fingerprint. The generic
`torchvision` option needs `teacher.name`: `--torchvision-name` picks the architecture.

Prints a markdown table (teacher, recipe, params, test top-1, seconds of teacher training) and
exits 1 when a teacher fails or scores below `--min-top1`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from kdcli.paths import config_dir

AFTER_TEACHER = [
    "loss=ce",
    "student=mlp",
    "student.epochs=1",
    "baseline=false",
    "eval.latency_runs=1",
]


def teacher_options() -> list[str]:
    return sorted(path.stem for path in (config_dir() / "teacher").glob("*.yaml"))


def train_teacher(option: str, out: Path, threads: int, seed: int, tv_name: str) -> dict:
    """`kd train teacher=OPTION` in a fresh cache; the figures from its report.json."""
    run_dir = out / option
    extra = [f"teacher.name={tv_name}"] if option == "torchvision" else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="bench_zoo_cache_") as cache:
        command = [
            sys.executable,
            "-m",
            "kdcli",
            "train",
            f"teacher={option}",
            *extra,
            *AFTER_TEACHER,
            f"seed={seed}",
            f"cache_dir={cache}",
            f"hydra.run.dir={run_dir}",
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        return {"option": option, "error": f"exit {done.returncode}: {' '.join(tail)}"}
    report = json.loads((run_dir / "report.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())["teacher"]
    return {
        "option": option,
        "name": report["teacher"]["name"],
        "recipe": recipe(config),
        "params": report["teacher"]["params"],
        "top1": report["teacher"]["top1"],
        "seconds": report["stages"]["teacher"]["seconds"],
    }


def recipe(teacher: dict) -> str:
    """`15 ep, SGD lr 0.05, warm-up 2`: what the teacher's config trains it with."""
    optimizer = teacher["optimizer"]["_target_"].rsplit(".", 1)[-1]
    text = f"{teacher['epochs']} ep, {optimizer} lr {teacher['optimizer']['lr']:g}"
    warmup = teacher["scheduler"].get("warmup_epochs")
    return text + (f", warm-up {warmup}" if warmup else "")


def row(result: dict) -> str:
    name = result["option"]
    if name == "torchvision" and "name" in result:
        name = f"torchvision ({result['name']})"
    if "error" in result:
        return f"| {name} | | | failed: {result['error'][:120]} | |"
    return (
        f"| {name} | {result['recipe']} | {result['params'] / 1e6:.2f} M "
        f"| {100 * result['top1']:.2f} | {result['seconds']:.0f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated options (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="teachers trained at once")
    parser.add_argument("--threads", type=int, default=0, help="per job (0: cores / jobs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-top1", type=float, default=0.97)
    parser.add_argument("--torchvision-name", default="regnet_x_400mf")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_zoo"))
    options = parser.parse_args()
    known = teacher_options()
    chosen = [o for o in options.only.split(",") if o] or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        parser.error(f"no teacher option {', '.join(unknown)}; choose from {', '.join(known)}")
    threads = options.threads or max(1, (os.cpu_count() or 1) // options.jobs)
    out = options.out.resolve()
    started = time.perf_counter()

    def one(option: str) -> dict:
        result = train_teacher(option, out, threads, options.seed, options.torchvision_name)
        elapsed = time.perf_counter() - started
        print(f"[{elapsed:6.0f} s] {row(result)}", file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        results = list(pool.map(one, chosen))

    print(f"\ndigits, seed {options.seed}, test top-1 % (360 images: one is 0.28 points)")
    print("| teacher | recipe | params | test top-1 | seconds |")
    print("|---|---|---|---|---|")
    for result in results:
        print(row(result))
    failed = [r["option"] for r in results if "error" in r or r["top1"] < options.min_top1]
    print(f"\n{time.perf_counter() - started:.0f} s in all, {threads} thread(s) per job")
    if failed:
        print(f"below {100 * options.min_top1:g}% or failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
