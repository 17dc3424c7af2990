"""`kd report PATH...`: one table over many runs (a sweep's, or any), also written as CSV.

Every `report.json` below the given paths is one row. The swept parameters come from each
run's `.hydra/overrides.yaml`: the override keys whose values differ between the runs (all of
a lone run's overrides). `--plot` draws the student's accuracy against each swept parameter.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from kdcli.errors import UserError
from kdcli.store.atomic import atomic_path

REPORT = "report.json"


@dataclass
class Column:
    """A column: its CSV name, how to read the value from a report, how to show it."""

    name: str
    value: Callable[[dict[str, Any]], Any]
    show: Callable[[Any], str]


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def _millions(value: float) -> str:
    return f"{value / 1e6:.3f}"


def _seconds(value: float) -> str:
    return f"{value:.1f}"


def _get(*keys: str) -> Callable[[dict[str, Any]], Any]:
    def read(report: dict[str, Any]) -> Any:
        node: Any = report
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    return read


def _total_seconds(report: dict[str, Any]) -> float | None:
    stages = report.get("stages")
    return sum(s["seconds"] for s in stages.values()) if stages else None


# The figures of every run; the CSV holds the raw values, the table the shown ones.
FIGURES = (
    Column("teacher", _get("teacher", "name"), str),
    Column("student", _get("student", "name"), str),
    Column("teacher_top1", _get("teacher", "top1"), _percent),
    Column("student_top1", _get("student", "top1"), _percent),
    Column("baseline_top1", _get("baseline", "top1"), _percent),
    Column("kd_gain", _get("kd_gain"), _points),
    Column("teacher_params", _get("teacher", "params"), _millions),
    Column("student_params", _get("student", "params"), _millions),
    Column("student_bytes", _get("student", "checkpoint_bytes"), lambda v: f"{v / 2**20:.2f}"),
    Column("teacher_reused", _get("teacher", "reused"), lambda v: "yes" if v else "no"),
    Column("seconds", _total_seconds, _seconds),
)
# The table's titles (the CSV uses the names above); figures without a title are CSV-only,
# like the model names, which a sweep over models shows among the swept parameters anyway.
TITLES = {
    "teacher_top1": "teacher top-1 %",
    "student_top1": "student top-1 %",
    "baseline_top1": "baseline top-1 %",
    "kd_gain": "KD gain points",
    "teacher_params": "teacher params M",
    "student_params": "student params M",
    "student_bytes": "student MiB",
    "teacher_reused": "teacher reused",
    "seconds": "time s",
}


@dataclass
class Run:
    path: Path
    report: dict[str, Any]
    overrides: dict[str, str]


def find_reports(paths: list[Path]) -> list[Path]:
    """Every report.json at or below `paths`, each once, in path order."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: no such file or directory; give run directories or a sweep.")
        if path.is_file():
            if path.name != REPORT:
                raise UserError(f"{path}: not a {REPORT}; give run directories or a sweep.")
            found.append(path.resolve())
        else:
            found.extend(p.resolve() for p in path.rglob(REPORT))
    unique = sorted(set(found), key=lambda p: _natural(str(p)))
    if not unique:
        where = ", ".join(str(p) for p in paths)
        raise UserError(
            f"no {REPORT} below {where}: `kd report` reads the run directories that `kd train` "
            "writes (outputs/runs/... or a sweep's outputs/multirun/...)."
        )
    return unique


def _natural(text: str) -> list[Any]:
    """Sort key that orders job 10 after job 9."""
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def read_overrides(run_dir: Path) -> dict[str, str]:
    """The run's command-line overrides, `key=value` -> {key: value} (empty when absent)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    try:
        lines = OmegaConf.to_container(OmegaConf.load(path)) or []
    except (OmegaConfBaseException, ValueError) as error:
        raise UserError(f"{path} is not valid YAML ({error}); delete or repair it.") from None
    overrides = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        if sep:
            overrides[key.lstrip("+~")] = value
    return overrides


def load_runs(paths: list[Path]) -> list[Run]:
    runs = []
    for report_path in find_reports(paths):
        try:
            report = json.loads(report_path.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"{report_path} is unreadable ({error}); rerun that run.") from None
        runs.append(Run(report_path.parent, report, read_overrides(report_path.parent)))
    return runs


def swept_keys(runs: list[Run]) -> list[str]:
    """The override keys whose values differ between runs, in first-seen order."""
    keys = list(dict.fromkeys(k for run in runs for k in run.overrides))
    if len(runs) == 1:
        return keys
    return [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]


def _number_or_text(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def run_names(runs: list[Run]) -> list[str]:
    """Each run's directory relative to the folder all of them share (a sweep's: 0, 1, ...)."""
    if len(runs) == 1:
        return [runs[0].path.name]
    shared = Path(os.path.commonpath([run.path for run in runs]))
    return [str(run.path.relative_to(shared)) for run in runs]


def rows(runs: list[Run]) -> tuple[list[str], list[list[Any]]]:
    """The header and raw values: run, swept parameters, then the figures."""
    params = swept_keys(runs)
    header = ["run", *params, *(c.name for c in FIGURES)]
    table = []
    for run, name in zip(runs, run_names(runs), strict=True):
        table.append(
            [
                name,
                *(_number_or_text(run.overrides.get(k)) for k in params),
                *(c.value(run.report) for c in FIGURES),
            ]
        )
    return header, table


def sort_rows(
    header: list[str], table: list[list[Any]], column: str, descending: bool
) -> list[list[Any]]:
    """Rows by `column`: numbers before text, missing values last either way."""
    if column not in header:
        raise UserError(f"--sort {column}: no such column; columns: {', '.join(header)}.")
    at = header.index(column)
    present = [r for r in table if r[at] is not None]
    missing = [r for r in table if r[at] is None]
    present.sort(key=lambda r: (isinstance(r[at], str), r[at]), reverse=descending)
    return present + missing


def write_csv(path: Path, header: list[str], table: list[list[Any]]) -> None:
    """The raw values (accuracies as fractions, sizes in parameters and bytes, seconds)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in table:
            writer.writerow(["" if v is None else v for v in row])


