"""Every exit code tfbisect has, and the error tree: each class has its code and a two-part
message (what happened, then what to do).  The README's exit-code table lists the same codes;
a test keeps the two in step and the codes unique."""

from __future__ import annotations

import enum
import signal


@enum.unique
class ExitCode(enum.IntEnum):
    # `tfbisect run` speaks `git bisect run`'s language, so it can drive `git bisect run` itself.
    NOT_REPRODUCED = 0  # good
    REPRODUCED = 1  # bad
    SKIP = 125  # cannot be tested here
    ERROR = 70  # the scenario crashed or wrote an invalid result: never good or bad
    TIMEOUT = 124  # the scenario did not finish in --timeout
    # Failures of tfbisect's own work, one code each.
    USAGE = 2
    UNKNOWN_VERSION = 3
    NO_INTERPRETER = 4
    SCENARIO = 5
    STORE = 6
    LOCK = 7
    CATALOGUE = 8
    INSTALL = 9
    BACKEND_UNAVAILABLE = 10
    POST = 11
    DOCKER = 12
    TRACE = 13
    NARROW = 14
    # Stopped by a signal: 128 + its number, as shells report it.
    SIGHUP = 128 + signal.SIGHUP
    SIGINT = 128 + signal.SIGINT
    SIGTERM = 128 + signal.SIGTERM


class TfbisectError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code: int = ExitCode.USAGE

    def __init__(self, what: str, todo: str) -> None:
        super().__init__(what)
        self.what = what
        self.todo = todo

    def __str__(self) -> str:
        return f"{self.what}\n  What to do: {self.todo}"


class UsageError(TfbisectError):
    exit_code = ExitCode.USAGE


class UnknownVersionError(TfbisectError):
    exit_code = ExitCode.UNKNOWN_VERSION


class NoInterpreterError(TfbisectError):
    exit_code = ExitCode.NO_INTERPRETER


class ScenarioError(TfbisectError):
    exit_code = ExitCode.SCENARIO


class StoreError(TfbisectError):
    exit_code = ExitCode.STORE


class LockError(TfbisectError):
    exit_code = ExitCode.LOCK


class CatalogueError(TfbisectError):
    exit_code = ExitCode.CATALOGUE


class EnvironmentBuildError(TfbisectError):
    """Installing a version failed: for a search this is a skip, never good or bad."""

    exit_code = ExitCode.INSTALL


class BackendUnavailableError(TfbisectError):
    exit_code = ExitCode.BACKEND_UNAVAILABLE


class PostError(TfbisectError):
    """Posting the summary to GitHub failed (the report files are kept)."""

    exit_code = ExitCode.POST


class DockerError(TfbisectError):
    """The Docker engine refused or failed a call."""

    exit_code = ExitCode.DOCKER


class TraceError(TfbisectError):
    """A traced run of one probe (the narrowing's step 4) could not run or wrote no usable trace."""

    exit_code = ExitCode.TRACE


class NarrowError(TfbisectError):
    """A bisection log cannot be narrowed (no single change point, unreadable, another scenario)."""

    exit_code = ExitCode.NARROW
