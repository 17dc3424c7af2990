"""`kd report SWEEP_DIR` on an Optuna search (a sweep directory holding search.json).

A search chooses on validation, so the table shows each trial's validation figure (the
objective: the trial's `value`, else its report.json `student.val_<metric>`) and marks the
best trial; the best trial's test figure is shown once, below the table, with its KD gain and
95% interval. The other trials' test figures are left out on purpose: picking among them would
choose on test. Also writes the trial rows as CSV and, with optuna and matplotlib, Optuna's
optimisation history and parameter importances as PNGs beside it (search_plot.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kdcli.cli import search_plot
from kdcli.cli.search_file import Search, Trial, read_search
from kdcli.cli.sweep_report import sort_rows, write_csv
from kdcli.cli.sweep_runs import NUMBER, PAIR, REPORT, TEXT, WrongShape, field, read_report
from kdcli.cli.sweep_runs import wrong_shape as wrong_report

if TYPE_CHECKING:  # the type alone: `kd report` does not import the pipeline
    from kdcli.pipeline.report import Report

BEST = "★"
NOT_SHOWN = (
    "The other trials' test figures are not shown: the search chose on validation, and "
    "choosing among test figures would overstate the winner's."
)


@dataclass
class Result:
    """What a trial's files say: its validation figure and its report (complete trials)."""

    figure: float | None
    report: Report | None


def _results(search: Search) -> dict[int, Result]:
    """Each complete trial's validation figure (its `value`, else its report's
    `student.<objective>`) and its report.json, when its run directory holds one."""
    results = {}
    for trial in search.trials:
        path = trial.run_dir / REPORT
        complete = trial.state == "complete"
        report = read_report(path) if complete and path.is_file() else None
        figure = trial.value if complete else None  # a pruned trial's is a partial figure
        if figure is None and report is not None:
            try:
                figure = field(report, f"student.{search.objective}", NUMBER)
            except WrongShape as error:
                raise wrong_report(path.resolve(), error) from None
        results[trial.number] = Result(figure, report)
    return results


def best_trial(search: Search, results: dict[int, Result]) -> Trial | None:
    """The file's best trial; when it names none (a search cut short before it wrote one),
    the complete trial with the best validation figure."""
    by_number = {trial.number: trial for trial in search.trials}
    if search.best is not None:
        return by_number[search.best]
    scored = [t for t in search.trials if results[t.number].figure is not None]
    if not scored:
        return None
    sign = 1 if search.direction == "maximize" else -1
    return max(scored, key=lambda t: (sign * (results[t.number].figure or 0.0), -t.number))


def rows(
    search: Search, results: dict[int, Result], best: Trial | None
) -> tuple[list[str], list[list[Any]]]:
    """The CSV: one row per trial (trial number, run directory, state, parameters, validation
    figure, epochs it reported, whether it is the best), best first."""
    params = list(search.space)
    header = ["trial", "run", "state", *params, search.objective, "epochs_reported", "best"]
    table = []
    for trial in sorted(search.trials, key=lambda t: t.number):
        table.append(
            [
                trial.number,
                _relative(trial.run_dir, search.folder),
                trial.state,
                *(trial.params.get(name) for name in params),
                results[trial.number].figure,
                len(trial.intermediate) or None,
                best is not None and trial.number == best.number,
            ]
        )
    return header, sort_rows(header, table, search.objective, search.direction == "maximize")


def _relative(path: Path, folder: Path) -> str:
    return str(path.relative_to(folder))


def _labels(search: Search, report: Report | None, path: Path) -> tuple[str, str]:
    """The objective's title (`validation top-1`) and the test metric's (`top-1`)."""
    try:
        metric = field(report, "metric", TEXT) if report else None
        label = (field(report, "metric_label", TEXT) if report else None) or metric
    except WrongShape as error:
        raise wrong_report(path.resolve(), error) from None
    metric = metric or search.objective.removeprefix("val_")
    label = label or metric
    if search.objective == f"val_{metric}":
        return f"validation {label}", label
    return search.objective, label


