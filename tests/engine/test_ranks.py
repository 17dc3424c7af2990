"""Where a process sits among torchrun's, from the environment, without torch."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kdcli.engine.ranks import env_rank, launched_by_torchrun, rank_scratch


def test_other_ranks_run_hydra_in_a_private_scratch_removed_at_the_end(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with rank_scratch() as overrides:
        scratch = Path(overrides[0].removeprefix("hydra.run.dir="))
        assert overrides == [
            f"hydra.run.dir={scratch}",
            f"hydra.sweep.dir={scratch}",
            "hydra.output_subdir=null",
        ]
        assert scratch.is_dir() and stat.S_IMODE(scratch.stat().st_mode) == 0o700
        assert scratch.name != f"kd-rank1-{os.getpid()}", "not a name known in advance"
        (scratch / "train.log").write_text("what Hydra writes there")
    assert not scratch.exists()
    monkeypatch.setenv("RANK", "0")
    with rank_scratch() as overrides:
        assert overrides == [], "rank 0 writes the real run directory"


def test_the_environment_says_whether_torchrun_started_several_processes(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert (launched_by_torchrun(), env_rank()) == (False, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert (launched_by_torchrun(), env_rank()) == (True, 3)
