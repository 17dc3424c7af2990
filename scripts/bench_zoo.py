"""Every option of the `teacher` config group, trained on digits with its own recipe: test top-1.

    python scripts/bench_zoo.py [--only resnet50,vgg8] [--jobs 2] [--min-top1 0.97] [--resume]

Each teacher is trained by the real command, `kd train teacher=NAME`, in a subprocess with a
fresh cache, so nothing is reused and the recipe is the one a user gets. The other overrides
(`loss=ce student=mlp student.epochs=1 baseline=false eval.latency_runs=1`) only shorten what
comes after the teacher stage; they are not part of the teacher's fingerprint. The generic
`torchvision` option needs `teacher.name`: `--torchvision-name` picks the architecture.

Prints a markdown table (teacher, recipe, params, test top-1, train top-1 over its last epoch
(augmented views, batch-norm in training mode), seconds of teacher training) and exits 1 when a
teacher fails or scores below `--min-top1`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from kdcli.config.paths import config_dir

AFTER_TEACHER = [
    "loss=ce",
    "student=mlp",
    "student.epochs=1",
    "baseline=false",
    "eval.latency_runs=1",
]


def teacher_options() -> list[str]:
    return sorted(path.stem for path in (config_dir() / "teacher").glob("*.yaml"))


def overrides(option: str, seed: int, tv_name: str) -> list[str]:
    extra = [f"teacher.name={tv_name}"] if option == "torchvision" else []
    return [f"teacher={option}", *extra, *AFTER_TEACHER, f"seed={seed}"]


def settings(option: str, seed: int, tv_name: str) -> dict:
    """What determines the teacher, as `kd train` would compose it now."""
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="bench_zoo"):
        cfg = compose("train", overrides=overrides(option, seed, tv_name))
    return OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, ["teacher", "dataset", "seed"]), resolve=True
    )


def earlier_result(option: str, out: Path, seed: int, tv_name: str) -> dict | None:
    """The result of an earlier run in `out` for the same teacher settings (`--resume`)."""
    path = out / option / "bench.json"
    if not path.is_file():
        return None
    earlier = json.loads(path.read_text())
    return earlier["result"] if earlier["settings"] == settings(option, seed, tv_name) else None


def fresh_cache(keep: Path | None, option: str) -> contextlib.AbstractContextManager[str]:
    """A new, empty cache directory: temporary, or `keep/OPTION` (`--keep-cache`), which must
    not hold anything yet, so that the teacher is trained, not reused."""
    if keep is None:
        return tempfile.TemporaryDirectory(prefix="bench_zoo_cache_")
    cache = keep / option
    if cache.exists() and any(cache.iterdir()):
        sys.exit(f"--keep-cache: {cache} is not empty; remove it or pick another directory")
    cache.mkdir(parents=True, exist_ok=True)
    return contextlib.nullcontext(str(cache))


def train_teacher(
    option: str, out: Path, threads: int, seed: int, tv_name: str, keep: Path | None = None
) -> dict:
    """`kd train teacher=OPTION` in a fresh cache; the figures from its report.json."""
    run_dir = out / option
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with fresh_cache(keep, option) as cache:
        command = [
            sys.executable,
            "-m",
            "kdcli",
            "train",
            *overrides(option, seed, tv_name),
            f"cache_dir={cache}",
            f"hydra.run.dir={run_dir}",
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        manifests = list(Path(cache).glob("teachers/*/manifest.json"))
        train_top1 = json.loads(manifests[0].read_text()).get("train_top1") if manifests else None
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        return {"option": option, "error": f"exit {done.returncode}: {' '.join(tail)}"}
    report = json.loads((run_dir / "report.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    result = {
        "option": option,
        "name": report["teacher"]["name"],
        "recipe": recipe(config["teacher"]),
        "params": report["teacher"]["params"],
        "top1": report["teacher"]["top1"],
        "train_top1": train_top1,
        "seconds": report["stages"]["teacher"]["seconds"],
    }
    ran_with = {key: config[key] for key in ("teacher", "dataset", "seed")}
    (run_dir / "bench.json").write_text(json.dumps({"settings": ran_with, "result": result}))
    return result


def recipe(teacher: dict) -> str:
    """`15 ep, SGD lr 0.05, warm-up 2[, zero-init]`: what the teacher's config trains it with
    (zero-init: residual branches start at zero)."""
    optimizer = teacher["optimizer"]["_target_"].rsplit(".", 1)[-1]
    text = f"{teacher['epochs']} ep, {optimizer} lr {teacher['optimizer']['lr']:g}"
    warmup = teacher["scheduler"].get("warmup_epochs")
    zero_init = teacher["model"].get("zero_init_residual")
    return text + (f", warm-up {warmup}" if warmup else "") + (", zero-init" if zero_init else "")


def row(result: dict) -> str:
    name = result["option"]
    if name == "torchvision" and "name" in result:
        name = f"torchvision ({result['name']})"
    if "error" in result:
        return f"| {name} | | | failed: {result['error'][:120]} | | |"
    train = result["train_top1"]
    return (
        f"| {name} | {result['recipe']} | {result['params'] / 1e6:.2f} M "
        f"| {100 * result['top1']:.2f} | {'' if train is None else f'{100 * train:.1f}'} "
        f"| {result['seconds']:.0f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated options (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="teachers trained at once")
    parser.add_argument("--threads", type=int, default=0, help="per job (0: cores / jobs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-top1", type=float, default=0.97)
    parser.add_argument("--torchvision-name", default="mnasnet1_0")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_zoo"))
    parser.add_argument(
        "--keep-cache",
        type=Path,
        metavar="DIR",
        help="train each teacher in DIR/OPTION (new, empty) and keep it there, e.g. to distill "
        "from it next with `kd train teacher=OPTION cache_dir=DIR/OPTION`",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse results in --out whose teacher, dataset and seed settings are unchanged",
    )
    options = parser.parse_args()
    tv_name = options.torchvision_name
    known = teacher_options()
    chosen = [o for o in options.only.split(",") if o] or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        parser.error(f"no teacher option {', '.join(unknown)}; choose from {', '.join(known)}")
    threads = options.threads or max(1, (os.cpu_count() or 1) // options.jobs)
    out = options.out.resolve()
    started = time.perf_counter()

    # composed here, not in the worker threads: Hydra's compose API keeps global state
    earlier = (
        {o: earlier_result(o, out, options.seed, tv_name) for o in chosen} if options.resume else {}
    )

    def one(option: str) -> dict:
        result = earlier.get(option) or train_teacher(
            option, out, threads, options.seed, tv_name, options.keep_cache
        )
        elapsed = time.perf_counter() - started
        print(f"[{elapsed:6.0f} s] {row(result)}", file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        results = list(pool.map(one, chosen))

    print(f"\ndigits, seed {options.seed}, test top-1 % (360 images: one is 0.28 points)")
    print("| teacher | recipe | params | test top-1 | last-epoch train top-1 | seconds |")
    print("|---|---|---|---|---|---|")
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
