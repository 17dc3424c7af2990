"""The two kinds of failure a user sees, and their exit codes.

A `UserError` is bad input (config, files, data): exit 2, a short message, no traceback.
A `RunError` is a failure while running (NaN loss, out of memory): exit 1.
`did_you_mean` is the close-match hint that bad-input messages share.
"""

import difflib
import errno
import re
from pathlib import Path


class UserError(Exception):
    """Bad input that the user can fix; the message names the key or file and the fix."""

    exit_code = 2


class RunError(Exception):
    """A failure while running that is not the input's fault."""

    exit_code = 1


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


def did_you_mean(word: str, choices: list[str], cutoff: float = 0.5) -> str:
    """ " Did you mean a or b?" for up to three close matches of a typo, else ""."""
    close = difflib.get_close_matches(word, choices, n=3, cutoff=cutoff)
    return f" Did you mean {' or '.join(close)}?" if close else ""
