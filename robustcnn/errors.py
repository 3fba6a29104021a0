"""One exception type for mistakes a user can fix (bad name, bad value, missing file).

The CLI turns it into a one-line message and exit code 2; library callers catch it like any ValueError.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class UsageError(ValueError):
    """A user-fixable problem: the message names what was wrong and what to do."""


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
