"""Ordinary mistakes of a person at the command line: one line each, exit code 2, no traceback.

An error here is the user's to fix (a missing file, a wrong flag, a busy port, a broker that is
not there), so it says what is wrong and what to do; ``convstream --debug`` adds the traceback.
"""

from __future__ import annotations

EXIT_USAGE = 2


class UserError(Exception):
    """A mistake the person can fix; ``str(exc)`` is the one line ``convstream`` prints."""
