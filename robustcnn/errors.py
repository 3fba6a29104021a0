"""One exception type for mistakes a user can fix (bad name, bad value, missing file).

The CLI turns it into a one-line message and exit code 2; library callers catch it like any ValueError.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class UsageError(ValueError):
    """A user-fixable problem: the message names what was wrong and what to do."""


class RobustcnnWarning(UserWarning):
    """Something was wrong but handled (a corrupt cache entry rebuilt, a store record recomputed)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (raised by the CLI's handler). A BaseException, like KeyboardInterrupt, so
    `except Exception` does not swallow it; cleanup code (`with RunFolder`, the sweep executor) still runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


def first_line(err: BaseException) -> str:
    """'Type: first line of its message', also for exceptions with an empty or unprintable message."""
    try:
        text = str(err).strip()
    except Exception:  # a __str__ that itself fails
        text = ""
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def close_match_hint(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close spelling exists, else an empty string."""
    choices = list(choices)
    prefixed = sorted(c for c in choices if c.startswith(name) or name.startswith(c))
    matches = prefixed[:1] or difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


def check_choice(kind: str, name: str, choices: Iterable[str]) -> str:
    """Return `name` if it is one of `choices`, else raise UsageError with a close-match hint."""
    choices = sorted(choices)
    if name not in choices:
        raise UsageError(f"unknown {kind} '{name}'{close_match_hint(name, choices)}; choose from: {', '.join(choices)}")
    return name
