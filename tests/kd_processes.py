"""Python functions run in several processes at once, for the tests of locks and process groups.

Imported as `from kd_processes import run_processes` (a module name no other test folder uses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


def run_processes(context, target: Callable, args_per_process: Iterable[tuple], timeout: float):
    """Start one process of `context` (e.g. multiprocessing.get_context("spawn")) per tuple of
    `args_per_process`, each running `target(*args)`; wait for all and check each exited 0."""
    processes = [context.Process(target=target, args=args) for args in args_per_process]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout)
        assert process.exitcode == 0
