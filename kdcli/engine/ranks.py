"""Where this process sits among torchrun's, read from the environment alone.

No torch here: `kd train --help` and the other informational commands go through
`rank_scratch` before any job runs, and importing torch costs them seconds. The process group
itself (join, leave, collectives) lives in kdcli/engine/distributed.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def env_world_size() -> int:
    """How many processes torchrun started (1 without torchrun), before the group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_by_torchrun() -> bool:
    """True in a process that torchrun (or another launcher) started as one of several."""
    return env_world_size() > 1


def env_rank() -> int:
    """This process's rank from the environment, usable before the process group exists."""
    return int(os.environ.get("RANK", "0"))


@contextmanager
def rank_scratch() -> Iterator[list[str]]:
    """Hydra overrides that keep ranks other than 0 out of the output directories, for as
    long as the block runs.

    Every rank composes the config through Hydra, and Hydra would create a run directory
    named by the time, which differs between processes. Rank 0 owns the real one; the other
    ranks get a scratch directory, removed when the block ends, and learn rank 0's from
    `distributed.shared_run_dir`. The scratch comes from tempfile.mkdtemp: private (0700) and
    named at random, where a name known in advance (/tmp/kd-rank1-<pid>) could already be a
    symlink that someone else put there.
    """
    if not launched_by_torchrun() or env_rank() == 0:
        yield []
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"kd-rank{env_rank()}-"))
    try:
        yield [f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}", "hydra.output_subdir=null"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
