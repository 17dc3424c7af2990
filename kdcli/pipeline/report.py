"""Stage 4's output: one rich table, report.json and report.md in the run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kdcli.store.atomic import write_json_atomic, write_text_atomic

COLUMNS = (("teacher", "teacher"), ("student", "student (KD)"), ("baseline", "baseline (CE)"))

# (label, report key, formatter); a missing value shows as "-"
ROWS = (
    ("top-1 accuracy", "top1", lambda v: f"{100 * v:.2f}%"),
    ("validation top-1", "val_top1", lambda v: f"{100 * v:.2f}%"),
    ("NLL", "nll", lambda v: f"{v:.4f}"),
    ("agreement with teacher", "agreement", lambda v: f"{100 * v:.2f}%"),
    ("parameters", "params", lambda v: f"{v / 1e6:.3f} M"),
    ("FLOPs / image", "flops", lambda v: f"{v / 1e6:.2f} M"),
    ("CPU latency, batch 1", "latency_ms", lambda v: f"{v:.3f} ms"),
    ("checkpoint size", "checkpoint_bytes", lambda v: f"{v / 2**20:.2f} MiB"),
    ("computed or reused", "reused", lambda v: "reused" if v else "computed"),
)


def _cells(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    present = [(key, title) for key, title in COLUMNS if key in report]
    header = ["", *(title for _, title in present)]
    rows = []
    for label, field, fmt in ROWS:
        values = [report[key].get(field) for key, _ in present]
        if all(v is None for v in values):  # e.g. validation top-1 without a validation split
            continue
        rows.append([label, *("-" if v is None else fmt(v) for v in values)])
    return header, rows


def summary_lines(report: dict[str, Any]) -> list[str]:
    """KD gain and compression, one line each."""
    lines = []
    if "kd_gain" in report:
        lines.append(f"KD gain (student - baseline top-1): {100 * report['kd_gain']:+.2f} points")
    c = report["compression"]
    lines.append(
        f"compression: {c['params']:.1f}x fewer parameters, {c['flops']:.1f}x fewer FLOPs, "
        f"{c['latency_speedup']:.1f}x faster on CPU at batch 1"
    )
    return lines


def table(report: dict[str, Any]) -> Table:
    header, rows = _cells(report)
    result = Table(
        title=f"kd report: {report['teacher']['name']} -> {report['student']['name']} "
        f"on {report['dataset']['name']}, loss={report['loss']['name']}"
    )
    for i, name in enumerate(header):
        result.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        result.add_row(*row)
    return result


def markdown(report: dict[str, Any]) -> str:
    header, rows = _cells(report)
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


def write(report: dict[str, Any], run_dir: Path, console: Console) -> None:
    """Print the table and write report.json and report.md into `run_dir`."""
    write_json_atomic(run_dir / "report.json", report)
    write_text_atomic(run_dir / "report.md", markdown(report))
    console.print(table(report))
    for line in summary_lines(report):
        console.print(line)


def load(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
