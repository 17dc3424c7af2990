"""`kd train`'s stages run in this process, for tests that need what a whole run stores (its
cache entries, its report) but not the command around it: no subprocess, no Hydra job.

Imported as `from kd_pipeline import train_in_process` (a module name no other test folder
uses, like kd_settings). The config is composed and checked as `kd train` does
(kdcli/config/checks.py), the objects built once (kdcli/config/objects.py) and the stages run
by kdcli/pipeline/run.py, on the CPU with one thread.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdcli.config.checks import check_overrides
from kdcli.config.objects import build
from kdcli.pipeline.run import run

CPU = torch.device("cpu")


def train_in_process(where: Path, *overrides: str) -> dict:
    """`kd train OVERRIDES` with its cache in where/cache and its run directory where/run;
    returns the report (report.json's contents).

    One thread: on two cores shared with other pytest workers and kd processes, a second
    thread makes such a tiny run 10 to 50 times slower (its threads wait for each other)."""
    [cfg] = check_overrides([*overrides, "device=cpu", f"cache_dir={where / 'cache'}"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = run(cfg, where / "run", build(cfg, CPU), CPU)
    finally:
        torch.set_num_threads(threads)
    assert report is not None, "one process: rank 0 returns the report"
    return report
