"""A job that fails its checks leaves a run directory that was there before as it found it.

Hydra writes a job's `.hydra/*.yaml` and opens its `train.log` before kdcli builds anything, so
a job whose built objects fail their checks (a dataset whose files are missing, a
teacher.checkpoint that does not fit) has by then rewritten the `.hydra/` of a run directory it
was pointed at (`hydra.run.dir=outputs/runs/X`) and added to its log. `kd train` keeps what
Hydra will change in each run directory that already exists (`keep`, before Hydra starts: the
`.hydra/` files and the length of `train.log`), and a job that fails its checks puts it back
(`put_back`); a run directory that the job made is removed instead (main.py `_discard`). A job
that passes its checks runs, and writes its run directory as always.

With -m, the run directories are the sweep directory's sub-folders. Jobs that a launcher runs
in other processes (hydra/launcher=slurm) are not covered: their process has kept nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kdcli.store.atomic import write_atomic

HYDRA = ".hydra"  # Hydra's hydra.output_subdir in kdcli's configs
LOG = "train.log"  # ${hydra.job.name}.log


@dataclass(frozen=True)
class Earlier:
    """What Hydra changes in a run directory: the `.hydra/` files (None: no such folder) and
    the length of the log (None: no log)."""

    hydra: dict[str, bytes] | None
    log_size: int | None


_kept: dict[Path, Earlier] = {}  # run directory (resolved) -> what it held; one command's


def _read(run_dir: Path) -> Earlier:
    hydra = run_dir / HYDRA
    files = (
        {p.name: p.read_bytes() for p in hydra.iterdir() if p.is_file()} if hydra.is_dir() else None
    )
    log = run_dir / LOG
    return Earlier(files, log.stat().st_size if log.is_file() else None)


def output_dir(overrides: list[str], multirun: bool) -> Path:
    """Where the command's runs go: `hydra.run.dir` (`hydra.sweep.dir` with -m), resolved as
    the first job's config has it (a `${now:}` in it, as now: a directory that is new)."""
    from hydra import compose, initialize_config_dir

    from kdcli.config.checks import parse_overrides, resolved, sweep_points
    from kdcli.config.paths import config_dir

    point = sweep_points(parse_overrides(overrides), multirun)[0]
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="train"):
        cfg = compose("train", overrides=point, return_hydra_config=True)
    return Path(str(resolved(cfg, "hydra.sweep.dir" if multirun else "hydra.run.dir")))


def keep(overrides: list[str], multirun: bool) -> None:
    """Remember what the run directories of the command that exist hold (see the module):
    `output_dir` itself, or with -m each of its sub-folders."""
    _kept.clear()
    where = output_dir(overrides, multirun).expanduser()
    if not where.is_dir():
        return
    run_dirs = [p for p in where.iterdir() if p.is_dir()] if multirun else [where]
    for run_dir in run_dirs:
        _kept[run_dir.resolve()] = _read(run_dir)


def put_back(run_dir: Path) -> bool:
    """Put back what Hydra changed in `run_dir` if it was there before this command; False when
    it was not (nothing is changed then)."""
    earlier = _kept.get(run_dir.resolve())
    if earlier is None:
        return False
    log = run_dir / LOG
    for handler in logging.getLogger().handlers:  # Hydra's handler of this log, before cutting it
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == log.resolve():
            handler.close()
    hydra = run_dir / HYDRA
    if earlier.hydra is None:
        shutil.rmtree(hydra, ignore_errors=True)
    else:
        for path in hydra.iterdir() if hydra.is_dir() else ():
            if path.name not in earlier.hydra and path.is_file():
                path.unlink()
        for name, data in earlier.hydra.items():
            write_atomic(hydra / name, _writer(data))
    if earlier.log_size is None:
        log.unlink(missing_ok=True)
    elif log.is_file():
        os.truncate(log, earlier.log_size)
    return True


def _writer(data: bytes) -> Callable[[BinaryIO], int]:
    """`write_atomic`'s `write` for the bytes `data`."""
    return lambda handle: handle.write(data)
