"""The Sweeper class Hydra instantiates for configs/hydra/sweeper/optuna.yaml.

A thin shell: Hydra imports this module on every `kd train` (its plugin scan), so Optuna,
torch and kdcli.search are imported only when a search runs (in `sweep`).
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Runs an Optuna study over the command line's search space (kdcli/search/sweep.py)."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.context: dict[str, Any] = {}

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.context = {
            "hydra_context": hydra_context,
            "task_function": task_function,
            "config": config,
        }

    def sweep(self, arguments: list[str]) -> Any:
        from kdcli.search.sweep import run_search

        return run_search(self.settings, arguments, **self.context)
