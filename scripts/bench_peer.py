"""Benchmark: kdcli side by side with torchdistill 1.1.5, the same distillation in one script run.

    python scripts/bench_peer.py --peer-path ~/peer-site     # resnet32x4 -> resnet8x4, CIFAR-shaped
    python scripts/bench_peer.py --dataset digits --teacher resnet20 --student resnet8 --no-sweep

The same teacher weights are distilled into the same student class (kdcli's model configs, built
the same way and seeded alike) on the same images, with the same batch size, epochs, optimizer,
schedule and KD loss, by both tools. The script prints a markdown table of the wall time of the
whole distillation, images/s (student training images over that time), the final student's test
top-1, the precision it trained in, and its speed against torchdistill (torchdistill's seconds
over the row's), for one run and for a 4-point sweep over the KD weight alpha:

- kdcli, stored soft labels: `kd train` with the default `soft_labels.mode=auto` (per-epoch views
  on augmented data), one command per alpha, all with one cache directory, as the points of a
  `kd train -m` sweep share it: the soft labels are computed once and reused by the other points.
  Time: the report's `soft_labels` + `distill` stage seconds (a single run pays for computing the
  soft labels, a reusing point for loading them).
- kdcli, online: the same with `soft_labels.mode=online` (the teacher runs on every batch).
- torchdistill: `get_distillation_box` with a config dict shaped like its sample CIFAR KD configs
  (`KDLoss` in a `WeightedSumLoss`, frozen teacher, fp32) and the epoch loop of its example
  `examples/torchvision/image_classification.py`; the data go through a per-image Dataset with
  torchvision transforms and a DataLoader, as torchvision's CIFAR10 would (which refuses files
  whose checksums are not the real CIFAR's). The teacher runs on every batch of every sweep run.
  Time: building the box plus training; its per-epoch validation (kdcli has none) is left out.

The runs go point by point (for each alpha: kdcli stored, kdcli online, torchdistill), so that a
change in the machine's load over the script's run falls on every tool alike; the script prints
the range of the load average it saw.

Teacher training is not timed: the first `kd train` trains the teacher (cached: every later point
reuses it), or every point loads `--teacher-checkpoint`, and torchdistill gets the same
state_dict in eval mode (torchdistill never changes the teacher's mode). Both drop the last
incomplete batch. torchdistill's `KDLoss` weighs cross-entropy by its `alpha`, so it gets
`alpha = 1 - a, beta = a` for kdcli's `loss.alpha = a`: the same loss.

Data: `--dataset cifar` (default) generates CIFAR-shaped images with learnable structure (one
smooth colour template per class, blended with another class's, shifted, over class-free clutter
and noise) and writes them in the real CIFAR-10 python-pickle layout in a temporary directory,
read by kdcli's `dataset=cifar10`; `--dataset digits` uses the bundled digits (`--images` ignored).

The peer is never a kdcli dependency. Install it beside this environment's torch, then point the
script at it (without it, the script says so and prints the kdcli rows only):

    pip install --target ~/peer-site torchdistill==1.1.5 --no-deps
    python scripts/bench_peer.py --peer-path ~/peer-site      # or: KD_PEER_PATH=~/peer-site

Its other dependencies (numpy, pyyaml, scipy) come with kdcli; cython is not needed to import it.
Helpers: scripts/peer_data.py (the data) and scripts/peer_torchdistill.py (the peer's side).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from peer_data import build_model, cifar_shaped, digits_arrays, test_top1, write_cifar10
from peer_torchdistill import PEER_VERSION, load_peer, peer_run

ALPHAS = (0.9, 0.1, 0.5, 0.7)  # the first is kd's default, and the single run


@dataclass
class Row:
    run: str
    tool: str
    mode: str
    precision: str
    seconds: float
    images: int
    top1: list[float]


# --- kdcli --------------------------------------------------------------------------------


def kd_train(args, workdir: Path, alpha: float, mode: str, dataset: list[str]) -> Path:
    """One `kd train` point (the first trains the teacher, the rest reuse it from the shared
    cache, as a `kd train -m` sweep's points do); its run directory."""
    run = workdir / "runs" / f"{mode}-{alpha}"
    overrides = [
        *dataset,
        f"teacher={args.teacher}",
        f"teacher.epochs={args.teacher_epochs}",
        f"teacher.batch_size={args.batch_size}",
        f"student={args.student}",
        f"student.epochs={args.epochs}",
        f"student.batch_size={args.batch_size}",
        "loss=kd",
        f"loss.alpha={alpha}",
        f"soft_labels.mode={mode}",
        "baseline=false",
        "eval.latency_runs=1",
        f"device={args.device}",
        f"seed={args.seed}",
        f"cache_dir={workdir / 'cache'}",
        f"hydra.run.dir={run}",
        *args.set,
    ]
    if args.teacher_checkpoint:  # loaded, not trained
        overrides.append(f"teacher.checkpoint={Path(args.teacher_checkpoint).resolve()}")
    print(f"kdcli: soft_labels.mode={mode}, loss.alpha={alpha} ...", file=sys.stderr)
    log = workdir / "kd.log"
    with open(log, "a") as out:
        done = subprocess.run(
            [sys.executable, "-m", "kdcli", "train", *overrides],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        tail = log.read_text().splitlines()[-30:]
        sys.exit(f"kd train {' '.join(overrides)} failed:\n" + "\n".join(tail))
    return run


def stage_seconds(report: dict, name: str) -> float:
    return float((report["stages"].get(name) or {}).get("seconds") or 0.0)


def precision(report: dict, cfg) -> str:
    stage = report["stages"]["distill"]
    if stage.get("precision"):
        return str(stage["precision"])
    return "bf16" if cfg.device.get("amp") and report["device"].startswith("cuda") else "fp32"


def read_point(run: Path) -> tuple[dict, Any]:
    """A run's report.json and resolved config."""
    return json.loads((run / "report.json").read_text()), OmegaConf.load(run / "config.yaml")


def add_rows(
    rows: list[Row],
    tool: str,
    modes: tuple[str, str],
    precision: str,
    single: float,
    every: list[float],
    top1: list[float],
    per_run: int,
) -> None:
    """The single-run row and, for more than one alpha, the sweep row of one tool and mode."""
    rows.append(Row("single", tool, modes[0], precision, single, per_run, top1[:1]))
    if len(every) > 1:
        rows.append(Row("sweep", tool, modes[1], precision, sum(every), per_run * len(every), top1))


def kdcli_rows(points: list[tuple[dict, Any]], alphas: list[float], per_run: int) -> list[Row]:
    """Rows for stored and online soft labels from the sweep's reports."""
    rows: list[Row] = []
    for online in (False, True):
        chosen = [(r, c) for r, c in points if (r["soft_labels"]["mode"] == "online") == online]
        by_alpha = {float(r["loss"]["alpha"]): r for r, _ in chosen}
        first, cfg = by_alpha[alphas[0]], chosen[0][1]
        every = [
            stage_seconds(by_alpha[a], "soft_labels") + stage_seconds(by_alpha[a], "distill")
            for a in alphas
        ]
        top1 = [by_alpha[a]["student"]["top1"] for a in alphas]
        if online:
            modes, single = ("online teacher",) * 2, every[0]
        else:  # the single run pays for the soft labels, whichever point computed them
            maker = next(r for r, _ in chosen if not r["soft_labels"]["reused"])
            mode = f"stored soft labels ({first['soft_labels']['mode']})"
            modes = (mode, f"{mode}, shared by the sweep")
            single = stage_seconds(maker, "soft_labels") + stage_seconds(first, "distill")
        add_rows(rows, "kdcli", modes, precision(first, cfg), single, every, top1, per_run)
    return rows


# --- table --------------------------------------------------------------------------------


def table(rows: list[Row], alphas: list[float]) -> str:
    label = {"single": f"single run (α={alphas[0]})", "sweep": f"{len(alphas)}-point α sweep"}
    peer = {r.run: r.seconds for r in rows if r.tool.startswith("torchdistill")}
    columns = ["run", "tool", "mode", "precision", "seconds", "images/s", "student top-1 (%)"]
    columns.append("speed vs torchdistill")
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for r in rows:
        top1 = [100 * t for t in r.top1]
        shown = f"{top1[0]:.1f}"
        if len(top1) > 1:
            shown = f"{sum(top1) / len(top1):.1f} (min {min(top1):.1f}, max {max(top1):.1f})"
        ratio = f"{peer[r.run] / r.seconds:.2f}x" if r.run in peer else "–"
        lines.append(
            f"| {label[r.run]} | {r.tool} | {r.mode} | {r.precision} | {r.seconds:.1f} "
            f"| {r.images / r.seconds:.1f} | {shown} | {ratio} |"
        )
    return "\n".join(lines)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--dataset", choices=("cifar", "digits"), default="cifar")
    add("--teacher", default="resnet32x4", help="a teacher config (kd list teacher)")
    add("--student", default="resnet8x4", help="a student config")
    add("--epochs", type=int, default=2, help="distillation epochs")
    add("--teacher-epochs", type=int, default=3, help="teacher training epochs (not timed)")
    add("--teacher-checkpoint", help="load this teacher instead of training it")
    add("--images", type=int, default=2000, help="CIFAR-shaped training images")
    add("--test-images", type=int, default=500, help="CIFAR-shaped test images")
    add("--batch-size", type=int, default=64)
    add("--seed", type=int, default=0)
    add("--alphas", default=",".join(map(str, ALPHAS)), help="kdcli loss.alpha values to sweep")
    add("--no-sweep", action="store_true", help="the single run only (the first alpha)")
    add("--device", default="cpu", help="cpu or cuda, for both tools")
    add("--threads", type=int, help="torch threads for both tools (default: torch's choice)")
    add("--workers", type=int, default=0, help="torchdistill's DataLoader workers")
    add("--workdir", help="keep the data, runs and cache here (default: a temporary directory)")
    add("--peer-path", default=os.environ.get("KD_PEER_PATH"), help="torchdistill's directory")
    add("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more kd train overrides")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    alphas = [float(a) for a in args.alphas.split(",")][: 1 if args.no_sweep else None]
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for kd train
    td, why = load_peer(args.peer_path)
    if td is None:
        print(
            f"{why}: printing the kdcli rows only. Install the peer with `pip install --target "
            f"DIR torchdistill=={PEER_VERSION} --no-deps` and pass --peer-path DIR "
            "(or set KD_PEER_PATH=DIR).",
            file=sys.stderr,
        )
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="kd-bench-peer-") as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        dataset = ["dataset=digits"]
        if args.dataset == "cifar":
            train, test = cifar_shaped(args.images, seed=1), cifar_shaped(args.test_images, seed=2)
            write_cifar10(workdir / "data", train, test)
            dataset = ["dataset=cifar10", f"dataset.root={workdir / 'data'}"]
        points, peer = [], {"seconds": [], "top1": []}
        for alpha in alphas:  # point by point, so that a change of load falls on every tool
            for mode in ("auto", "online"):
                points.append(read_point(kd_train(args, workdir, alpha, mode, dataset)))
                load.append(os.getloadavg()[0])
            if len(points) == 2:  # the teacher, its config and the data torchdistill gets
                report, cfg = points[0]
                info = report["dataset"]
                if args.dataset == "digits":
                    train, test = digits_arrays(cfg.dataset.test_fraction, cfg.dataset.split_seed)
                per_run = len(train[1]) // args.batch_size * args.batch_size * args.epochs
                path = report["teacher"]["checkpoint"]
                payload = torch.load(path, map_location="cpu", weights_only=True)
                state = payload.get("state_dict", payload)
                check = test_top1(build_model(cfg.teacher.model, info, state), test, info, "cpu")
            if td is not None:
                print(f"torchdistill: online KD, alpha {alpha} ...", file=sys.stderr)
                device = torch.device(args.device)
                took, seen, student = peer_run(cfg, info, state, train, alpha, device, args.workers)
                assert seen == per_run, f"torchdistill trained {seen} images, kdcli {per_run}"
                peer["seconds"].append(took)
                peer["top1"].append(test_top1(student, test, info, device))
                load.append(os.getloadavg()[0])
    rows = kdcli_rows(points, alphas, per_run)
    if td is not None:
        modes = ("online KD (DistillationBox)", "online KD, teacher rerun per run")
        seconds = peer["seconds"]
        tool = f"torchdistill {td.__version__}"
        add_rows(rows, tool, modes, "fp32", seconds[0], seconds, peer["top1"], per_run)
    rows.sort(key=lambda r: (r.run != "single", r.tool.startswith("torchdistill")))
    where = f"{args.images} CIFAR-shaped" if args.dataset == "cifar" else "digits"
    teacher_top1 = 100 * report["teacher"]["top1"]
    print(
        f"{args.teacher} -> {args.student}, {where} training images, {len(test[1])} test "
        f"images, batch {args.batch_size}, {args.epochs} epochs, {args.device}, "
        f"{torch.get_num_threads()} threads. Teacher test top-1 {teacher_top1:.1f}% (kdcli's "
        f"report; {100 * check:.1f}% on the arrays torchdistill gets). 1-minute load average "
        f"{min(load):.2f} to {max(load):.2f} (sampled at the start and after each run).\n"
    )
    print(table(rows, alphas))


if __name__ == "__main__":
    main()
