"""`kd report PATH...`: one table over many runs (a sweep's, or any), also written as CSV.

Every `report.json` below the given paths is a run. Runs whose configs differ only in `seed`
form a group, shown as one row with each figure's mean ± std over the group (`--per-run`: one
row per run). The swept parameters come from each run's `.hydra/overrides.yaml`: the override
keys whose values differ between the runs (all of a lone run's overrides). `--plot` draws
the student's accuracy against each swept parameter (with error bars over seeds). The files
are read, and checked for their shape, in sweep_runs.py.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from kdcli.cli.sweep_plot import plot, pyplot
from kdcli.cli.sweep_runs import (
    FLAG,
    LIST,
    NUMBER,
    OBJECT,
    PAIR,
    REPORT,
    TEXT,
    Kind,
    Run,
    WrongShape,
    field,
    load_runs,
    wrong_shape,
)
from kdcli.cli.sweep_table import rich_table
from kdcli.engine.stats import mean_std
from kdcli.errors import UserError
from kdcli.store.atomic import atomic_path

if TYPE_CHECKING:  # the type alone: `kd report` does not import the pipeline
    from kdcli.pipeline.report import Report


@dataclass
class Column:
    """A column: its CSV name, how to read the value from a report, how to show it."""

    name: str
    value: Callable[[Report], Any]
    show: Callable[[Any], str]


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def _millions(value: float) -> str:
    return f"{value / 1e6:.3f}"


def _seconds(value: float) -> str:
    return f"{value:.1f}"


def _get(key: str, kind: Kind = NUMBER) -> Callable[[Report], Any]:
    """A reader of the dotted `key` (None when absent); `WrongShape` when not of `kind`."""
    return lambda report: field(report, key, kind)


def _end(at: int) -> Callable[[Report], Any]:
    """A reader of one end of the KD gain's interval."""
    return lambda report: (field(report, "kd_gain_ci", PAIR) or [None, None])[at]


def _count(report: Report) -> int | None:
    warnings = field(report, "warnings", LIST)
    return None if warnings is None else len(warnings)


def _total_seconds(report: Report) -> float | None:
    stages = field(report, "stages", OBJECT)
    if not stages:
        return None
    return sum(field(report, f"stages.{name}.seconds", NUMBER) or 0.0 for name in stages)


@dataclass
class Figures:
    """What `kd report` shows of each run, for the runs' headline metric (the task's: `top1`
    for classification): its columns, the table's titles (figures without one are CSV-only),
    which figures a seed group keeps and which of those it averages."""

    columns: tuple[Column, ...]
    titles: dict[str, str]
    grouped: tuple[str, ...]
    means: set[str]

    @property
    def shows(self) -> dict[str, Callable[[Any], str]]:
        return {c.name: c.show for c in self.columns}


ROLES = ("teacher", "student", "baseline")


def figures(metric: str = "top1", label: str = "top-1") -> Figures:
    """The figures for a headline `metric` (a fraction, higher is better) written `label`:
    CSV columns `teacher_<metric>`, `student_<metric>`, `baseline_<metric>`."""
    scores = [Column(f"{role}_{metric}", _get(f"{role}.{metric}"), _percent) for role in ROLES]
    eces = [Column(f"{role}_ece", _get(f"{role}.ece"), _percent) for role in ROLES]
    columns = (
        Column("teacher", _get("teacher.name", TEXT), str),
        Column("student", _get("student.name", TEXT), str),
        *scores,
        Column("kd_gain", _get("kd_gain"), _points),
        Column("kd_gain_ci_low", _end(0), _points),
        Column("kd_gain_ci_high", _end(1), _points),
        Column("kd_gain_p", _get("kd_gain_p"), lambda v: f"{v:.2g}"),
        *eces,
        Column("teacher_params", _get("teacher.params"), _millions),
        Column("student_params", _get("student.params"), _millions),
        Column("student_bytes", _get("student.checkpoint_bytes"), lambda v: f"{v / 2**20:.2f}"),
        Column("teacher_reused", _get("teacher.reused", FLAG), lambda v: "yes" if v else "no"),
        Column("warnings", _count, str),
        Column("seconds", _total_seconds, _seconds),
    )
    titles = {
        **{f"{role}_{metric}": f"{role} {label} %" for role in ROLES},
        "kd_gain": "KD gain points",
        "kd_gain_ci_low": "KD gain 95% CI",  # shown with kd_gain_ci_high as "low to high"
        "kd_gain_p": "p",
        "teacher_params": "teacher params M",
        "student_params": "student params M",
        "student_bytes": "student MiB",
        "teacher_reused": "teacher reused",
        "warnings": "warnings",
        "seconds": "time s",
        "n_seeds": "seeds",
    }
    # A seed group averages the scores, ECEs, gain and time (CSV: <name>_mean and <name>_std),
    # adds up `warnings`, and takes the rest (which the seed does not change) from its first run.
    averaged = [c.name for c in (*scores, *eces)]
    grouped = ("teacher", "student", *averaged[:3], "kd_gain", *averaged[3:])
    grouped += ("teacher_params", "student_params", "student_bytes", "warnings", "seconds")
    return Figures(columns, titles, grouped, {*averaged, "kd_gain", "seconds"})


