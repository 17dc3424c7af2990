"""What a rule accepts, built from small specs: a number in a range, a whole number, a seed, a
name that can name a file, lists of these, one of some words. kdcli/config/values.py says which
setting follows which rule."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    accepts: Callable[[Any], bool]
    accepted: str  # what is accepted, after "must be"
    example: str  # a value that is accepted


Spec = tuple[Callable[[Any], bool], str]  # a test of a plain value, and what it accepts


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


ANY_NUMBER = (_is_number, "a number")


def number(low: float, high: float = math.inf, *, low_in: bool = True, high_in: bool = False):
    """A finite number between `low` and `high` (each end included or not)."""

    def accepts(value: Any) -> bool:
        if not _is_number(value):
            return False
        above = value >= low if low_in else value > low
        below = value <= high if high_in else value < high
        return above and below

    if high == math.inf:
        return accepts, f"a number {'>=' if low_in else '>'} {low:g}"
    ends = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
    return accepts, f"a number in {ends}"


def whole(minimum: int, maximum: float = math.inf) -> Spec:
    def accepts(value: Any) -> bool:
        return _is_whole(value) and minimum <= value <= maximum

    if maximum == math.inf:
        return accepts, f"a whole number >= {minimum}"
    return accepts, f"a whole number in [{minimum}, {maximum}]"


SEED = whole(0, 2**32 - 1)  # numpy (and scikit-learn's splits) take no larger seed


def file_name(longest: int) -> Spec:
    """A name that is one path component: the cache names a model's files after it, so a `/`,
    `..` or NUL would put them elsewhere (or fail)."""

    def accepts(value: Any) -> bool:
        name = value if isinstance(value, str) else str(value) if _is_whole(value) else ""
        return 0 < len(name) <= longest and name not in (".", "..") and not set(name) & set("/\\\0")

    return accepts, (
        f"a name of 1 to {longest} characters that can name a file (no / or \\, no NUL byte, "
        "not . or ..)"
    )


def whole_lists(minimum: int) -> Spec:
    """A list of whole numbers >= `minimum`, or of such lists (VGG's blocks)."""

    def accepts(value: Any) -> bool:
        if not isinstance(value, list):
            return False
        return all(
            accepts(v) if isinstance(v, list) else _is_whole(v) and v >= minimum for v in value
        )

    return accepts, f"a list of whole numbers >= {minimum}"


def increasing(minimum: int) -> Spec:
    def accepts(value: Any) -> bool:
        if not isinstance(value, list) or not all(_is_whole(v) and v >= minimum for v in value):
            return False
        return all(a < b for a, b in zip(value, value[1:], strict=False))

    return accepts, f"a list of increasing whole numbers >= {minimum}"


def numbers(length: int | None, spec: Spec) -> Spec:
    """A list (of `length` items, when given) whose every item is what `spec` accepts."""
    item, described = spec

    def accepts(value: Any) -> bool:
        right_length = length is None or (isinstance(value, list) and len(value) == length)
        return isinstance(value, list) and right_length and all(item(v) for v in value)

    count = f"{length} " if length else ""
    each = described.removeprefix("a number")
    return accepts, f"a list of {count}numbers" + (f", each{each}" if each else "")


def choice(*words: Any, otherwise: Spec | None = None) -> Spec:
    """One of `words` (null, auto, ...), or what `otherwise` accepts."""
    names = [("null" if w is None else str(w)) for w in words]
    if otherwise is not None:
        names.append(otherwise[1])

    def accepts(value: Any) -> bool:
        if not isinstance(value, bool) and value in words:
            return True
        return otherwise is not None and otherwise[0](value)

    return accepts, ", ".join(names[:-1]) + f" or {names[-1]}"


def some_of(words: Sequence[str]) -> Spec:
    """A non-empty list of distinct items of `words`."""

    def accepts(value: Any) -> bool:
        if not isinstance(value, list) or not value or len(set(map(str, value))) < len(value):
            return False
        return all(isinstance(v, str) and v in words for v in value)

    return accepts, f"a non-empty list of distinct items of [{', '.join(words)}]"


def rule_of(spec: Spec, example: str) -> Rule:
    return Rule(spec[0], spec[1], example)
