"""Imports go one way, down this list (a layer may skip layers); nothing imports cli/.

    cli -> search -> config -> pipeline -> knowledge -> engine -> tasks, losses, models, data
    -> store -> errors

Only cli/, search/, config/ and pipeline/ may import Hydra or OmegaConf, and hydra._internal is
imported in config/hydra_shim.py alone. Every module stays under 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kdcli"
LAYERS = [
    {"cli"},
    {"search"},
    {"config"},
    {"pipeline"},
    {"knowledge"},
    {"engine"},
    {"tasks", "losses", "models", "data"},
    {"store"},
    {"errors"},
]
TOP = {"__init__", "__main__"}  # the package's own entry points, above every layer


def rank(part: str) -> int:
    if part in TOP:
        return -1
    for number, names in enumerate(LAYERS):
        if part in names:
            return number
    raise AssertionError(
        f"kdcli/{part} is in no layer: add it to LAYERS and to docs/development.md's layer map"
    )


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def test_imports_go_down_the_layers():
    wrong = []
    for path in modules():
        mine = layer_of(path)
        for line, name in imports(path):
            parts = name.split(".")
            if parts[0] != "kdcli" or len(parts) < 2 or parts[1] == "__version__":
                continue
            if parts[1] == "cli" and mine not in ("cli", *TOP) or rank(parts[1]) < rank(mine):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not wrong, "upward imports:\n" + "\n".join(wrong)


def test_only_the_top_layers_see_hydra_and_the_private_api_sits_in_one_shim():
    wrong = []
    for path in modules():
        for line, name in imports(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
            if name.startswith("hydra._internal") and path.name != "hydra_shim.py":
                wrong.append(where)
            top = layer_of(path) in ("cli", "search", "config", "pipeline")
            if name.split(".")[0] in ("hydra", "omegaconf") and not top:
                wrong.append(where)
    assert not wrong, "\n".join(wrong)


def test_no_module_is_over_400_lines():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in modules()
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, long


def test_no_function_is_over_80_lines():
    long = {
        f"{path.relative_to(PACKAGE.parent)}:{node.name}": node.end_lineno - node.lineno + 1
        for path in modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 80
    }
    assert not long, long


def test_the_rule_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from kdcli.pipeline.run import run\n")
    assert (1, "kdcli.pipeline.run") in imports(bad)
    assert rank("pipeline") < rank("engine")


def test_test_files_have_names_of_their_own():
    """pytest imports test files by their base name (tests/ has no __init__.py): two files
    named alike in two folders stop the whole run at collection."""
    tests = Path(__file__).resolve().parent
    names = [path.name for path in tests.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
