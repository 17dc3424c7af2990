"""The two kinds of failure a user sees, and their exit codes.

A `UserError` is bad input (config, files, data): exit 2, a short message, no traceback.
A `RunError` is a failure while running (NaN loss, out of memory): exit 1.
"""


class UserError(Exception):
    """Bad input that the user can fix; the message names the key or file and the fix."""

    exit_code = 2


class RunError(Exception):
    """A failure while running that is not the input's fault."""

    exit_code = 1
