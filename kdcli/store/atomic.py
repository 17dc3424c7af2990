"""The one way kdcli writes a file: into a temporary file beside it, then renamed over it.

A reader never sees half a file, and a write that fails leaves the old file as it was.

Temporary files and directories get the mode the umask gives (0664 and 0775 under umask 002),
like any file a program writes, so that a cache a group shares stays readable by the group:
tempfile's mkstemp and mkdtemp make them 0600 and 0700 whatever the umask. Their names are
random and they are made exclusively (O_EXCL, which also refuses a symlink put there).
"""

from __future__ import annotations

import io
import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from kdcli.errors import out_of_space

NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)  # not on Windows


def _unique(parent: Path, prefix: str, suffix: str, make: Callable[[Path], Any]) -> Path:
    """`parent/<prefix><random><suffix>`, made by `make`, which fails if the name is taken."""
    for _ in range(100):
        path = Path(parent) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            make(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {prefix}*{suffix} in {parent}")


def temp_file(parent: Path, prefix: str, suffix: str = "") -> Path:
    """A new empty file in `parent` that no one else has opened, with the umask's mode."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW
    return _unique(parent, prefix, suffix, lambda path: os.close(os.open(path, flags, 0o666)))


def temp_dir(parent: Path, prefix: str) -> Path:
    """A new empty directory in `parent`, with the umask's mode: where a cache entry is built
    before it is renamed into place (tempfile.mkdtemp's would be 0700)."""
    return _unique(parent, prefix, "", lambda path: os.mkdir(path, 0o777))


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_file(path.parent, f".{path.name}.", ".tmp")
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        full = out_of_space(error, path)
        if full is not None:
            raise full from None
        raise


def write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write(handle)` to fill an in-memory buffer, then write that to a temporary file
    and move it over `path`.

    A handle rather than a name: `torch.save` names the archive inside after the file it is
    given, so writing through a handle keeps a checkpoint's bytes the same whatever the
    temporary name was. A buffer rather than the file: a disk that fills up then fails with
    a plain "no space" OSError (torch's own writer reports it as an unrelated RuntimeError)."""
    buffer = io.BytesIO()
    write(buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(buffer.getbuffer())


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON (indented, values it cannot encode as strings), written atomically and synced."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
