"""`kd report`'s table: raw CSV rows shown with titles, units, mean ± std and intervals.

Every title and cell is a rich `Text`, never markup: run names, swept settings and model names
come from the runs' files and may hold `[/b]` or `[v2]`, which markup would eat or choke on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rich.table import Table
from rich.text import Text

Show = Callable[[Any], str]  # a raw value -> its text
Cell = Callable[[list[Any]], str]  # a row of raw values -> the shown text


def _cell(at: int, show: Show) -> Cell:
    return lambda row: "-" if row[at] is None else show(row[at])


def _pair(low: int, high: int, show: Callable[[Any, Any], str]) -> Cell:
    return lambda row: "-" if row[low] is None else show(row[low], row[high])


def _interval(show: Show) -> Callable[[Any, Any], str]:
    return lambda low, high: "-" if high is None else f"{show(low)} to {show(high)}"


def _mean_std(show: Show) -> Callable[[Any, Any], str]:
    return lambda mean, std: (
        show(mean) if std is None else f"{show(mean)} ± {show(std).lstrip('+')}"
    )


def display(
    header: list[str], plain: int, shows: dict[str, Show], titles: dict[str, str]
) -> list[tuple[str, Cell]]:
    """The table's columns: the first `plain` (run, swept parameters) as they are, then the
    figures with a title, each shown by its `shows` entry (a mean with its std, the gain's
    interval as "low to high"); figures without a title are CSV-only."""
    columns = [(header[i], _cell(i, _plain)) for i in range(plain)]
    for at in range(plain, len(header)):
        name = header[at]
        base = name.removesuffix("_mean")
        if name == "kd_gain_ci_low":
            high = header.index("kd_gain_ci_high")
            columns.append((titles[name], _pair(at, high, _interval(shows[name]))))
        elif name.endswith("_mean") and base in titles:
            std = header.index(f"{base}_std")
            columns.append((titles[base], _pair(at, std, _mean_std(shows[base]))))
        elif name in shows and name in titles:
            columns.append((titles[name], _cell(at, shows[name])))
        elif name in titles:  # counts such as n_seeds
            columns.append((titles[name], _cell(at, _plain)))
    return columns


def rich_table(
    header: list[str],
    table: list[list[Any]],
    title: str,
    plain: int,
    shows: dict[str, Show],
    titles: dict[str, str],
) -> Table:
    """The rows as a rich table; `plain`, `shows` and `titles` as for `display`."""
    columns = display(header, plain, shows, titles)
    result = Table(title=Text(title))
    for i, (name, _) in enumerate(columns):
        result.add_column(Text(name), justify="left" if i == 0 else "right")
    for row in table:
        result.add_row(*(Text(cell(row)) for _, cell in columns))
    return result


def _plain(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return str(int(value))
    return str(value)
