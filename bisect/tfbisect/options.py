"""Checks for the command line's values, as argparse `type=` functions.

A value out of range is refused while the command line is read (exit code 2), with a message
that names the option, the range it allows and what was given, before any work starts.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from tfbisect.core.argv import MAX_JOBS as MAX_JOBS  # the range --jobs allows

# The longest a run may be given: a week. Beyond that a time-out is a typo, and numbers that
# large overflow the clocks and waits they end up in.
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
_WHOLE = re.compile(r"[+]?[0-9]+")
_PYTHON = re.compile(r"([0-9]{1,2})\.([0-9]{1,3})")


def shown(text: str, limit: int = 40) -> str:
    """A value as given, quoted with control characters escaped, cut to `limit` characters."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def whole_number(flag: str, low: int, high: int) -> Callable[[str], int]:
    """A `type=` for a whole number from `low` to `high` (both included)."""

    def parse(text: str) -> int:
        value = text.strip()
        # (a length bound first: int() refuses strings of thousands of digits with its own error)
        if len(value) <= 20 and _WHOLE.fullmatch(value) and low <= int(value) <= high:
            return int(value)
        raise argparse.ArgumentTypeError(
            f"{flag} must be a whole number from {low} to {high}, got {shown(text)}"
        )

    parse.__name__ = flag.lstrip("-")  # what argparse names in its own messages
    return parse


def seconds(flag: str, high: float = MAX_TIMEOUT_SECONDS) -> Callable[[str], float]:
    """A `type=` for a finite number of seconds above 0 and at most `high`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and 0 < value <= high:
            return value
        raise argparse.ArgumentTypeError(
            f"{flag} must be a number of seconds above 0 and at most {high:.0f} (a week), got {shown(text)}"
        )

    parse.__name__ = flag.lstrip("-")
    return parse


def bad_if_raises(text: str) -> str:
    """A `type=` for --bad-if-raises TYPE[:REGEX], read as the harness reads it (TYPE before the
    first colon, REGEX after it): the REGEX compiled here, so that a bad one is refused before any
    run instead of making every run an error. The value is kept as given."""
    name, _, pattern = text.partition(":")
    if not name.strip().rsplit(".", 1)[-1]:  # the class name the harness compares
        what = f"--bad-if-raises {shown(text)} names no exception class before the colon"
        todo = "write the class first, e.g. --bad-if-raises ValueError or --bad-if-raises 'ValueError:shape'"
        raise argparse.ArgumentTypeError(f"{what}.\n  What to do: {todo}.")
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(
            f"--bad-if-raises {shown(text)}: the regular expression after the colon, {shown(pattern)}, "
            f"is not valid: {exc}.\n"
            "  What to do: fix it (it is Python's re.search over the exception's message): escape "
            "the characters meant literally with a backslash (\\( \\[ \\. \\*), or drop the colon and "
            "what follows it to match the class alone."
        ) from None
    return text


jobs = whole_number("--jobs", 1, MAX_JOBS)
prefetch = whole_number("--prefetch", 0, MAX_JOBS)
timeout = seconds("--timeout")


def known_pythons() -> list[str]:
    """The CPython versions tfbisect can run: those it looks for, and every Python 3 that some
    TF release has wheels for (from the catalogue snapshot)."""
    from tfbisect.core import catalogue
    from tfbisect.core.errors import TfbisectError
    from tfbisect.core.versions import python_sort_key
    from tfbisect.envs import interpreters

    known = set(interpreters.SUPPORTED)
    try:
        for release in catalogue.load_snapshot().releases(pre=True):
            known.update(release.cpython3)
    except (TfbisectError, OSError, ValueError):
        pass  # no snapshot: the Pythons tfbisect looks for are still known
    return sorted(known, key=python_sort_key)


def python_version(text: str) -> str:
    """A `type=` for --python: X.Y, and a Python that exists for some TF release."""
    value = text
    match = _PYTHON.fullmatch(value)
    known = known_pythons()
    if match and f"{int(match[1])}.{int(match[2])}" in known:
        return f"{int(match[1])}.{int(match[2])}"
    from tfbisect.core.versions import python_sort_key
    from tfbisect.envs import interpreters

    here = sorted(interpreters.available(), key=python_sort_key, reverse=True)  # newest first
    if not match:
        what = f"--python takes a version written X.Y (e.g. 3.11), got {shown(text)}"
    elif match[1] != "3":
        what = f"--python {value}: tfbisect runs scenarios on Python 3 only ({known[0]} to {known[-1]})"
    else:
        what = f"--python {value} is not a Python any TF release has wheels for ({', '.join(known)})"
    todo = (
        f"pin one that this machine has (e.g. --python {here[0]})"
        if here
        else "install one (e.g. `pyenv install 3.11`)"
    )
    raise argparse.ArgumentTypeError(
        f"{what}; this machine has {interpreters.listing(here)}.\n"
        f"  What to do: {todo}, or drop --python to let tfbisect choose; "
        "`tfbisect versions` lists the Pythons each TF release has wheels for."
    )
