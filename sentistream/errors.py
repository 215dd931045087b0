"""The two kinds of failure the command line distinguishes (exit 2 and exit 1).

Raise them with one line that says what went wrong and what to do about it; `sentistream.cli`
prints that line without a traceback.
"""


class SentistreamError(Exception):
    """Something failed that the user's input did not cause (exit status 1)."""

    exit_code = 1


class UsageError(SentistreamError):
    """Bad usage or bad input: a flag, a file, a value the user can fix (exit status 2)."""

    exit_code = 2
