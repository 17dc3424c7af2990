"""What the artifact cache holds, for `kd cache ls / rm / verify`.

An item is a complete entry (`<kind>/<name>-<fingerprint>/` with its manifest), a training
stage's in-progress state (`<kind>/<name>-<fingerprint>.state.pt`) or a build's progress
(`<kind>/<name>-<fingerprint>.partial/`: the views soft labels stored so far). The lock and
use files beside them (`.lock`, `.use`) are not items. Removing takes the item's lock and its
use lock without waiting, so an entry that a running job is building or using, or a state that
a running job is training from, is left alone.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kdcli.store.cache import MANIFEST, PARTIAL_SUFFIX, STATE_SUFFIX, read_verified, try_lock
from kdcli.store.use_lock import USE_SUFFIX, try_exclusive


@dataclass
class Item:
    kind: str  # teachers, soft_labels, baselines, students
    name: str  # <name>-<fingerprint>
    path: Path
    bytes: int
    last_used: datetime  # an entry's last reuse (or creation); a state's last save (aware)
    in_progress: bool  # a training state, not a finished entry
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def lock(self) -> Path:
        return self.path.parent / f"{self.name}.lock"

    @property
    def use(self) -> Path:
        return self.path.parent / f"{self.name}{USE_SUFFIX}"

    def made_by(self) -> str:
        """The `kd train` command that built the entry, when recorded."""
        made_by = self.manifest.get("made_by")
        return str(made_by.get("command", "")) if isinstance(made_by, dict) else ""


def scan(root: Path) -> list[Item]:
    """Every entry and in-progress state under `root`, by kind and name."""
    items = []
    for kind in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(kind.iterdir()):
            if path.name.startswith("."):
                continue  # a build in progress, or left by a killed one (removed on next build)
            if path.is_dir() and (path / MANIFEST).is_file():
                items.append(_entry(kind.name, path))
            elif path.is_dir() and path.name.endswith(PARTIAL_SUFFIX):
                name = path.name.removesuffix(PARTIAL_SUFFIX)
                used = modified(path)
                items.append(Item(kind.name, name, path, _files_size(path), used, True))
            elif path.is_file() and path.name.endswith(STATE_SUFFIX):
                name = path.name.removesuffix(STATE_SUFFIX)
                used = modified(path)
                items.append(Item(kind.name, name, path, path.stat().st_size, used, True))
    return items


def _entry(kind: str, path: Path) -> Item:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError, RecursionError):
        manifest = {}
    if not isinstance(manifest, dict):
        manifest = {}  # not kdcli's: listed, and rebuilt when a run needs the entry
    used = modified(path / MANIFEST)
    return Item(kind, path.name, path, _files_size(path), used, False, manifest)


def modified(path: Path) -> datetime:
    """When `path` was last modified, in the local time zone (aware, so that it compares with
    a time given with any time zone)."""
    return datetime.fromtimestamp(path.stat().st_mtime).astimezone()


def _files_size(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.iterdir() if f.is_file())


def remove(item: Item) -> bool:
    """Delete `item` unless a running job holds its lock (building it, training from it) or
    its use lock (using it); True when it was deleted."""
    with try_lock(item.lock) as unbuilt:
        if not unbuilt:
            return False
        with try_exclusive(item.use) as unused:
            if not unused:
                return False
            _delete(item.path)
    return True  # the lock and use files stay: a job may be waiting on them


def _delete(path: Path) -> None:
    if path.is_file():  # a training state
        path.unlink(missing_ok=True)
    else:  # out of readers' sight first, then deleted
        hidden = path.with_name(f".{path.name}.removed-{os.getpid()}")
        path.rename(hidden)
        shutil.rmtree(hidden, ignore_errors=True)


def verify(item: Item) -> bool:
    """Whether every file of a finished entry matches its SHA-256 (re-hashed in full)."""
    return item.in_progress or read_verified(item.path, full=True) is not None
