"""Random search.json files for `kd report SWEEP_DIR`: whatever the file holds, kd report exits
0 or 2 (a result, or a `UserError` naming the file), never with another exception; and every
search the reader accepts rebuilds as an in-memory Optuna study for the plots."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kdcli.cli.main import main
from kdcli.cli.search_file import read_search
from kdcli.errors import UserError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCALAR = st.none() | st.booleans() | st.integers(-3, 12) | st.floats(-2, 12) | st.text(max_size=4)
JSON = st.recursive(
    SCALAR,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
NAMES = st.sampled_from(["a", "b", "loss"])
SPEC = st.fixed_dictionaries(
    {"kind": st.sampled_from(["float", "int", "categorical"]) | JSON},
    optional={
        "low": SCALAR,
        "high": SCALAR,
        "log": SCALAR,
        "step": SCALAR,
        "choices": st.lists(SCALAR, max_size=3) | JSON,
    },
)
TRIAL = st.fixed_dictionaries(
    {
        "number": st.integers(0, 5) | JSON,
        "state": st.sampled_from(["complete", "pruned", "failed", "running"]) | JSON,
        "params": st.dictionaries(NAMES, SCALAR, max_size=3) | JSON,
    },
    optional={
        "value": SCALAR,
        "run_dir": st.sampled_from(["0", "1", "x/y", "..", "/tmp", "", "a\0b", "n" * 300]) | JSON,
        "intermediate": st.dictionaries(st.sampled_from(["1", "2", "x"]), SCALAR) | JSON,
    },
)
SEARCH = st.fixed_dictionaries(
    {
        "kind": st.just("kdcli search") | JSON,
        "version": st.just(1) | JSON,
        "study": st.text(max_size=4) | JSON,
        "direction": st.sampled_from(["maximize", "minimize"]) | JSON,
        "objective": st.just("val_top1") | JSON,
        "n_trials": st.integers(0, 9) | JSON,
        "space": st.dictionaries(NAMES, SPEC, max_size=3) | JSON,
        "trials": st.lists(TRIAL, max_size=4) | JSON,
    },
    optional={"best": st.integers(0, 5) | JSON},
)


def report_on(folder: Path, search: bytes) -> int:
    """`kd report` on a sweep directory holding `search` (plots left out: optuna hidden)."""
    folder.mkdir()
    (folder / "search.json").write_bytes(search)
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        patch.setitem(sys.modules, "optuna", None)
        return main(["report", str(folder)])


@FUZZ
@given(SEARCH.map(lambda v: json.dumps(v).encode()) | JSON.map(lambda v: json.dumps(v).encode()))
@example(b'{"kind": "kdcli search", "version": 1}')
@example(b"\xff\xfe")
def test_kd_report_exits_0_or_2_on_any_search_json(search):
    with tempfile.TemporaryDirectory() as scratch:
        assert report_on(Path(scratch) / "sweep", search) in (0, 2)


# searches that are mostly well formed: ranges, steps and parameter values near each other,
# so that many pass the reader and reach Optuna
NEAR = st.integers(0, 4) | st.floats(0, 4)
CHOICE = st.sampled_from(["kd", "dkd", 1, 2.5, True, None])
RANGE = st.builds(
    lambda kind, low, width, log, step: {
        "kind": kind,
        "low": low if kind == "float" else int(low),
        "high": low + width if kind == "float" else int(low + width),
        "log": log,
        "step": step if kind == "float" or step is None else max(1, int(step)),
    },
    st.sampled_from(["float", "int"]),
    NEAR,
    NEAR,
    st.booleans(),
    st.none() | st.sampled_from([1, 0.5, 2, 0.3]),
)
CHOICES = st.fixed_dictionaries(
    {"kind": st.just("categorical"), "choices": st.lists(CHOICE, min_size=1, max_size=3)}
)
NEAR_TRIAL = st.fixed_dictionaries(
    {
        "number": st.integers(0, 5),
        "state": st.sampled_from(["complete", "pruned", "failed", "running"]),
        "params": st.dictionaries(NAMES, NEAR | CHOICE, max_size=2),
        "value": st.none() | st.floats(0, 1),
        "intermediate": st.dictionaries(st.sampled_from(["1", "2"]), st.floats(0, 1)),
    }
)
NEAR_SEARCH = st.fixed_dictionaries(
    {
        "kind": st.just("kdcli search"),
        "version": st.just(1),
        "study": st.just("s"),
        "direction": st.sampled_from(["maximize", "minimize"]),
        "objective": st.just("val_top1"),
        "n_trials": st.just(4),
        "space": st.dictionaries(NAMES, RANGE | CHOICES, min_size=3, max_size=3),
        "trials": st.lists(NEAR_TRIAL, max_size=5, unique_by=lambda t: t["number"]),
    }
)


@pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="kdcli[search] absent")
@FUZZ
@given(NEAR_SEARCH)
def test_every_search_the_reader_accepts_rebuilds_as_a_study(search):
    """What the reader accepts, Optuna takes (a value off its step's grid aside: a ValueError,
    which draw() turns into a line)."""
    from kdcli.cli.search_plot import study

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "search.json"
        path.write_text(json.dumps(search))
        try:
            read = read_search(path)
        except UserError:
            return
        figures = {t.number: t.value for t in read.trials}
        try:
            built = study(read, figures)
        except ValueError as error:
            assert any(p.step is not None for p in read.space.values()), error
            return
        assert len(built.trials) <= len(read.trials)
