"""Shared fixtures, and the `e2e` marker. End-to-end tests drive the real command
(`python -m kdcli`) in a subprocess, started the one way tests/kd_command.py has, or run the
whole pipeline in process (tests/kd_pipeline.py); `make test-fast` leaves them out.

Every process the tests start, and the test workers themselves, use one thread: two pytest
workers on two cores, each running kd with a thread per core, wait on each other's spinning
threads (the suite took 7.3 minutes that way, 4.9 with one thread each).
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, here and in children

import pytest  # noqa: E402
from kd_command import Result, run_kd  # noqa: E402
from kd_settings import TINY  # noqa: E402

# what a test (or a fixture or helper of its folder that it uses) calls when it runs kd whole:
# the command, a script, the pipeline in process, or processes of its own
RUNS_KD = re.compile(
    r"\b(run_kd|start_kd|kd|train_in_process|bench|torchrun|get_context)\(|subprocess\.|"
    r"main\(\[\"train\""
)
CALL = re.compile(r"\b([A-Za-z_]\w*)\(")
TESTS = Path(__file__).resolve().parent


def _runs_kd(item: pytest.Item) -> bool:
    """Whether the test, a fixture it uses, or a function of the tests' own that either calls
    (followed through the module's names) runs kd whole."""
    todo = [getattr(item, "function", None)]
    fixtures = getattr(item, "_fixtureinfo", None)
    for definitions in getattr(fixtures, "name2fixturedefs", {}).values():
        todo += [d.func for d in definitions]
    module = vars(getattr(item, "module", None) or object())
    seen: set[object] = set()
    while todo:
        function = todo.pop()
        if function in seen or not inspect.isfunction(function):
            continue
        seen.add(function)
        try:
            if TESTS not in Path(inspect.getfile(function)).resolve().parents:
                continue  # kdcli's own code, a library: not where a test starts kd
            source = inspect.getsource(function)
        except (TypeError, OSError):
            continue
        if RUNS_KD.search(source):
            return True
        todo += [module.get(name) for name in CALL.findall(source)]
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `e2e` every test that runs kd whole, itself or through a fixture."""
    for item in items:
        if _runs_kd(item):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def tiny() -> list[str]:
    """Overrides for a `kd train` that finishes in seconds: tiny models, one epoch each."""
    return list(TINY)


@pytest.fixture
def kd(tmp_path: Path):
    """Run `kd ARGS` in a fresh working directory (its cache under outputs/cache); the keywords
    of kd_command.run_kd (cwd, env, launcher, timeout) pass through."""

    def run(*args: str, cwd: Path | None = None, **options) -> Result:
        return run_kd(*args, cwd=cwd or tmp_path, **options)

    return run
