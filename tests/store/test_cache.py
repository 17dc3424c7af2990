"""The artifact cache: fingerprints, atomic entries, checksums, and one builder at a time."""

import multiprocessing
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from kd_processes import run_processes

from kdcli.errors import RunError
from kdcli.store import cache as cache_module
from kdcli.store import use_lock
from kdcli.store.cache import ArtifactCache, file_lock, fingerprint, read_verified, vanished
from kdcli.store.use_lock import try_exclusive


def write_file(content: bytes):
    def make(tmp: Path) -> dict:
        (tmp / "data.bin").write_bytes(content)
        return {"note": "test"}

    return make


def test_fingerprint_is_stable_and_order_independent():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_entry_is_built_once_then_reused(tmp_path):
    cache = ArtifactCache(tmp_path)
    first = cache.get_or_make("things", "x", "k1", write_file(b"abc"))
    second = cache.get_or_make("things", "x", "k1", write_file(b"other"))
    assert (first.reused, second.reused) == (False, True)
    assert second.file("data.bin").read_bytes() == b"abc"
    assert second.manifest["note"] == "test" and "data.bin" in second.manifest["files"]


def test_get_returns_a_complete_entry_and_never_builds(tmp_path):
    cache = ArtifactCache(tmp_path)
    assert cache.get("things", "x", "k1") is None
    assert not cache.entry_path("things", "x", "k1").exists()
    cache.get_or_make("things", "x", "k1", write_file(b"abc"))
    entry = cache.get("things", "x", "k1")
    assert entry is not None and entry.reused
    assert entry.file("data.bin").read_bytes() == b"abc"
    entry.file("data.bin").write_bytes(b"abd")  # fails its checksum: as if absent
    assert cache.get("things", "x", "k1") is None


def test_a_failed_build_leaves_no_entry(tmp_path):
    cache = ArtifactCache(tmp_path)

    def broken(tmp: Path) -> dict:
        (tmp / "data.bin").write_bytes(b"half")
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError):
        cache.get_or_make("things", "x", "k", broken)
    assert list((tmp_path / "things").glob("x-k")) == []
    left = [p for p in (tmp_path / "things").iterdir() if not p.name.endswith((".lock", ".use"))]
    assert left == []


def test_a_corrupted_entry_is_rebuilt_not_trusted(tmp_path):
    cache = ArtifactCache(tmp_path)
    entry = cache.get_or_make("things", "x", "k", write_file(b"good"))
    entry.file("data.bin").write_bytes(b"go")  # truncated
    again = cache.get_or_make("things", "x", "k", write_file(b"good"))
    assert again.reused is False
    assert again.file("data.bin").read_bytes() == b"good"


def test_an_entry_without_manifest_is_rebuilt(tmp_path):
    cache = ArtifactCache(tmp_path)
    entry = cache.get_or_make("things", "x", "k", write_file(b"good"))
    (entry.path / "manifest.json").unlink()
    assert cache.get_or_make("things", "x", "k", write_file(b"good")).reused is False


def _build_slowly(root: str, counter: str) -> None:
    def make(tmp: Path) -> dict:
        with open(counter, "a") as handle:
            handle.write("built\n")
        time.sleep(0.5)
        (tmp / "data.bin").write_bytes(b"x")
        return {}

    ArtifactCache(root).get_or_make("things", "x", "k", make)


def test_parallel_processes_build_an_entry_exactly_once(tmp_path):
    counter = tmp_path / "count.txt"
    context = multiprocessing.get_context("spawn")
    builders = [(str(tmp_path / "cache"), str(counter))] * 3
    run_processes(context, _build_slowly, builders, timeout=60)
    assert counter.read_text().count("built") == 1


def _hold_lock_forever(path: str, ready: str) -> None:
    with file_lock(Path(path)):
        Path(ready).touch()
        time.sleep(600)


def test_a_killed_lock_holder_does_not_block_the_others(tmp_path):
    lock = tmp_path / "entry.lock"
    ready = tmp_path / "ready"
    holder = multiprocessing.get_context("spawn").Process(
        target=_hold_lock_forever, args=(str(lock), str(ready))
    )
    holder.start()
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.05)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    started = time.monotonic()
    with file_lock(lock):
        pass
    assert time.monotonic() - started < 5


def test_a_dead_builders_temporary_directory_is_removed_by_the_next_build(tmp_path):
    cache = ArtifactCache(tmp_path)
    leftover = tmp_path / "things" / ".x-k.abc123"
    leftover.mkdir(parents=True)
    (leftover / "data.bin").write_bytes(b"half")
    other = tmp_path / "things" / ".x-other.abc123"  # another entry's build: not ours to touch
    other.mkdir()
    cache.get_or_make("things", "x", "k", write_file(b"good"))
    assert not leftover.exists()
    assert other.exists()


