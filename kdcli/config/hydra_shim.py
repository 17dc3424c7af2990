"""The one place that touches Hydra's private API (hydra._internal); tests/config/test_hydra_shim.py
checks it still works with the installed Hydra."""

from __future__ import annotations

import argparse

from hydra.core.override_parser.types import Override


def args_parser() -> argparse.ArgumentParser:
    """Hydra's own command-line parser (overrides, -m, --cfg, --help, ...)."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def split_sweep(overrides: list[Override]) -> list[list[str]]:
    """The override lists of every point of a basic-sweeper sweep, in Hydra's order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    batches = BasicSweeper.split_arguments(overrides, None)
    return [point for batch in batches for point in batch]
