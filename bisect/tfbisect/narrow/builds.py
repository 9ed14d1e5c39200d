"""What lies between a bisection's two releases: which bisections can be narrowed, the builds the
index publishes in between (RCs, nightlies, in PEP 440 order), and notes on what it lacks there."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from packaging.version import Version

from tfbisect.core.catalogue import Catalogue, Release, ReleaseKind
from tfbisect.core.errors import NarrowError, UnknownVersionError
from tfbisect.core.record import RunRecord
from tfbisect.core.spec import KerasVariant
from tfbisect.search.bisection import ref_of
from tfbisect.search.bisectlog import BisectReport, Status
from tfbisect.search.bisectplan import BisectRequest
from tfbisect.search.narrowlog import Build, NarrowNote, NoteCode


def applicable(report: BisectReport) -> str | None:
    """Why this bisection cannot be narrowed, or None when it can."""
    if report.status is not Status.FOUND or not report.last_old or not report.first_new:
        return (
            f"the bisection ended {report.status.value.replace('_', ' ')}, not with one change point "
            "between two releases"
        )
    if report.regress != "state":
        return "it searched where a failure began (--regress error), not a change of behaviour"
    return None


def refuse_unless_applicable(report: BisectReport, log_path: Path) -> None:
    why = applicable(report)
    if why is not None:
        raise NarrowError(
            f"The bisection in {log_path} cannot be narrowed: {why}.",
            "narrow a bisection that found last good and first bad releases (`tfbisect bisect log` shows it).",
        )


def between_builds(
    catalogue: Catalogue, request: BisectRequest, last_old: str, first_new: str
) -> tuple[Release, Release, list[Release]]:
    """The two releases and the builds between them that can pair with the request's Keras."""
    try:
        low, high = catalogue.resolve(last_old, pre=True), catalogue.resolve(first_new, pre=True)
    except UnknownVersionError as exc:
        raise NarrowError(
            f"The bisection names TF {last_old} and {first_new}; the catalogue snapshot lacks one: {exc.what}",
            "refresh it with `tfbisect versions --refresh --save`, then narrow again.",
        ) from exc
    between = catalogue.between(last_old, first_new)
    if request.keras is KerasVariant.LEGACY:  # tf-keras has no nightly builds to pair with
        between = [r for r in between if r.kind is not ReleaseKind.NIGHTLY]
    return low, high, between


def notes_for(
    catalogue: Catalogue, last_old: Release, first_new: Release, between: list[Release]
) -> list[NarrowNote]:
    """What the index lacks between two releases, with what a user needs to check it."""
    notes = []
    new = Version(first_new.version)
    if not any(r.kind is ReleaseKind.RC for r in between) and not new.is_prerelease and new.micro == 0:
        oldest = catalogue.oldest_rc()
        if oldest is not None and Version(oldest.version) > new:
            notes.append(
                NarrowNote.of(
                    NoteCode.RCS_DELETED,
                    version=first_new.version,
                    oldest=oldest.version,
                    uploaded=oldest.date,
                )
            )
        else:
            notes.append(NarrowNote.of(NoteCode.NO_RCS, version=first_new.version))
    if not any(r.kind is ReleaseKind.NIGHTLY for r in between):
        window = catalogue.nightly_window()
        if window is None:
            notes.append(NarrowNote.of(NoteCode.NO_NIGHTLIES))
        elif first_new.date < window[0]:
            notes.append(
                NarrowNote.of(
                    NoteCode.NIGHTLIES_GONE,
                    start=window[0],
                    version=first_new.version,
                    uploaded=first_new.date,
                )
            )
        else:
            notes.append(NarrowNote.of(NoteCode.NO_NIGHTLY_BETWEEN))
    return notes


def range_builds(
    low: Release, high: Release, records: Mapping[str, RunRecord], git_versions: Mapping[str, str | None]
) -> tuple[Build, Build]:
    """The narrowed range's two ends as builds: each one's git version from its record, else
    from the bisection's."""
    builds = []
    for release in (low, high):
        record = records.get(release.version)
        git_version = record.git_version if record else git_versions.get(release.version)
        builds.append(
            Build(
                version=release.version,
                kind=release.kind,
                uploaded=release.uploaded,
                git_version=git_version,
                ref=ref_of(release.version, git_version),
            )
        )
    return builds[0], builds[1]


def backwards_in_time(low: Release, high: Release) -> list[NarrowNote]:
    """A note when the range's old end was uploaded after its new end (an RC of an older line)."""
    if low.uploaded and high.uploaded and low.uploaded > high.uploaded:
        return [
            NarrowNote.of(
                NoteCode.BACKWARDS_IN_TIME,
                old=low.version,
                old_uploaded=low.uploaded[:10],
                new=high.version,
                new_uploaded=high.uploaded[:10],
            )
        ]
    return []
