"""Use locks: a run holds a shared lock on every cache entry it reuses or builds, for as long as
it runs, and `kd cache rm` deletes an entry only while it can take that lock exclusively.

The lock is a POSIX `flock` on `<kind>/<name>-<fingerprint>.use`, beside the entry. It is not
the builders' `<entry>.lock`: a run holding that one shared would block another run's rebuild
of a corrupt entry for as long as it runs, and even its own (flock locks taken through two
descriptors of one file conflict within one process too). The kernel drops a process's locks
when it dies, so a killed run holds nothing. Like lock files, use files stay when an entry is
removed: a run may be waiting on one.

Without `fcntl` (Windows), or on a file system without flock (some network mounts), there are
no shared locks: runs hold nothing, and `kd cache rm` is guarded by the builders' `.lock` alone
(it leaves entries that are being built, not those that runs only use).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

USE_SUFFIX = ".use"


def _open(path: Path) -> int:
    """A descriptor of `path`, made if missing (read-only: flock needs no more)."""
    with suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)


def hold_shared(path: Path) -> int | None:
    """A descriptor holding a shared lock on `path` (waiting while `kd cache rm` holds it)
    until it is closed or the process ends; None where there is nothing to lock with (no
    fcntl, or a read-only cache without the file: no one can remove entries there either)."""
    if fcntl is None:
        return None
    try:
        descriptor = _open(path)
    except OSError as error:
        log.debug("cannot open %s (%s): the entry is used without a use lock", path, error)
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH)
    except OSError as error:  # a file system without flock (some network mounts)
        os.close(descriptor)
        log.warning("cannot lock %s (%s): kd cache rm could remove it meanwhile", path, error)
        return None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def release(descriptors: dict[Path, int]) -> None:
    """Close the descriptors of `hold_shared` (their locks go with them) and forget them."""
    for descriptor in descriptors.values():
        with suppress(OSError):
            os.close(descriptor)
    descriptors.clear()


@contextmanager
def try_exclusive(path: Path) -> Iterator[bool]:
    """The lock on `path` if no running job holds it shared (True), else nothing (False);
    never waits. Taken on a file made if missing, so a run that starts meanwhile waits."""
    if fcntl is None:
        yield True
        return
    descriptor = _open(path)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free = True
        except BlockingIOError:
            free = False
        except OSError:  # a file system without flock: runs can hold no use locks there either
            free = True
        yield free
    finally:
        os.close(descriptor)
