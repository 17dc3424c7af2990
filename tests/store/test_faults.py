"""A disk with no room: the run stops with exit 1 and one message naming the path, no
traceback, and nothing in the cache that looks complete but is not."""

import resource
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from kd_command import ONE_THREAD, command_line, kd_environment
from kd_settings import TINY

from kdcli.errors import RunError
from kdcli.store.atomic import write_atomic
from kdcli.store.cache import ArtifactCache


@pytest.fixture
def no_room():
    """Writes past 1 kB fail with EFBIG (ulimit -f) in this process, like a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
    yield
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, handler)


def test_a_full_disk_keeps_the_old_file_and_names_the_path(tmp_path, no_room):
    path = tmp_path / "state.pt"
    path.write_bytes(b"old")
    with pytest.raises(RunError, match=f"out of space writing {path} \\(File too large"):
        write_atomic(path, lambda handle: handle.write(b"x" * 4096))
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"], "no temporary file is left"


def test_a_full_disk_while_building_an_entry_leaves_no_entry(tmp_path, no_room):
    cache = ArtifactCache(tmp_path)

    def make(tmp: Path) -> dict:
        np.save(tmp / "logits.npy", np.zeros(4096, dtype=np.float32))
        return {}

    with pytest.raises(RunError, match="out of space writing .*soft_labels/t-k"):
        cache.get_or_make("soft_labels", "t", "k", make)
    assert sorted(p.name for p in (tmp_path / "soft_labels").iterdir()) == ["t-k.lock", "t-k.use"]


def small_files_only() -> None:
    """In the child: writes past 40 kB fail with EFBIG (ulimit -f), like a disk filling up."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))


def test_kd_train_without_room_to_write_exits_1_with_one_message(tmp_path):
    done = subprocess.run(
        command_line(["train", *TINY]),
        cwd=tmp_path,
        env=kd_environment(ONE_THREAD),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_files_only,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "kd: failed: out of space writing outputs/cache/teachers/" in done.stderr
    assert "run the same command again" in done.stderr
    cache = tmp_path / "outputs" / "cache"
    locks = (".lock", ".use")
    assert [p.name for p in (cache / "teachers").iterdir() if not p.name.endswith(locks)] == []
