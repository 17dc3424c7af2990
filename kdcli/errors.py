"""The two kinds of failure a user sees, and their exit codes.

A `UserError` is bad input (config, files, data): exit 2, a short message, no traceback.
A `RunError` is a failure while running (NaN loss, out of memory): exit 1.
`did_you_mean` is the close-match hint that bad-input messages share.
"""

import difflib


class UserError(Exception):
    """Bad input that the user can fix; the message names the key or file and the fix."""

    exit_code = 2


class RunError(Exception):
    """A failure while running that is not the input's fault."""

    exit_code = 1


def did_you_mean(word: str, choices: list[str], cutoff: float = 0.5) -> str:
    """ " Did you mean a or b?" for up to three close matches of a typo, else ""."""
    close = difflib.get_close_matches(word, choices, n=3, cutoff=cutoff)
    return f" Did you mean {' or '.join(close)}?" if close else ""
