"""The one way kdcli writes a file: into a temporary file beside it, then renamed over it.

A reader never sees half a file, and a write that fails leaves the old file as it was.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from kdcli.errors import out_of_space


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
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
