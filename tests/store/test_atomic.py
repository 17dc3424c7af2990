"""The one atomic-write helper (kdcli/store/atomic.py): what it leaves, and with which mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kdcli.store.atomic import temp_dir, temp_file, write_atomic, write_json_atomic

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX modes and umask")


@pytest.fixture
def group_umask():
    """umask 002, as on a machine whose users share a cache through a group."""
    before = os.umask(0o002)
    yield
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_follow_the_umask(tmp_path, group_umask):
    write_atomic(tmp_path / "model.pt", lambda handle: handle.write(b"weights"))
    write_json_atomic(tmp_path / "sub" / "manifest.json", {"files": {}})
    assert mode(tmp_path / "model.pt") == 0o664  # mkstemp's were 0600
    assert mode(tmp_path / "sub" / "manifest.json") == 0o664
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "sub"]


def test_an_entry_is_built_in_a_directory_that_follows_the_umask(tmp_path, group_umask):
    built = temp_dir(tmp_path, ".teacher-abc.")
    assert built.name.startswith(".teacher-abc.") and built.is_dir()
    assert mode(built) == 0o775  # mkdtemp's was 0700
    assert temp_dir(tmp_path, ".teacher-abc.") != built


def test_a_temporary_name_is_never_one_that_exists(tmp_path, monkeypatch):
    names = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr("kdcli.store.atomic.secrets.token_hex", lambda n: next(names))
    (tmp_path / "target").touch()
    os.symlink(tmp_path / "target", tmp_path / ".x.aaaa.tmp")  # planted where we might write
    first = temp_file(tmp_path, ".x.", ".tmp")
    assert first.name == ".x.bbbb.tmp" and (tmp_path / "target").read_bytes() == b""