def test_reuse_rehashes_only_files_whose_size_or_time_changed(tmp_path, monkeypatch):
    cache = ArtifactCache(tmp_path)
    entry = cache.get_or_make("things", "x", "k", write_file(b"good"))
    hashed = []
    real = cache_module.file_sha256
    monkeypatch.setattr(cache_module, "file_sha256", lambda p: hashed.append(p) or real(p))
    assert cache.get_or_make("things", "x", "k", write_file(b"new")).reused
    assert hashed == [], "size and time unchanged: no hashing"

    data = entry.file("data.bin")
    stat = data.stat()
    data.write_bytes(b"evil")  # same size, and the time put back: only a full check sees it
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert read_verified(entry.path) is not None
    assert read_verified(entry.path, full=True) is None

    data.write_bytes(b"evil")  # a new modification time: re-hashed, refused, rebuilt
    again = cache.get_or_make("things", "x", "k", write_file(b"good"))
    assert again.reused is False and again.file("data.bin").read_bytes() == b"good"


def test_a_copied_cache_is_hashed_once_then_trusted_by_size_and_time(tmp_path, monkeypatch):
    ArtifactCache(tmp_path / "a").get_or_make("things", "x", "k", write_file(b"good"))
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copy)  # new times
    copy = ArtifactCache(tmp_path / "b")
    used = (copy.entry_path("things", "x", "k") / "manifest.json").stat().st_mtime_ns
    hashed = []
    real = cache_module.file_sha256
    monkeypatch.setattr(cache_module, "file_sha256", lambda p: hashed.append(p) or real(p))
    assert copy.get_or_make("things", "x", "k", write_file(b"new")).reused
    assert len(hashed) == 1
    assert copy.get_or_make("things", "x", "k", write_file(b"new")).reused
    assert len(hashed) == 1, "the manifest now holds the copy's sizes and times"
    manifest = copy.entry_path("things", "x", "k") / "manifest.json"
    assert manifest.stat().st_mtime_ns >= used


def unused(path: Path) -> bool:
    """Whether `kd cache rm` could take the use lock at `path` now."""
    with try_exclusive(path) as free:
        return free


def test_an_entry_is_held_for_use_from_before_its_check_until_release(tmp_path, monkeypatch):
    cache = ArtifactCache(tmp_path)
    use = cache.use_path("things", "x", "k")
    with cache:
        cache.get_or_make("things", "x", "k", write_file(b"good"))
        assert not unused(use), "a build holds the entry it made"
    assert unused(use)
    held_when_checked = []
    real = cache_module.read_verified
    monkeypatch.setattr(
        cache_module,
        "read_verified",
        lambda *a: held_when_checked.append(not unused(use)) or real(*a),
    )
    with cache:
        assert cache.get_or_make("things", "x", "k", write_file(b"new")).reused
        assert held_when_checked == [True], "no window between the check and the lock"
    assert unused(use)


def test_an_entry_in_use_elsewhere_is_still_rebuilt_when_corrupt(tmp_path):
    using = ArtifactCache(tmp_path)
    entry = using.get_or_make("things", "x", "k", write_file(b"good"))
    entry.file("data.bin").write_bytes(b"bad")
    rebuilt = []
    other = threading.Thread(
        target=lambda: rebuilt.append(
            ArtifactCache(tmp_path).get_or_make("things", "x", "k", write_file(b"good"))
        ),
        daemon=True,  # were it blocked, it would not keep pytest from ending
    )
    other.start()
    other.join(30)
    assert rebuilt and rebuilt[0].reused is False, "a shared use lock does not block a build"
    assert entry.file("data.bin").read_bytes() == b"good"


def test_without_flock_a_run_holds_nothing_and_the_cache_still_works(tmp_path, monkeypatch):
    monkeypatch.setattr(use_lock, "fcntl", None)  # Windows
    with ArtifactCache(tmp_path) as cache:
        cache.get_or_make("things", "x", "k", write_file(b"good"))
        assert cache.get_or_make("things", "x", "k", write_file(b"new")).reused
        assert unused(cache.use_path("things", "x", "k"))


def test_a_cache_file_missing_while_a_run_reads_it_is_a_run_error_naming_the_entry(tmp_path):
    root = tmp_path / "cache"
    with pytest.raises(FileNotFoundError) as missing:
        (root / "teachers" / "t-k" / "model.pt").stat()
    error = vanished(missing.value, root)
    assert isinstance(error, RunError)
    assert str(error).startswith(f"the cache entry teachers/t-k in {root} vanished")
    assert "Run the same command again" in str(error) and "\n" not in str(error)
    with pytest.raises(FileNotFoundError) as elsewhere:
        (tmp_path / "data.npy").stat()
    assert vanished(elsewhere.value, root) is None
    assert vanished(PermissionError(13, "denied", str(root / "t")), root) is None
