"""The run's report: report.json (its one owner), report.md and the table on stdout."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from kdcli import __version__
from kdcli.data import DatasetInfo
from kdcli.engine import distributed
from kdcli.pipeline.common import Stage, config_choice, plain
from kdcli.store.atomic import write_json_atomic, write_text_atomic
from kdcli.tasks import Task
from kdcli.tasks.classify import TASK

COLUMNS = (("teacher", "teacher"), ("student", "student (KD)"), ("baseline", "baseline (CE)"))

# (label, report key, formatter) after the task's rows; a missing value shows as "-"
ROWS = (
    ("parameters", "params", lambda v: f"{v / 1e6:.3f} M"),
    ("FLOPs / image", "flops", lambda v: f"{v / 1e6:.2f} M"),
    ("CPU latency, batch 1", "latency_ms", lambda v: f"{v:.3f} ms"),
    ("checkpoint size", "checkpoint_bytes", lambda v: f"{v / 2**20:.2f} MiB"),
    ("computed or reused", "reused", lambda v: "reused" if v else "computed"),
)


def _cells(report: dict[str, Any], task: Task = TASK) -> tuple[list[str], list[list[str]]]:
    present = [(key, title) for key, title in COLUMNS if key in report]
    header = ["", *(title for _, title in present)]
    rows = []
    for label, field, fmt in (*task.rows(), *ROWS):
        values = [report[key].get(field) for key, _ in present]
        if all(v is None for v in values):  # e.g. validation top-1 without a validation split
            continue
        rows.append([label, *("-" if v is None else fmt(v) for v in values)])
    return header, rows


def summary_lines(report: dict[str, Any]) -> list[str]:
    """KD gain and compression, one line each."""
    lines = []
    if "kd_gain" in report:
        gain = 100 * report["kd_gain"]
        lines.append(f"KD gain (student - baseline {TASK.metric_label}): {gain:+.2f} points")
    c = report["compression"]
    lines.append(
        f"compression: {c['params']:.1f}x fewer parameters, {c['flops']:.1f}x fewer FLOPs, "
        f"{c['latency_speedup']:.1f}x faster on CPU at batch 1"
    )
    return lines


def table(report: dict[str, Any], task: Task = TASK) -> Table:
    header, rows = _cells(report, task)
    result = Table(
        title=f"kd report: {report['teacher']['name']} -> {report['student']['name']} "
        f"on {report['dataset']['name']}, loss={report['loss']['name']}"
    )
    for i, name in enumerate(header):
        result.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        result.add_row(*row)
    return result


def markdown(report: dict[str, Any], task: Task = TASK) -> str:
    header, rows = _cells(report, task)
    lines = [
        f"# kd report: {report['teacher']['name']} -> {report['student']['name']}",
        "",
        f"dataset `{report['dataset']['name']}`, loss `{report['loss']['name']}`, "
        f"seed {report['seed']}, device `{report['device']}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        *(f"- {line}" for line in summary_lines(report)),
        "",
    ]
    return "\n".join(lines)


def write(report: dict[str, Any], run_dir: Path, console: Console, task: Task = TASK) -> None:
    """Print the table and write report.json and report.md into `run_dir`."""
    write_json_atomic(run_dir / "report.json", report)
    write_text_atomic(run_dir / "report.md", markdown(report, task))
    console.print(table(report, task))
    for line in summary_lines(report):
        console.print(line)


def load(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def build_report(
    cfg: DictConfig,
    task: Task,
    info: DatasetInfo,
    device: torch.device,
    results: dict[str, dict[str, Any]],
    soft_labels: dict[str, Any],
    stages: dict[str, Stage],
    run_dir: Path,
) -> dict[str, Any]:
    """report.json's contents (its one owner)."""
    teacher, student = results["teacher"], results["student"]
    report: dict[str, Any] = {
        "kdcli_version": __version__,
        "run_dir": str(run_dir),
        "seed": cfg.seed,
        "device": str(device),
        "processes": distributed.world_size(),
        "dataset": asdict(info),
        "loss": {
            "name": config_choice("loss", cfg.loss),
            **{k: v for k, v in plain(cfg.loss).items() if k != "_target_"},
        },
        **results,
        "soft_labels": soft_labels,
        "compression": {
            "params": teacher["params"] / student["params"],
            "flops": teacher["flops"] / max(student["flops"], 1),
            "latency_speedup": teacher["latency_ms"] / student["latency_ms"],
        },
        "stages": {name: asdict(stage) for name, stage in stages.items()},
    }
    if "baseline" in results:
        report["kd_gain"] = student[task.metric] - results["baseline"][task.metric]
    return report
