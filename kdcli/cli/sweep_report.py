"""`kd report PATH...`: one table over many runs (a sweep's, or any), also written as CSV.

Every `report.json` below the given paths is a run. Runs whose configs differ only in `seed`
form a group, shown as one row with each figure's mean ± std over the group (`--per-run`: one
row per run). The swept parameters come from each run's `.hydra/overrides.yaml`: the override
keys whose values differ between the runs (all of a lone run's overrides). `--plot` draws
the student's accuracy against each swept parameter (with error bars over seeds).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from kdcli.cli.sweep_plot import plot, pyplot
from kdcli.cli.sweep_table import rich_table
from kdcli.engine.stats import mean_std
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
    Column("kd_gain_ci_low", lambda r: (r.get("kd_gain_ci") or [None])[0], _points),
    Column("kd_gain_ci_high", lambda r: (r.get("kd_gain_ci") or [None, None])[1], _points),
    Column("kd_gain_p", _get("kd_gain_p"), lambda v: f"{v:.2g}"),
    Column("teacher_ece", _get("teacher", "ece"), _percent),
    Column("student_ece", _get("student", "ece"), _percent),
    Column("baseline_ece", _get("baseline", "ece"), _percent),
    Column("teacher_params", _get("teacher", "params"), _millions),
    Column("student_params", _get("student", "params"), _millions),
    Column("student_bytes", _get("student", "checkpoint_bytes"), lambda v: f"{v / 2**20:.2f}"),
    Column("teacher_reused", _get("teacher", "reused"), lambda v: "yes" if v else "no"),
    Column("warnings", lambda r: len(r["warnings"]) if "warnings" in r else None, str),
    Column("seconds", _total_seconds, _seconds),
)
SHOWS = {c.name: c.show for c in FIGURES}
# The table's titles (the CSV uses the names above); figures without a title are CSV-only,
# like the model names, which a sweep over models shows among the swept parameters anyway.
TITLES = {
    "teacher_top1": "teacher top-1 %",
    "student_top1": "student top-1 %",
    "baseline_top1": "baseline top-1 %",
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
# A seed group's figures: those in MEANS averaged over its runs (CSV: <name>_mean and
# <name>_std), `warnings` added up, the rest (which the seed does not change) from its first run.
GROUPED = (
    "teacher",
    "student",
    "teacher_top1",
    "student_top1",
    "baseline_top1",
    "kd_gain",
    "teacher_ece",
    "student_ece",
    "baseline_ece",
    "teacher_params",
    "student_params",
    "student_bytes",
    "warnings",
    "seconds",
)
MEANS = {"teacher_top1", "student_top1", "baseline_top1", "kd_gain", "seconds"}
MEANS |= {"teacher_ece", "student_ece", "baseline_ece"}
# Config keys that do not change what a run computes, ignored when grouping with `seed`.
NOT_SETTINGS = ("seed", "cache_dir")


@dataclass
class Run:
    path: Path
    report: dict[str, Any]
    overrides: dict[str, str]
    settings: str | None = None  # its config but the seed, as text; None when unknown


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


def read_settings(run_dir: Path) -> str | None:
    """The run's config (its `config.yaml`, else Hydra's copy) without the keys that do not
    change its results, as canonical text: equal for runs that differ only in `seed`."""
    for name in ("config.yaml", ".hydra/config.yaml"):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        except (OmegaConfBaseException, ValueError) as error:
            raise UserError(f"{path} is not valid YAML ({error}); delete or repair it.") from None
        if isinstance(config, dict):
            kept = {k: v for k, v in config.items() if k not in NOT_SETTINGS}
            return json.dumps(kept, sort_keys=True, default=str)
    return None


def load_runs(paths: list[Path]) -> list[Run]:
    runs = []
    for report_path in find_reports(paths):
        try:
            report = json.loads(report_path.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"{report_path} is unreadable ({error}); rerun that run.") from None
        run_dir = report_path.parent
        runs.append(Run(run_dir, report, read_overrides(run_dir), read_settings(run_dir)))
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


def seed_groups(runs: list[Run]) -> list[list[int]]:
    """Indices of the runs whose configs differ only in `seed`, in order of first appearance
    (a run without a config file is a group of its own)."""
    groups: dict[Any, list[int]] = {}
    for i, run in enumerate(runs):
        key = run.settings if run.settings is not None else ("run", i)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def group_rows(runs: list[Run]) -> tuple[list[str], list[list[Any]]]:
    """One row per seed group: its runs, swept parameters (bar seed), the number of seeds and
    which, then the GROUPED figures."""
    params = [k for k in swept_keys(runs) if k != "seed"]
    names = run_names(runs)
    header = ["runs", *params, "n_seeds", "seeds"]
    for name in GROUPED:
        header += [f"{name}_mean", f"{name}_std"] if name in MEANS else [name]
    figures = {c.name: c for c in FIGURES}
    table = []
    for members in seed_groups(runs):
        group = [runs[i] for i in members]
        row = [
            " ".join(names[i] for i in members),
            *(_number_or_text(group[0].overrides.get(k)) for k in params),
            len(group),
            " ".join(str(run.report.get("seed")) for run in group),
        ]
        for name in GROUPED:
            values = [figures[name].value(run.report) for run in group]
            present = [v for v in values if v is not None]
            if name in MEANS:
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
    """`<first PATH>/report.csv`, or beside it when the first PATH is a report.json."""
    first = paths[0]
    return (first.parent if first.is_file() else first) / "report.csv"


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
    header, table = rows(runs) if per_run else group_rows(runs)
    params = swept_keys(runs) if per_run else [k for k in swept_keys(runs) if k != "seed"]
    if sort is not None:
        table = sort_rows(header, table, sort, descending)
    csv_path = csv_path or default_csv_path(paths)
    write_csv(csv_path, header, table)
    if plot_path is not None:
        plot(plot_path, header, table, params)
    names = {f"{r.report['teacher']['name']} -> {r.report['student']['name']}" for r in runs}
    title = f"kd report: {len(runs)} run(s), {', '.join(sorted(names))}"
    if not per_run:
        title += f"; {len(table)} setting(s), mean ± std over seeds"
    result = rich_table(header, table, title, 1 + len(params), SHOWS, TITLES)
    console = console or Console()
    if not console.is_terminal:  # a file or a pipe: the whole table, not cut at 80 columns
        natural = Console(width=1000).measure(result).maximum
        console = Console(width=max(console.width, natural))
    console.print(result)
    console.print(f"CSV: {csv_path}" + (f"\nplot: {plot_path}" if plot_path else ""))
    return 0