def _metric(run: Run) -> tuple[str, str]:
    """The run's headline metric and its label (top-1 in reports written before they were
    recorded)."""
    try:
        metric = field(run.report, "metric", TEXT) or "top1"
        return metric, field(run.report, "metric_label", TEXT) or "top-1"
    except WrongShape as error:
        raise wrong_shape(run.path / REPORT, error) from None


def check_figures(runs: list[Run], shown: Figures) -> None:
    """Every figure of every run is of its kind: a report of the wrong shape is named before
    anything is written."""
    for run in runs:
        try:
            for column in shown.columns:
                column.value(run.report)
        except WrongShape as error:
            raise wrong_shape(run.path / REPORT, error) from None


def headline_metric(runs: list[Run]) -> tuple[str, str]:
    """The runs' headline metric and its label, from report.json (`metric`, `metric_label`).
    One table holds one metric."""
    found = {_metric(run) for run in runs}
    if len(found) > 1:
        names = ", ".join(sorted(metric for metric, _ in found))
        raise UserError(
            f"the runs report different headline metrics ({names}): they come from different "
            "tasks; give `kd report` the runs of one task at a time."
        )
    return found.pop()


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


def rows(runs: list[Run], shown: Figures) -> tuple[list[str], list[list[Any]]]:
    """The header and raw values: run, swept parameters, then the figures."""
    params = swept_keys(runs)
    header = ["run", *params, *(c.name for c in shown.columns)]
    table = []
    for run, name in zip(runs, run_names(runs), strict=True):
        table.append(
            [
                name,
                *(_number_or_text(run.overrides.get(k)) for k in params),
                *(c.value(run.report) for c in shown.columns),
            ]
        )
    return header, table


def seed_groups(runs: list[Run]) -> list[list[int]]:
    """Indices of the runs whose configs differ only in `seed`, in order of first appearance
    (a run without a config file is a group of its own)."""
    groups: dict[Any, list[int]] = {}
    for i, run in enumerate(runs):
        key = run.settings if run.settings is not None else ("run", i)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def group_rows(runs: list[Run], shown: Figures) -> tuple[list[str], list[list[Any]]]:
    """One row per seed group: its runs, swept parameters (bar seed), the number of seeds and
    which, then the GROUPED figures."""
    params = [k for k in swept_keys(runs) if k != "seed"]
    names = run_names(runs)
    header = ["runs", *params, "n_seeds", "seeds"]
    for name in shown.grouped:
        header += [f"{name}_mean", f"{name}_std"] if name in shown.means else [name]
    columns = {c.name: c for c in shown.columns}
    table = []
    for members in seed_groups(runs):
        group = [runs[i] for i in members]
        row = [
            " ".join(names[i] for i in members),
            *(_number_or_text(group[0].overrides.get(k)) for k in params),
            len(group),
            " ".join(str(run.report.get("seed")) for run in group),
        ]
        for name in shown.grouped:
            values = [columns[name].value(run.report) for run in group]
            present = [v for v in values if v is not None]
            if name in shown.means:
                row += list(mean_std(present)) if present else [None, None]
            elif name == "warnings":
                row.append(sum(present) if present else None)
            else:
                row.append(values[0])
        table.append(row)
    return header, table


def sort_rows(
    header: list[str], table: list[list[Any]], column: str, descending: bool
) -> list[list[Any]]:
    """Rows by `column` (`student_top1` means `student_top1_mean` over seed groups): numbers
    before text, missing values last either way."""
    if column not in header and f"{column}_mean" in header:
        column = f"{column}_mean"
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


def default_csv_path(paths: list[Path]) -> Path:
    """`<first PATH>/report.csv`, or beside it when the first PATH is a report.json (or a
    search's search.json)."""
    first = paths[0]
    return (first.parent if first.name in (REPORT, "search.json") else first) / "report.csv"


def show(
    paths: list[Path],
    *,
    sort: str | None = None,
    descending: bool = False,
    csv_path: Path | None = None,
    plot_path: Path | None = None,
    per_run: bool = False,
    console: Console | None = None,
) -> int:
    """Print the table over every run below `paths` (one row per seed group, or per run);
    write the CSV (and the plot)."""
    if plot_path is not None:
        pyplot()  # fail before writing anything
    runs = load_runs(paths)
    metric, label = headline_metric(runs)
    shown = figures(metric, label)
    check_figures(runs, shown)
    header, table = rows(runs, shown) if per_run else group_rows(runs, shown)
    params = swept_keys(runs) if per_run else [k for k in swept_keys(runs) if k != "seed"]
    if sort is not None:
        table = sort_rows(header, table, sort, descending)
    csv_path = csv_path or default_csv_path(paths)
    write_csv(csv_path, header, table)
    if plot_path is not None:
        plot(plot_path, header, table, params, metric, label)
    names = {
        " -> ".join(field(r.report, f"{role}.name", TEXT) or "?" for role in ROLES[:2])
        for r in runs
    }
    title = f"kd report: {len(runs)} run(s), {', '.join(sorted(names))}"
    if not per_run:
        title += f"; {len(table)} setting(s), mean ± std over seeds"
    result = rich_table(header, table, title, 1 + len(params), shown.shows, shown.titles)
    console = console or Console()
    if not console.is_terminal:  # a file or a pipe: the whole table, not cut at 80 columns
        natural = Console(width=1000).measure(result).maximum
        console = Console(width=max(console.width, natural))
    console.print(result)
    console.print(Text(f"CSV: {csv_path}" + (f"\nplot: {plot_path}" if plot_path else "")))
    return 0
