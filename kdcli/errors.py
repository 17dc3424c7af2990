"""The two kinds of failure a user sees, and their exit codes.

A `UserError` is bad input (config, files, data): exit 2, a short message, no traceback.
A `RunError` is a failure while running (NaN loss, out of memory): exit 1.
`did_you_mean` is the close-match hint that bad-input messages share; `shorten` cuts what a
message quotes from the input (a key, a value, a path) to a readable length; `report_error`
prints one as kd shows it (the command line, and a search's sweeper inside Hydra).
"""

import difflib
import errno
import os
import re
import sys
from pathlib import Path


class UserError(Exception):
    """Bad input that the user can fix; the message names the key or file and the fix."""

    exit_code = 2


class RunError(Exception):
    """A failure while running that is not the input's fault."""

    exit_code = 1


def first_line(error: BaseException) -> str:
    """An error's message in one line (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def debugging() -> bool:
    """Tracebacks wanted: `--debug` (KD_DEBUG=1) or HYDRA_FULL_ERROR=1."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("KD_DEBUG") == "1"


def report_error(error: UserError | RunError) -> int:
    """Print one short paragraph on stderr (a traceback only when debugging); return the code.
    What the message quotes from the input is cut to a readable length (`shorten`)."""
    if debugging():
        raise error
    kind = "error" if isinstance(error, UserError) else "failed"
    print(f"kd: {kind}: {shorten(str(error))}", file=sys.stderr)
    return error.exit_code


# a full disk, a full quota, or a file size limit (ulimit -f): no room to write
NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def out_of_space(error: BaseException, path: Path | str | None) -> RunError | None:
    """The message for a write that failed for lack of room (None for any other error)."""
    if not isinstance(error, OSError):
        return None
    short_write = error.errno is None and SHORT_WRITE.search(str(error))  # numpy's tofile
    if error.errno not in NO_ROOM and not short_write:
        return None
    where = path or error.filename or "a file"
    why = error.strerror or "the disk took only part of a write"
    return RunError(
        f"out of space writing {where} ({why}). Nothing half-written was kept. Free "
        "space on that disk (`kd cache rm --older-than 30d` removes cache entries unused for a "
        "month) or point cache_dir= / hydra.run.dir= at a disk with room, then run the same "
        "command again: finished stages and saved training states are reused."
    )


def name_too_long(error: BaseException) -> UserError | None:
    """The message for a path the file system refuses as too long (None for any other error):
    always a path from the input, wherever it was first used."""
    if not isinstance(error, OSError) or error.errno != errno.ENAMETOOLONG:
        return None
    return UserError(f"{error.filename}: {error.strerror}; give a shorter path in the config.")


def did_you_mean(word: str, choices: list[str], cutoff: float = 0.5) -> str:
    """ " Did you mean a or b?" for up to three close matches of a typo, else ""."""
    close = difflib.get_close_matches(word, choices, n=3, cutoff=cutoff)
    return f" Did you mean {' or '.join(close)}?" if close else ""


LONGEST_WORD = 300  # characters of one key, value or path that a message shows
LONGEST_MESSAGE = 2000  # characters of a whole message


def _cut(text: str, keep: int) -> str:
    """The first and last `keep // 2` characters of `text`, and how many were left out."""
    half = keep // 2
    return f"{text[:half]}...({len(text) - 2 * half} characters cut)...{text[-half:]}"


def shorten(text: str) -> str:
    """`text` with every run of non-space characters longer than LONGEST_WORD cut to its start
    and end, and the whole cut to LONGEST_MESSAGE: a message that quotes a 10,000-character key
    stays one readable paragraph."""
    text = re.sub(rf"\S{{{LONGEST_WORD + 1},}}", lambda m: _cut(m[0], LONGEST_WORD), text)
    return text if len(text) <= LONGEST_MESSAGE else _cut(text, LONGEST_MESSAGE)
