"""Benchmark: the token losses and the top-k store of `task=lm`, and `task=instruct`'s
students, measured in one run.

    python scripts/bench_lm.py                      # the task=lm preset (bundled Shakespeare)
    python scripts/bench_lm.py --set dataset.max_chars=60000 teacher.epochs=2   # a quick look

Three `kd train -m` sweeps on the preset share one cache, so the teacher and the baseline
are trained once and every point distills from the same teacher: one over the token losses
(`loss=token_kd,rkl,jsd,skl,srkl`, the preset's top-k store), one over the store
(`soft_labels.topk=null,8`, against the preset's with the kd loss), and one over on-policy
distillation (`loss=token_kd,jsd loss.lmbda=0.5`: half the batches written by the student,
the teacher online). `--sweeps on_policy` runs one sweep alone, `--sweeps none` none. The
table gives, per point, the student's perplexity and next-token top-1 against the
baseline's (the same student trained with cross-entropy alone), the KD gain with its 95 %
interval, KL(teacher || student) on the test tokens, the teacher's NLL of the student's own
text, the soft labels' size and the distillation stage's seconds.

`--sweeps instruct` runs the `task=instruct` preset (the bundled drills) with its other
defaults: the teacher is trained once (the runs share the cache, so the baseline is trained
once too), then one student per row, each naming its `soft_labels.mode` (the preset's is
`generate`): `token_kd` on stored distributions of the training answers
(`soft_labels.mode=static`), on answers the teacher wrote (`soft_labels.mode=generate`) and
with half its batches answered by itself, the teacher online (`soft_labels.mode=online
loss.lmbda=0.5`). Its table gives the baseline's row (the same student, cross-entropy
alone) and each student's: exact match and ROUGE-L of the greedy answers to the held-out
prompts, the teacher's NLL of those answers, and the KD gain on the preset's headline with
its 95 % interval, paired by prompt. `--set` applies to every run (e.g. `--set
dataset.count=600` for a quick look); a key a chosen sweep sets itself is refused.

Last, it times the GPT's key-value cache: writing the second half of 64 windows with
gpt_small's shape, with `GPT.decode` and with a whole forward pass per token, in fp32 and
bf16.
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

LOSSES = "token_kd,rkl,jsd,skl,srkl"
STORES = "null,8"  # beside the preset's top-k (the first sweep's token_kd point)
SWEEPS = {
    "losses": [f"loss={LOSSES}"],
    "stores": [f"soft_labels.topk={STORES}"],
    "on_policy": ["loss=token_kd,jsd", "loss.lmbda=0.5"],
    "instruct": [],  # its runs: INSTRUCT
}
# task=instruct: one run per student, in one cache (one teacher, one baseline)
INSTRUCT = [
    ["soft_labels.mode=static"],
    ["soft_labels.mode=generate"],
    ["soft_labels.mode=online", "loss.lmbda=0.5"],
]


def sweep(workdir: Path, cache: Path, overrides: list[str], task: str = "lm") -> list[dict]:
    """Run one `kd train -m` sweep; its reports, in the order of the points."""
    args = [sys.executable, "-m", "kdcli", "train", "-m", f"task={task}", *overrides]
    environment = {**os.environ, "KD_CACHE_DIR": str(cache)}
    done = subprocess.run(args, cwd=workdir, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    reports = [json.loads(p.read_text()) for p in workdir.glob("outputs/multirun/**/report.json")]
    return sorted(reports, key=lambda r: r["run_dir"])


def row(report: dict) -> str:
    s, b = report["student"], report["baseline"]
    low, high = report["kd_gain_ci"]
    soft = report["soft_labels"]
    stored = "none (online)" if soft["mode"] == "online" else soft["topk"] or "all"
    lmbda, ramp = report["loss"].get("lmbda") or 0, soft.get("on_policy_schedule")
    name = report["loss"]["name"] + (f", λ={lmbda:g} on-policy" if lmbda else "")
    if ramp:  # loss.schedule.lmbda sets the share epoch by epoch
        end = ramp.get("end", ramp.get("start", 0))
        name = f"{report['loss']['name']}, λ {ramp.get('start', 0):g} to {end:g} on-policy"
    return (
        f"| {name} | {stored} | "
        f"{report['soft_labels']['bytes'] / 2**20:.1f} | {s['perplexity']:.3f} | "
        f"{b['perplexity']:.3f} | {100 * s['top1']:.2f} | {100 * b['top1']:.2f} | "
        f"{100 * report['kd_gain']:+.2f} ({100 * low:+.2f} to {100 * high:+.2f}) | "
        f"{s['teacher_kl']:.4f} | {s['generation_nll']:.3f} | "
        f"{report['stages']['distill']['seconds']:.0f} |"
    )


def decode_speed(vocabulary: int = 66, window: int = 64, batch: int = 64) -> str:
    """Seconds to write the second half of `batch` windows with gpt_small's shape, with the
    key-value cache and without, in fp32 and bf16 (the best of two tries each)."""
    import torch
    from omegaconf import OmegaConf

    from kdcli.models.lm.gpt import GPT
    from kdcli.tasks.lm import draw_tokens

    shape = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs/model/gpt_small.yaml")
    torch.manual_seed(0)
    model = GPT(vocabulary, 1, window, shape.layers, shape.heads, shape.width).eval()
    prompt = torch.randint(0, vocabulary, (batch, window // 2))
    lines = [
        "| precision | with the cache (s) | whole window per token (s) | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for precision in ("fp32", "bf16"):
        seconds = {}
        for name, cache in (("cached", True), ("whole", False)):
            tries = []
            for _ in range(2):
                started = time.perf_counter()
                with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                    draw_tokens(model, prompt, window + 1, window, 1.0, torch.Generator(), cache)
                tries.append(time.perf_counter() - started)
            seconds[name] = min(tries)
        lines.append(
            f"| {precision} | {seconds['cached']:.3f} | {seconds['whole']:.3f} "
            f"| {seconds['whole'] / seconds['cached']:.1f}x |"
        )
    return "\n".join(lines)


def instruct(root: Path, cache: Path, extra: list[str]) -> list[dict]:
    """The `task=instruct` runs, one per row of INSTRUCT; their reports."""
    reports = []
    for number, overrides in enumerate(INSTRUCT):
        workdir = root / str(number)
        workdir.mkdir(parents=True)
        reports += sweep(workdir, cache, [*overrides, *extra], task="instruct")
    return reports


def set_keys(chosen: list[str]) -> dict[str, str]:
    """The keys the chosen sweeps set themselves (key -> sweep), which `--set` must leave."""
    keys = {}
    for name in chosen:
        overrides = [o for row in INSTRUCT for o in row] if name == "instruct" else SWEEPS[name]
        for override in ["task=", *overrides]:
            keys[override.split("=")[0]] = name
    return keys


def instruct_row(name: str, figures: dict, report: dict | None) -> str:
    gain = "-"
    if report is not None:
        low, high = report["kd_gain_ci"]
        gain = f"{100 * report['kd_gain']:+.2f} ({100 * low:+.2f} to {100 * high:+.2f})"
    seconds = f"{report['stages']['distill']['seconds']:.0f}" if report else "-"
    return (
        f"| {name} | {100 * figures['exact_match']:.2f} | {100 * figures['rouge_l']:.2f} | "
        f"{figures['generation_nll']:.3f} | {gain} | {seconds} |"
    )


def print_instruct_table(reports: list[dict]) -> None:
    first = reports[0]
    teacher, label = first["teacher"], first["metric_label"]
    print(
        f"task=instruct: teacher {teacher['name']}: exact match {100 * teacher['exact_match']:.2f}"
        f" %, ROUGE-L {100 * teacher['rouge_l']:.2f} % on {first['kd_gain_images']['total']} "
        f"test prompts; its NLL of its own answers {teacher['generation_nll']:.3f}\n"
    )
    print(
        "| student | exact match (%) | ROUGE-L (%) | teacher's NLL of its answers "
        f"| KD gain in {label}, points (95% CI) | distill seconds |"
    )
    print("|---|---:|---:|---:|---|---:|")
    print(instruct_row(f"{first['student']['name']}, cross-entropy (baseline)",
                       first["baseline"], None))  # fmt: skip
    for report in reports:
        soft, lmbda = report["soft_labels"], report["loss"].get("lmbda") or 0
        name = report["loss"]["name"]
        name += ", teacher-written answers" if soft["mode"] == "generate" else ""
        name += f", λ={lmbda:g} on-policy" if lmbda else ""
        print(instruct_row(name, report["student"], report))


def print_table(reports: list[dict]) -> None:
    first = reports[0]
    print(
        f"teacher {first['teacher']['name']}: perplexity {first['teacher']['perplexity']:.3f}, "
        f"next-token top-1 {100 * first['teacher']['top1']:.2f} %, on "
        f"{first['kd_gain_images']['total']} test tokens; the teacher's NLL of its own text "
        f"{first['teacher']['generation_nll']:.3f}, of the baseline's "
        f"{first['baseline']['generation_nll']:.3f}\n"
    )
    print(
        "| loss | stored top-k | soft labels (MiB) | student perplexity | baseline perplexity "
        "| student top-1 (%) | baseline top-1 (%) | KD gain, points (95% CI) "
        "| KL(teacher ‖ student) | teacher's NLL of the student's text | distill seconds |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for report in reports:
        print(row(report))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra kd train overrides for every run")  # fmt: skip
    parser.add_argument("--sweeps", default=",".join(SWEEPS),
                        help=f"which sweeps to run, of {','.join(SWEEPS)} (or none)")  # fmt: skip
    args = parser.parse_args()
    chosen = [] if args.sweeps == "none" else args.sweeps.split(",")
    if unknown := set(chosen) - set(SWEEPS):
        parser.error(
            f"--sweeps: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SWEEPS)}"
        )
    owned = set_keys(chosen)
    for override in args.set:
        if (key := override.split("=")[0].lstrip("+~")) in owned:
            parser.error(f"--set {override}: the {owned[key]} sweep sets {key} itself")
    root = Path(tempfile.mkdtemp(prefix="kd-bench-lm-")) if chosen else None
    reports, instructed = [], []
    for name in chosen:
        if name == "instruct":
            instructed = instruct(root / name, root / "cache", args.set)
            continue
        workdir = root / name
        workdir.mkdir()
        reports += sweep(workdir, root / "cache", [*SWEEPS[name], *args.set])
    if reports:
        print_table(reports)
    if instructed:
        print_instruct_table(instructed)
    if root is not None:
        print(f"\nruns: {root}\n")
    import torch  # after the checks: a refused command line does not wait for it

    print(
        "Writing: gpt_small's shape continues 64 windows from 32 tokens to 65 "
        f"({torch.get_num_threads()} threads)\n"
    )
    print(decode_speed())
    return 0


if __name__ == "__main__":
    sys.exit(main())
