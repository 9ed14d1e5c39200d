"""`tfbisect show`: one stored result, or the list of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tfbisect.commands.common import DONE
from tfbisect.core import store
from tfbisect.core.argv import Common
from tfbisect.core.errors import ExitCode
from tfbisect.core.progress import Progress
from tfbisect.core.record import RunRecord


@dataclass(frozen=True)
class ShowOptions:
    result: Path | None = None  # None: list the stored results
    common: Common = field(default_factory=Common)


@dataclass(frozen=True)
class ShowResult:
    root: Path  # the results folder
    listed: tuple[tuple[Path, RunRecord], ...]  # without a result: every stored one
    shown: tuple[RunRecord, Path] | None  # with a result: it
    exit_code: ExitCode = DONE


def show(options: ShowOptions, progress: Progress) -> ShowResult:
    root = options.common.reports / "results"
    if options.result is None:
        results = store.ResultStore(root, warn=progress.say)
        return ShowResult(results.root, tuple(results.records()), None)
    return ShowResult(root, (), (store.load(options.result), options.result))
