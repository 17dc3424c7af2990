"""Whether kd can write where a setting or a flag points, checked before any work (exit 2)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from kdcli.errors import UserError


def _unwritable(directory: Path) -> str | None:
    """Why kd cannot make entries in `directory`, or else in its nearest existing parent (None
    when it can): tried by making (and removing) a scratch directory there."""
    existing = directory
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            return f"{existing} is not a directory"
        os.rmdir(tempfile.mkdtemp(prefix=".kd-write-check-", dir=existing))
        return None
    except (OSError, ValueError) as error:  # no permission, a name too long, a NUL byte
        return f"making one in {existing} fails: {getattr(error, 'strerror', None) or error}"


def check_writable_dir(key: str, value: Any, example: str) -> None:
    """The directory `value` exists and takes new entries, or can be made."""
    problem = _unwritable(Path(str(value)).expanduser())
    if problem is not None:
        raise UserError(
            f"{key}={value}: kd cannot make a directory there ({problem}); give a folder it "
            f"can write to, e.g. {key}={example}."
        )


def check_writable_file(flag: str, path: Path, example: str) -> None:
    """`path` is not a directory, and its folder takes new files or can be made."""
    try:
        problem = f"{path} is a directory" if path.is_dir() else _unwritable(path.parent)
    except (OSError, ValueError) as error:
        problem = str(getattr(error, "strerror", None) or error)
    if problem is not None:
        raise UserError(
            f"{flag} {path}: kd cannot write that file ({problem}); give a file in a folder it "
            f"can write to, e.g. {flag} {example}."
        )
