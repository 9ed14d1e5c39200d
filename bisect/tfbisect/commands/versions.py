"""`tfbisect versions`: the catalogue of TF releases and the Pythons here that can run them."""

from __future__ import annotations

from dataclasses import dataclass

from tfbisect.commands.common import DONE
from tfbisect.core import catalogue
from tfbisect.core.catalogue import Release
from tfbisect.core.errors import ExitCode, UsageError
from tfbisect.core.progress import Progress
from tfbisect.envs import index, interpreters


@dataclass(frozen=True)
class VersionsOptions:
    pre: bool = False
    nightly: bool = False
    refresh: bool = False
    save: bool = False
    index_url: str = catalogue.DEFAULT_INDEX


@dataclass(frozen=True)
class VersionsResult:
    releases: tuple[Release, ...]
    pythons: frozenset[str]  # the Pythons this machine has
    nightly_window: tuple[str, str] | None  # shown only with --nightly
    fetched_at: str
    exit_code: ExitCode = DONE


def versions(options: VersionsOptions, progress: Progress) -> VersionsResult:
    if options.save and not options.refresh:
        raise UsageError("--save writes the snapshot read with --refresh.", "add --refresh.")
    if options.refresh:
        with progress.step("catalogue", f"reading {options.index_url}"):
            cat = index.fetch(options.index_url)
        if options.save:
            catalogue.save_snapshot(cat, catalogue.default_snapshot_path())
            progress.say(f"saved the snapshot to {catalogue.default_snapshot_path()}")
    else:
        cat = catalogue.load_snapshot()
    return VersionsResult(
        releases=tuple(cat.releases(pre=options.pre, nightly=options.nightly)),
        pythons=frozenset(interpreters.available()),
        nightly_window=cat.nightly_window() if options.nightly else None,
        fetched_at=cat.fetched_at,
    )