def _show(value: Any) -> str:
    """A parameter or count as a cell: floats to 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer() and math.isfinite(value):
        return f"{value:.4g}"
    return str(value)


def _figure(value: float | None, percent: bool) -> str:
    """A validation figure: a percentage (without its sign) or 4 significant digits."""
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if percent else f"{value:.4g}"


def rich_trials(
    search: Search, header: list[str], table: list[list[Any]], title: str, objective: str
) -> Table:
    """The trial rows: mark, trial, run, state, parameters, validation figure, epochs."""
    at = header.index(search.objective)
    percent = _percent([row[at] for row in table])
    result = Table(title=Text(title))
    names = ["", "trial", "run", "state", *search.space, objective + (" %" if percent else "")]
    for i, name in enumerate([*names, "epochs"]):
        result.add_column(Text(name), justify="left" if i < 4 else "right")
    for row in table:
        cells = [BEST if row[-1] else "", *(_show(v) for v in row[:at])]
        cells += [_figure(row[at], percent), _show(row[at + 1])]
        result.add_row(*(Text(cell) for cell in cells))
    return result


def _percent(figures: list[float | None]) -> bool:
    """Whether the figures are fractions, shown as percentages (accuracies are)."""
    return all(0 <= f <= 1 for f in figures if f is not None)


def counts(search: Search) -> str:
    """How many trials were asked for, ran, completed, were pruned or failed (and run)."""
    done = {state: search.count(state) for state in ("complete", "pruned", "failed")}
    line = f"{search.n_trials} trial(s) asked, {sum(done.values())} ran: " + ", ".join(
        f"{n} {state}" for state, n in done.items()
    )
    running = search.count("running")
    if running:
        line += f"; {running} running (the search is still running, or was cut short)"
    retries = [t for t in search.trials if t.retry_of is not None]
    if retries:
        pairs = ", ".join(f"{t.retry_of} -> {t.number}" for t in retries)
        line += f"; {len(retries)} stopped by a kill or bad input and run again ({pairs})"
    return line


SHOWN_FAILURES = 3


def failures(search: Search) -> list[str]:
    """Why the first failed trials failed (the reason the search recorded), one line each."""
    failed = [t for t in search.trials if t.state == "failed" and t.reason]
    lines = [f"  trial {t.number} failed: {_shorten(t.reason or '')}" for t in failed]
    if len(lines) > SHOWN_FAILURES:
        more = len(lines) - SHOWN_FAILURES
        lines = [*lines[:SHOWN_FAILURES], f"  ... and {more} more (search.json has each reason)"]
    return lines


def _shorten(text: str, at: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= at else line[: at - 3] + "..."


def best_lines(
    search: Search, best: Trial | None, results: dict[int, Result], labels: tuple[str, str]
) -> list[str]:
    """The best trial, its parameters and validation figure, then its test figure and KD
    gain, shown once. `labels`: the objective's title and the test metric's."""
    if best is None:
        return ["No trial has completed: no best trial yet."]
    result = results[best.number]
    params = ", ".join(f"{name}={value}" for name, value in best.params.items())
    percent = _percent([r.figure for r in results.values()])
    figure = _figure(result.figure, percent)
    figure += "%" if percent and result.figure is not None else ""
    lines = [f"{BEST} best trial: {best.number}, {labels[0]} {figure}: {params}"]
    lines.append(f"  its run directory: {best.run_dir}")
    report = result.report
    if report is None:
        lines.append(f"Trial {best.number} has no {REPORT} in {best.run_dir}: no test figure.")
        return lines
    path = (best.run_dir / REPORT).resolve()
    try:
        metric = field(report, "metric", TEXT) or search.objective.removeprefix("val_")
        test = field(report, f"student.{metric}", NUMBER)
        baseline = field(report, f"baseline.{metric}", NUMBER)
        gain, interval = field(report, "kd_gain", NUMBER), field(report, "kd_gain_ci", PAIR)
    except WrongShape as error:
        raise wrong_report(path, error) from None
    shown = "-" if test is None else f"{100 * test:.2f}%"
    line = f"Test {labels[1]} of trial {best.number}: {shown}"
    if gain is None or baseline is None:
        line += "; no KD gain: the trial ran without a baseline (baseline=false)."
    else:
        line += f" (baseline {100 * baseline:.2f}%); KD gain {100 * gain:+.2f} points"
        if interval is not None:
            line += f", 95% CI {100 * interval[0]:+.2f} to {100 * interval[1]:+.2f}"
    return [*lines, line, NOT_SHOWN]


def show_search(
    path: Path,
    *,
    sort: str | None = None,
    descending: bool = False,
    csv_path: Path,
    plot: bool = False,
    console: Console | None = None,
) -> int:
    """Print the search's table and its best trial; write the CSV and the plots beside it.
    `plot`: the plots were asked for (--plot), so missing extras are an error, not a line."""
    if plot:
        search_plot.require()  # before writing anything
    search = read_search(path)
    results = _results(search)
    best = best_trial(search, results)
    report = None if best is None else results[best.number].report
    labels = _labels(search, report, path if best is None else best.run_dir / REPORT)
    header, table = rows(search, results, best)
    if sort is not None:
        table = sort_rows(header, table, sort, descending)
    write_csv(csv_path, header, table)
    figures = {number: result.figure for number, result in results.items()}
    drawn = search_plot.draw(search, figures, csv_path.parent, labels[0])
    title = f"kd report: search {search.study} ({search.direction} {search.objective})"
    result = rich_trials(search, header, table, title, labels[0])
    console = console or Console()
    if not console.is_terminal:  # a file or a pipe: the whole table, not cut at 80 columns
        natural = Console(width=1000).measure(result).maximum
        console = Console(width=max(console.width, natural))
    console.print(result)
    lines = [counts(search), *failures(search), *best_lines(search, best, results, labels)]
    lines.append(f"CSV: {csv_path}")
    for line in [*lines, *drawn]:
        console.print(Text(line), soft_wrap=True)  # as it is, never cut
    return 0
