"""The error tree: each class has its own exit code and a two-part message (what, then what to do)."""

from __future__ import annotations


class TfbisectError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code = 2

    def __init__(self, what: str, todo: str) -> None:
        super().__init__(what)
        self.what = what
        self.todo = todo

    def __str__(self) -> str:
        return f"{self.what}\n  What to do: {self.todo}"


class UsageError(TfbisectError):
    exit_code = 2


class UnknownVersionError(TfbisectError):
    exit_code = 3


class NoInterpreterError(TfbisectError):
    exit_code = 4


class ScenarioError(TfbisectError):
    exit_code = 5


class StoreError(TfbisectError):
    exit_code = 6


class LockError(TfbisectError):
    exit_code = 7


class CatalogueError(TfbisectError):
    exit_code = 8


class EnvironmentBuildError(TfbisectError):
    """Installing a version failed: for a search this is a skip, never good or bad."""

    exit_code = 9


class BackendUnavailableError(TfbisectError):
    exit_code = 10


class InterruptedRunError(TfbisectError):
    exit_code = 130
