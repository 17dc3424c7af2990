"""The runs `kd report` reads: each `report.json` below the given paths, with its run's
`.hydra/overrides.yaml` and `config.yaml` beside it.

These files may come from anyone (a copied sweep, an edited report), so each is read as plain
data and checked for the shape kd report uses: a file that is not JSON or YAML, is larger than
16 MB, or holds the wrong kind of value (a list where an object belongs, text where a
number does) is a `UserError` naming the file and the value. A report is typed as what kd train
writes (kdcli.pipeline.report.Report), and each value is checked as it is read (`field`). YAML
aliases are refused: kd never writes them, and a few of them can stand for billions of values
(a "billion laughs").
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from kdcli.errors import UserError
from kdcli.store.plain import read_json, read_yaml

if TYPE_CHECKING:  # the type alone: `kd report` does not import the pipeline
    from kdcli.pipeline.report import Report

REPORT = "report.json"
# the copies of runs' files that logger=mlflow keeps beside a SQLite store (outputs/ by
# default; kdcli/pipeline/tracking.py): not runs of their own, unless named directly
TRACKER_COPIES = "mlflow-artifacts"
# Config keys that do not change what a run computes, ignored when grouping with `seed`.
NOT_SETTINGS = ("seed", "cache_dir")


# ---- kinds of value, and reading one from a report ---------------------------------------------

Kind = tuple[Callable[[Any], bool], str]  # a test of a value, and what it accepts


def _is_number(value: Any) -> bool:
    if isinstance(value, float):
        return True
    return type(value) is int and abs(value) <= sys.float_info.max  # as a float it would overflow


NUMBER: Kind = (_is_number, "a number")
TEXT: Kind = (lambda v: isinstance(v, str), "text")
FLAG: Kind = (lambda v: isinstance(v, bool), "true or false")
LIST: Kind = (lambda v: isinstance(v, list), "a list")
OBJECT: Kind = (lambda v: isinstance(v, dict), "an object")
PAIR: Kind = (lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_number, v)), "[a, b]")


class WrongShape(Exception):
    """A report's value of the wrong kind: its key, the value, what it should be."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        super().__init__(key)
        self.key, self.value, self.expected = key, value, expected


def field(report: Report, key: str, kind: Kind) -> Any:
    """The value at the dotted `key` (None when it, or an object on the way, is absent or
    null); `WrongShape` when it is not of `kind`, or an object on the way is not an object."""
    node: Any = report
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if node is None:
            return None
        if not isinstance(node, dict):
            raise WrongShape(".".join(parts[:depth]), node, OBJECT[1])
        node = node.get(part)
    if node is not None and not kind[0](node):
        raise WrongShape(key, node, kind[1])
    return node


def wrong_shape(path: Path, error: WrongShape) -> UserError:
    shown = json.dumps(error.value, default=str)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return UserError(
        f"{path}: {error.key} is {shown}, not {error.expected}; this is not a report kd train "
        "wrote (or it was edited): rerun that run, or move the file out of the way."
    )


# ---- the files ---------------------------------------------------------------------------------


FIX = "Rerun that run, or move the file out of the way."


def read_report(path: Path) -> Report:
    """The report at `path`: an object, whose values are checked as they are read (`field`)."""
    report = read_json(path, FIX)
    if not isinstance(report, dict):
        raise wrong_shape(path, WrongShape("the file", report, "an object of figures"))
    return cast("Report", report)


def read_overrides(run_dir: Path) -> dict[str, str]:
    """The run's command-line overrides, `key=value` -> {key: value} (empty when absent)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    lines = read_yaml(path, FIX) or []
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise wrong_shape(path, WrongShape("the file", lines, "a list of key=value lines"))
    overrides = {}
    for line in lines:
        key, sep, value = line.partition("=")
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
        config = read_yaml(path, FIX) or {}
        if not isinstance(config, dict):
            raise wrong_shape(path, WrongShape("the file", config, "a mapping of settings"))
        kept = {k: v for k, v in config.items() if k not in NOT_SETTINGS}
        try:
            return json.dumps(_keys_as_text(kept), sort_keys=True, default=str)
        except RecursionError:
            raise UserError(
                f"{path}: its settings are nested too deeply for a config kd wrote; rerun that "
                "run, or move the file out of the way."
            ) from None
    return None


def _keys_as_text(value: Any) -> Any:
    """`value` with every mapping's keys as text (YAML also has number keys), so that the
    keys sort."""
    if isinstance(value, dict):
        return {str(key): _keys_as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_keys_as_text(item) for item in value]
    return value


# ---- the runs ----------------------------------------------------------------------------------


@dataclass
class Run:
    path: Path
    report: Report
    overrides: dict[str, str]
    settings: str | None = None  # its config but the seed, as text; None when unknown


def _natural(text: str) -> list[Any]:
    """Sort key that orders job 10 after job 9."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def find_reports(paths: list[Path]) -> list[Path]:
    """Every report.json at or below `paths`, each once, in path order."""
    found: list[Path] = []
    for path in paths:
        try:
            is_file, exists = path.is_file(), path.exists()
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte
            is_file = exists = False
        if not exists:
            raise UserError(f"{path}: no such file or directory; give run directories or a sweep.")
        if is_file:
            if path.name != REPORT:
                raise UserError(f"{path}: not a {REPORT}; give run directories or a sweep.")
            found.append(path.resolve())
        else:
            found.extend(p.resolve() for p in path.rglob(REPORT) if p.is_file()
                         and TRACKER_COPIES not in p.relative_to(path).parts)  # fmt: skip
    unique = sorted(set(found), key=lambda p: _natural(str(p)))
    if not unique:
        where = ", ".join(str(p) for p in paths)
        raise UserError(
            f"no {REPORT} below {where}: `kd report` reads the run directories that `kd train` "
            "writes (outputs/runs/... or a sweep's outputs/multirun/...)."
        )
    return unique


def load_runs(paths: list[Path]) -> list[Run]:
    runs = []
    for report_path in find_reports(paths):
        run_dir = report_path.parent
        report = read_report(report_path)
        runs.append(Run(run_dir, report, read_overrides(run_dir), read_settings(run_dir)))
    return runs
