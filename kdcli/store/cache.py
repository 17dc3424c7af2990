"""The artifact cache: teachers and soft labels named by a fingerprint of what determines them.

An entry is a directory `<cache_dir>/<kind>/<name>-<fingerprint>/` holding the artifact's
files and a `manifest.json` with each file's SHA-256, size and modification time. It is built
in a temporary directory and renamed into place, so a reader never sees half an entry. An
entry whose files do not match its manifest is treated as absent and rebuilt. Reuse checks
sizes and times and re-hashes only the files whose size or time changed (a sweep does not
re-hash gigabytes of soft labels per run); `kd cache verify` re-hashes everything. The
manifest's own modification time is the entry's last use.

Parallel jobs that want the same entry take an exclusive lock on `<entry>.lock` (filelock): one
builds, the others wait and then reuse it. The kernel releases the lock when its holder
dies, so a killed job never blocks the rest. A job also holds a shared lock on `<entry>.use`
(store/use_lock.py) from before it checks an entry until it ends, so `kd cache rm` leaves the
entries that running jobs use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from kdcli.errors import RunError, out_of_space
from kdcli.store import use_lock
from kdcli.store.atomic import temp_dir, write_json_atomic

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the layout or contents of entries change
MANIFEST = "manifest.json"
STATE_SUFFIX = ".state.pt"  # an in-progress training state, beside its entry
PARTIAL_SUFFIX = ".partial"  # an in-progress build's directory (the views stored so far)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (configs as plain containers)."""
    text = json.dumps([CACHE_FORMAT, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Entry:
    """A complete, verified cache entry."""

    path: Path
    manifest: dict[str, Any]
    reused: bool

    def file(self, name: str) -> Path:
        return self.path / name


def file_stat(path: Path) -> list[int]:
    """[size, modification time in ns]: what changes when a file is rewritten."""
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def read_verified(path: Path, full: bool = False) -> dict[str, Any] | None:
    """The manifest of a complete entry whose files match their checksums, else None.

    Files whose size and modification time match the manifest are trusted without hashing,
    unless `full`; when only the times changed (a copied cache) and the hashes still match,
    the manifest is updated so the next check is quick again."""
    try:
        manifest = well_formed(json.loads((path / MANIFEST).read_text()), path)
        files, stats = manifest["files"], manifest.get("stats", {})
        changed = False
        for name, digest in files.items():
            stat = file_stat(path / name)
            if not full and stats.get(name) == stat:
                continue
            if file_sha256(path / name) != digest:
                log.warning("cache entry %s: %s fails its checksum; rebuilding it", path, name)
                return None
            changed = changed or stats.get(name) != stat
            stats[name] = stat
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        log.warning("cache entry %s is unreadable (%s); rebuilding it", path, error)
        return None
    if changed:
        with contextlib.suppress(OSError):  # a read-only cache is checked in full next time
            used = (path / MANIFEST).stat().st_mtime_ns  # the last use stays what it was
            write_json_atomic(path / MANIFEST, {**manifest, "stats": stats})
            os.utime(path / MANIFEST, ns=(used, used))
    return manifest


# the manifest fields kdcli reads, and the kinds of value they hold
FIELDS: dict[str, tuple[type, ...]] = {
    "fingerprint": (str,),
    "files": (dict,),
    "stats": (dict,),
    "images_per_s": (int, float, type(None)),
    "resumed_from": (str, type(None)),
    "dtype": (str,),
    "topk": (int, type(None)),
    "mode": (str,),
}


def well_formed(manifest: Any, path: Path) -> dict[str, Any]:
    """`manifest` when it has the shape kdcli writes (a ValueError otherwise): the fields
    kdcli reads hold what they should, and `files` names at least one file of the entry
    itself (a plain name: nothing outside the entry is read or trusted)."""
    if not isinstance(manifest, dict) or not manifest.get("files"):
        raise ValueError("not a kdcli manifest")
    for field, kinds in FIELDS.items():
        value = manifest.get(field)
        if field in manifest and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise ValueError(f"{field} holds a {type(value).__name__}")
    if manifest.get("fingerprint") not in (None, path.name.rsplit("-", 1)[-1]):
        raise ValueError("its fingerprint is another entry's")
    for name, digest in manifest["files"].items():
        if not isinstance(digest, str) or Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"files names {name[:100]!r}, not a file of the entry")
    return manifest


def mark_used(path: Path) -> None:
    """Record that the entry at `path` was used now (its manifest's modification time)."""
    with contextlib.suppress(OSError):  # a read-only cache: no record of use
        os.utime(path / MANIFEST)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path`, released when the block ends or the process dies
    (filelock: flock on POSIX, msvcrt on Windows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path, timeout=-1):
        yield


@contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """The lock on `path` if no one holds it (True), else nothing (False); never waits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


class ArtifactCache:
    """The cache under `root`. The use locks of the entries it returned are held until
    `release()` (the end of a `with` block), until the cache is garbage, or until the process
    ends: a run keeps its cache for as long as it runs."""

    def __init__(self, root: str | os.PathLike, made_by: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.made_by = made_by or {}  # recorded in the manifests of entries built here
        self._in_use: dict[Path, int] = {}  # use file -> the descriptor holding its lock
        weakref.finalize(self, use_lock.release, self._in_use)

    def __enter__(self) -> ArtifactCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        """Let go of the use locks: `kd cache rm` may remove the entries again."""
        use_lock.release(self._in_use)

    def entry_path(self, kind: str, name: str, key: str) -> Path:
        return self.root / kind / f"{name}-{key}"

    def state_path(self, kind: str, name: str, key: str) -> Path:
        """Where the stage that makes this entry keeps its in-progress training state."""
        return self.root / kind / f"{name}-{key}{STATE_SUFFIX}"

    def partial_path(self, kind: str, name: str, key: str) -> Path:
        """Where a build that can continue after a kill keeps its progress (views soft labels)."""
        return self.root / kind / f"{name}-{key}{PARTIAL_SUFFIX}"

    def lock_path(self, kind: str, name: str, key: str) -> Path:
        return self.root / kind / f"{name}-{key}.lock"

    def use_path(self, kind: str, name: str, key: str) -> Path:
        return self.root / kind / f"{name}-{key}{use_lock.USE_SUFFIX}"

    def hold(self, kind: str, name: str, key: str) -> None:
        """Take the entry's shared use lock (once), kept until `release`."""
        path = self.use_path(kind, name, key)
        if path not in self._in_use:
            descriptor = use_lock.hold_shared(path)
            if descriptor is not None:
                self._in_use[path] = descriptor

    def get(self, kind: str, name: str, key: str) -> Entry | None:
        """The complete entry for `key`, or None; never builds (its use lock is taken)."""
        path = self.entry_path(kind, name, key)
        self.hold(kind, name, key)
        manifest = read_verified(path)
        if manifest is None:
            return None
        mark_used(path)
        return Entry(path, manifest, reused=True)

    def get_or_make(
        self,
        kind: str,
        name: str,
        key: str,
        make: Callable[[Path], dict[str, Any]],
    ) -> Entry:
        """Return the entry for `key`, building it with `make(tmp_dir)` if absent or corrupt.

        `make` writes its files into `tmp_dir` and returns extra manifest fields. The entry's
        use lock is taken before it is checked: from then on `kd cache rm` leaves it alone.
        """
        path = self.entry_path(kind, name, key)
        self.hold(kind, name, key)
        manifest = read_verified(path)
        if manifest is not None:
            mark_used(path)
            return Entry(path, manifest, reused=True)
        with file_lock(self.lock_path(kind, name, key)):
            manifest = read_verified(path)  # another job may have built it while we waited
            if manifest is not None:
                mark_used(path)
                return Entry(path, manifest, reused=True)
            manifest = self._build(path, key, make)
        return Entry(path, manifest, reused=False)

    def _build(self, path: Path, key: str, make: Callable[[Path], dict[str, Any]]) -> dict:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(path)
        tmp = temp_dir(path.parent, f".{path.name}.")  # the umask's mode: a group shares it
        try:
            extra = make(tmp)
            made = [f for f in sorted(tmp.iterdir()) if f.name != MANIFEST]
            manifest = {
                "fingerprint": key,
                "format": CACHE_FORMAT,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "made_by": self.made_by,
                **extra,
                "files": {f.name: file_sha256(f) for f in made},
                "stats": {f.name: file_stat(f) for f in made},
            }
            write_json_atomic(tmp / MANIFEST, manifest)
            if path.exists():  # a corrupt entry: move it aside, then drop it
                stale = path.with_name(f".{path.name}.stale-{os.getpid()}")
                path.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
            tmp.rename(path)
        except BaseException as error:
            shutil.rmtree(tmp, ignore_errors=True)
            full = out_of_space(error, path)
            if full is not None:
                raise full from None
            raise
        return manifest


def _remove_leftovers(path: Path) -> None:
    """Delete the temporary directories of builders of `path` that were killed mid-build.

    Only the holder of the entry's lock builds it, so while we hold it, any temporary
    directory of this entry belongs to a builder that died.
    """
    for leftover in path.parent.glob(f".{path.name}.*"):
        log.info("removing %s, left by a build that did not finish", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


def vanished(error: BaseException, root: str | os.PathLike) -> RunError | None:
    """The message for a file of the cache under `root` that was missing when a run read it
    (an entry deleted by hand while the run used it), None for any other error."""
    if not isinstance(error, FileNotFoundError):
        return None
    if not isinstance(error.filename, (str, bytes, os.PathLike)):
        return None
    cache = Path(os.path.abspath(root))
    missing = Path(os.path.abspath(os.fsdecode(error.filename)))
    if cache not in missing.parents:
        return None
    entry = "/".join(missing.relative_to(cache).parts[:2])
    return RunError(
        f"the cache entry {entry} in {root} vanished while this run used it ({missing} is "
        "gone: deleted by hand?). Run the same command again: it builds the entry anew."
    )
