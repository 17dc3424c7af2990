"""The search.json that an Optuna search writes in its sweep directory, read as plain data.

The file may come from anyone (a copied sweep, an edited file), so it is read like a report
(kdcli/store/plain.py's `read_json`: at most 16 MB, JSON only) and every value kd report uses is
checked for its kind: a wrong kind, a missing key, an unknown trial state, a parameter outside
its range or a run directory outside the sweep is a `UserError` naming the file and the value.
Nothing in it is connected to (no storage URL is opened) or built from: the plots rebuild a
study in memory from these plain values (search_plot.py).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdcli.cli.sweep_runs import FLAG, LIST, NUMBER, OBJECT, TEXT, Kind
from kdcli.errors import UserError
from kdcli.store.plain import read_json

EPOCH = re.compile(r"[0-9]{1,9}")  # an epoch number as search.json writes it

SEARCH = "search.json"
KIND, VERSION = "kdcli search", 1
STATES = ("complete", "pruned", "failed", "running")
DIRECTIONS = ("maximize", "minimize")
FIX = "Run the search again (the same command continues it), or move the file out of the way."

MISSING = object()  # a key that is not there

INTEGER: Kind = (lambda v: type(v) is int and abs(v) < 2**53, "a whole number")
FINITE: Kind = (lambda v: NUMBER[0](v) and math.isfinite(v), "a finite number")
CHOICE: Kind = (lambda v: v is None or TEXT[0](v) or FLAG[0](v) or FINITE[0](v), "a plain value")


@dataclass(frozen=True)
class Param:
    """One key of the search space: Optuna's float, int or categorical distribution."""

    kind: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Trial:
    number: int
    state: str  # one of STATES
    params: dict[str, Any]
    value: float | None
    run_dir: Path  # inside the sweep directory
    intermediate: dict[int, float]  # epoch -> validation figure
    reason: str | None = None  # why a failed trial failed, in one line
    retry_of: int | None = None  # the stopped trial whose values this one ran again


@dataclass(frozen=True)
class Search:
    path: Path  # the search.json
    study: str
    direction: str
    objective: str  # the report.json key under "student" the trials are judged on
    n_trials: int
    space: dict[str, Param]
    trials: list[Trial]
    best: int | None

    @property
    def folder(self) -> Path:
        return self.path.parent

    def count(self, state: str) -> int:
        return sum(trial.state == state for trial in self.trials)


class _Bad(Exception):
    """A value of the wrong kind: where it is, the value, what it should be."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        super().__init__(key)
        self.key, self.value, self.expected = key, value, expected


def _get(node: dict[str, Any], key: str, kind: Kind, where: str, optional: bool = False) -> Any:
    """`node[key]`, checked to be of `kind` (None allowed when `optional`)."""
    full = f"{where}.{key}" if where else key
    if key not in node and not optional:
        raise _Bad(full, MISSING, kind[1])
    value = node.get(key)
    if value is None and optional:
        return None
    if not kind[0](value):
        raise _Bad(full, value, kind[1])
    return value


def _param(name: str, spec: Any) -> Param:
    where = f"space.{name}"
    if not isinstance(spec, dict):
        raise _Bad(where, spec, "an object with a kind")
    kind = _get(spec, "kind", TEXT, where)
    if kind == "categorical":
        choices = _get(spec, "choices", LIST, where)
        if not choices or not all(CHOICE[0](c) for c in choices):
            raise _Bad(f"{where}.choices", choices, "a list of plain values")
        return Param(kind, choices=tuple(choices))
    if kind not in ("float", "int"):
        raise _Bad(f"{where}.kind", kind, '"float", "int" or "categorical"')
    number = FINITE if kind == "float" else INTEGER
    low, high = _get(spec, "low", number, where), _get(spec, "high", number, where)
    log = bool(_get(spec, "log", FLAG, where, optional=True))
    step = _get(spec, "step", number, where, optional=True)
    if low > high:
        raise _Bad(f"{where}.high", high, f"at least low ({low})")
    if log and (low <= 0 or (kind == "float" and step is not None)):
        raise _Bad(f"{where}.log", log, "false (a log range needs low > 0 and no float step)")
    if step is not None and step <= 0:
        raise _Bad(f"{where}.step", step, "a positive step, or null")
    return Param(kind, low, high, log, step)


def _check_value(name: str, value: Any, param: Param, where: str) -> None:
    """`value` is one `param` can take (its kind, inside its range or among its choices)."""
    key = f"{where}.params.{name}"
    if param.kind == "categorical":
        if value not in param.choices:
            raise _Bad(key, value, f"one of {json.dumps(list(param.choices))}")
        return
    number = FINITE if param.kind == "float" else INTEGER
    if not number[0](value) or isinstance(value, bool):
        raise _Bad(key, value, number[1])
    assert param.low is not None and param.high is not None
    if not param.low <= value <= param.high:
        raise _Bad(key, value, f"a value from {param.low} to {param.high}")


def _run_dir(folder: Path, text: str, where: str) -> Path:
    """The trial's run directory, which must lie inside the sweep directory."""
    path = Path(text)
    odd = "\0" in text or any(len(part) > 255 for part in path.parts)  # the OS would refuse it
    if path.is_absolute() or ".." in path.parts or odd or not path.parts:
        raise _Bad(f"{where}.run_dir", text, "a directory inside the sweep directory")
    return folder / path


