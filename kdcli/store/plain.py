"""Values read from files that anyone may have written: plain data, never code.

A checkpoint, a run's config.yaml, a cache manifest or a report holds numbers, strings,
lists and dicts. kdcli merges such values into its own configs (configs/<group>/<option>.yaml)
and builds objects from those, so a file must not be able to name what gets built: a key that
Hydra's `instantiate` reads (`_target_`, `_partial_`, `_args_`, ...) or an interpolation
(`${...}`, which a resolver could turn into anything) is refused wherever it appears.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from kdcli.errors import UserError

# the keys through which a config names code or changes how Hydra builds it
CODE_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
MAX_DEPTH = 32  # deeper nesting than any kdcli file has; refused rather than recursed into


def plain_data(value: Any, source: str, key: str = "", depth: int = 0) -> Any:
    """`value` if it is plain data (None, bool, int, finite float, str, and lists and
    str-keyed dicts of those) naming no code, else a UserError naming `source` and the key.

    `key` is the dotted path of `value` inside the file, for the message."""
    where = f"{source}: {key}" if key else source
    if depth > MAX_DEPTH:
        raise UserError(f"{where} is nested more than {MAX_DEPTH} levels deep; not a kdcli file.")
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UserError(f"{where}={value} is not a finite number; not a kdcli file.")
        return value
    if isinstance(value, str):
        if "${" in value:
            raise UserError(
                f"{where}={value[:100]!r} is an interpolation, which could run a resolver; "
                "kdcli reads only plain values from files. Use a file that kdcli wrote, or "
                "give the setting on the command line."
            )
        return value
    if isinstance(value, (list, tuple)):
        return [plain_data(v, source, f"{key}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: plain_data(v, source, _child(source, key, k), depth + 1) for k, v in value.items()
        }
    raise UserError(f"{where} holds a {type(value).__name__}, not plain data; not a kdcli file.")


def _child(source: str, key: str, name: Any) -> str:
    """The dotted key of `name` under `key`, refused when it names code."""
    if not isinstance(name, str):
        raise UserError(f"{source}: {key or 'the file'} has a key that is not a string ({name!r}).")
    full = f"{key}.{name}" if key else name
    if name in CODE_KEYS:
        raise UserError(
            f"{source}: {full} names code to run. kdcli builds models and datasets only from "
            "its own configs and never from a file; this file was not written by kdcli (or was "
            "altered). Do not use it, or give the settings on the command line."
        )
    return full


MAX_BYTES = 16 * 2**20  # a config, manifest or report is a few kilobytes


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors and aliases: kdcli never writes them, and a few nested aliases
    expand to billions of nodes (a "billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("it uses an alias (*name), which kd never writes")
        return super().compose_node(parent, index)


def read_yaml(path: Path, fix: str) -> Any:
    """What a YAML file holds, as Python data (safe loader, no aliases; the caller checks
    the parts it uses); a UserError naming `path` and `fix` when it cannot be read."""
    return _read(Path(path), lambda text: yaml.load(text, Loader=_NoAliases), "YAML", fix)


def read_json(path: Path, fix: str) -> Any:
    """What a JSON file holds (the caller checks the parts it uses); a UserError naming
    `path` and `fix` when it cannot be read."""
    return _read(Path(path), json.loads, "JSON", fix)


def _read(path: Path, parse: Callable[[str], Any], what: str, fix: str) -> Any:
    """`parse` of the file's text; a file too large, not UTF-8 or not `what` is a UserError."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"it is larger than {MAX_BYTES // 2**20} MB")
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError, RecursionError) as error:
        raise UserError(f"{path} could not be read as {what} ({_why(error)}). {fix}") from None


def _why(error: BaseException) -> str:
    """The first line of an error's message, for a message of ours."""
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


def read_jsonl(path: Path, fix: str) -> Iterator[tuple[int, Any]]:
    """(line number, what the line holds) for each line of a JSON Lines file that is not
    blank, the first line numbered 1 (the caller checks the values it uses); a line that is
    not UTF-8 or not JSON is a UserError naming `path`, the line and `fix`."""
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a BOM
                    if line.strip():
                        yield number, json.loads(line)
                except (ValueError, RecursionError) as error:
                    raise UserError(
                        f"{path} line {number} is not JSON ({_why(error)}). {fix}"
                    ) from None
    except OSError as error:
        raise UserError(f"{path} could not be read ({error.strerror or error}). {fix}") from None