def rich_table(header: list[str], table: list[list[Any]], title: str) -> Table:
    shows = {c.name: c.show for c in FIGURES}
    shown = [i for i, name in enumerate(header) if name not in shows or name in TITLES]
    result = Table(title=title)
    for i in shown:
        name = header[i]
        result.add_column(TITLES.get(name, name), justify="left" if name == "run" else "right")
    for row in table:
        cells = []
        for name, value in ((header[i], row[i]) for i in shown):
            if value is None:
                cells.append("-")
            elif name in shows:
                cells.append(shows[name](value))
            else:
                cells.append(_plain(value))
        result.add_row(*cells)
    return result


def _plain(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return str(int(value))
    return str(value)


def default_csv_path(paths: list[Path]) -> Path:
    """`<first PATH>/report.csv`, or beside it when the first PATH is a report.json."""
    first = paths[0]
    return (first.parent if first.is_file() else first) / "report.csv"


def pyplot() -> Any:
    """matplotlib's pyplot drawing into files, or a UserError naming the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError(
            "--plot needs matplotlib, which is not installed; install it with "
            "`pip install kdcli[plot]` (or `pip install matplotlib`), or leave out --plot."
        ) from None
    return plt


def plot(path: Path, header: list[str], table: list[list[Any]], params: list[str]) -> None:
    """A PNG with the student's top-1 against each swept parameter, one panel per parameter."""
    plt = pyplot()
    if not params:
        raise UserError("--plot: the runs share all their settings; there is nothing to plot.")
    accuracy = header.index("student_top1")
    figure, axes = plt.subplots(1, len(params), figsize=(4 * len(params), 3.5), squeeze=False)
    for axis, param in zip(axes[0], params, strict=True):
        at = header.index(param)
        points = [(r[at], 100 * r[accuracy]) for r in table if r[at] is not None]
        xs = [x for x, _ in points]
        if all(isinstance(x, float) for x in xs):
            axis.plot(xs, [y for _, y in points], "o")
        else:  # categories, e.g. loss=kd,hard
            labels = sorted({str(x) for x in xs})
            axis.plot([labels.index(str(x)) for x in xs], [y for _, y in points], "o")
            axis.set_xticks(range(len(labels)), labels)
        axis.set_xlabel(param)
        axis.set_ylabel("student top-1 (%)")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def show(
    paths: list[Path],
    *,
    sort: str | None = None,
    descending: bool = False,
    csv_path: Path | None = None,
    plot_path: Path | None = None,
    console: Console | None = None,
) -> int:
    """Print the table over every run below `paths`; write the CSV (and the plot)."""
    if plot_path is not None:
        pyplot()  # fail before writing anything
    runs = load_runs(paths)
    header, table = rows(runs)
    if sort is not None:
        table = sort_rows(header, table, sort, descending)
    csv_path = csv_path or default_csv_path(paths)
    write_csv(csv_path, header, table)
    if plot_path is not None:
        plot(plot_path, header, table, swept_keys(runs))
    names = {f"{r.report['teacher']['name']} -> {r.report['student']['name']}" for r in runs}
    title = f"kd report: {len(runs)} run(s), {', '.join(sorted(names))}"
    result = rich_table(header, table, title)
    console = console or Console()
    if not console.is_terminal:  # a file or a pipe: the whole table, not cut at 80 columns
        natural = Console(width=1000).measure(result).maximum
        console = Console(width=max(console.width, natural))
    console.print(result)
    console.print(f"CSV: {csv_path}" + (f"\nplot: {plot_path}" if plot_path else ""))
    return 0