def _trial(folder: Path, at: int, node: Any, space: dict[str, Param]) -> Trial:
    where = f"trials[{at}]"
    if not isinstance(node, dict):
        raise _Bad(where, node, "an object")
    state = _get(node, "state", TEXT, where)
    if state not in STATES:
        raise _Bad(f"{where}.state", state, " or ".join(f'"{s}"' for s in STATES))
    params = _get(node, "params", OBJECT, where)
    for name, value in params.items():
        if name not in space:
            raise _Bad(f"{where}.params.{name}", value, f"a key of the space ({', '.join(space)})")
        _check_value(name, value, space[name], where)
    value = _get(node, "value", FINITE, where, optional=True)
    run_dir = _get(node, "run_dir", TEXT, where, optional=True)
    steps = _get(node, "intermediate", OBJECT, where, optional=True) or {}
    intermediate = {}
    for step, figure in steps.items():
        if not EPOCH.fullmatch(step) or not FINITE[0](figure):
            raise _Bad(f"{where}.intermediate.{step}", figure, "epoch -> a finite number")
        intermediate[int(step)] = figure
    number = _get(node, "number", INTEGER, where)
    path = _run_dir(folder, str(number) if run_dir is None else run_dir, where)
    reason = _get(node, "reason", TEXT, where, optional=True)
    retry_of = _get(node, "retry_of", INTEGER, where, optional=True)
    return Trial(number, state, params, value, path, intermediate, reason, retry_of)


def _search(path: Path, data: Any) -> Search:
    if not isinstance(data, dict):
        raise _Bad("the file", data, "an object")
    kind = _get(data, "kind", TEXT, "")
    if kind != KIND:
        raise _Bad("kind", kind, f'"{KIND}"')
    version = _get(data, "version", INTEGER, "")
    if version != VERSION:
        raise _Bad("version", version, f"{VERSION} (a newer kdcli wrote it: upgrade kdcli)")
    direction = _get(data, "direction", TEXT, "")
    if direction not in DIRECTIONS:
        raise _Bad("direction", direction, '"maximize" or "minimize"')
    space = {name: _param(name, spec) for name, spec in _get(data, "space", OBJECT, "").items()}
    trials = [
        _trial(path.parent, i, t, space) for i, t in enumerate(_get(data, "trials", LIST, ""))
    ]
    numbers = [trial.number for trial in trials]
    if len(set(numbers)) < len(numbers):
        raise _Bad("trials", numbers, "trials with distinct numbers")
    best = _get(data, "best", INTEGER, "", optional=True)
    complete = {t.number for t in trials if t.state == "complete"}
    if best is not None and best not in complete:
        raise _Bad("best", best, "the number of a complete trial")
    return Search(
        path=path,
        study=_get(data, "study", TEXT, ""),
        direction=direction,
        objective=_get(data, "objective", TEXT, ""),
        n_trials=_get(data, "n_trials", INTEGER, ""),
        space=space,
        trials=trials,
        best=best,
    )


def read_search(path: Path) -> Search:
    """The search described by the search.json at `path`, every value checked."""
    data = read_json(path, FIX)
    try:
        return _search(path, data)
    except _Bad as bad:
        shown = json.dumps(bad.value, default=str)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        missing = bad.value is MISSING
        what = f"missing ({bad.expected})" if missing else f"{shown}, not {bad.expected}"
        raise UserError(
            f"{path}: {bad.key} is {what}; this is not a search.json "
            f"kd train wrote (or it was edited). {FIX}"
        ) from None


def find_search(paths: list[Path]) -> Path | None:
    """The search.json of a lone PATH that is a search directory (or the file itself)."""
    if len(paths) != 1:
        return None
    path = paths[0]
    candidate = path if path.name == SEARCH else path / SEARCH
    try:
        return candidate if candidate.is_file() else None
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return None
