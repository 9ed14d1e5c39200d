"""What a narrowing found, as typed data kept in the bisection log (`BisectReport.narrowing`).

A bisection over releases ends at two releases; the narrowing goes below them with what the
index publishes in between (release candidates, nightlies), lists the packages whose versions
differ between the two environments it ends at, and names the changed Python code the failing
probe ran there (`narrow/ranking.py`).  This module holds the result only: no prose (findings.py has
the words), no runs (`narrow/narrower.py` drives them).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from tfbisect.core.catalogue import ReleaseKind
from tfbisect.search.steps import Step, StepOutcome

# The suspects a log keeps: the report shows the first few, a maintainer reads the rest in the log.
SUSPECTS_KEPT = 25


class NarrowStatus(enum.StrEnum):
    NARROWED = "narrowed"  # builds between the releases were tried and the range is smaller
    NOTHING_FINER = "nothing_finer"  # the index has no build between the two releases (notes say why)
    UNRESOLVED = "unresolved"  # builds between could not be judged (skips, failures of another kind)
    NON_MONOTONIC = "non_monotonic"  # the builds between flip back and forth
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Build:
    """One end of the narrowed range: a published build and where it lives in git."""

    version: str  # as on the index: "2.4.0", "2.21.0rc1", "2.23.0.dev20261012"
    kind: ReleaseKind
    uploaded: str  # ISO 8601 upload time of its first file
    git_version: str | None  # tf.version.GIT_VERSION as the run reported it
    ref: str | None  # what GitHub links point at: a tag ("v2.4.0-rc1") or a commit (nightlies)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "kind": self.kind.value,
            "uploaded": self.uploaded,
            "git_version": self.git_version,
            "ref": self.ref,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Build:
        return cls(
            version=str(data["version"]),
            kind=ReleaseKind(data["kind"]),
            uploaded=str(data.get("uploaded") or ""),
            git_version=data.get("git_version"),
            ref=data.get("ref"),
        )


@dataclass(frozen=True)
class DependencyChange:
    """A package whose pinned version differs between the last old and the first new environment."""

    name: str  # the distribution's canonical name ("numpy", "keras-nightly")
    old: str | None  # None: not installed in the old environment
    new: str | None  # None: not installed in the new one
    imported: bool  # the failing probe's process imported it (in either environment)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "old": self.old, "new": self.new, "imported": self.imported}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DependencyChange:
        return cls(str(data["name"]), data.get("old"), data.get("new"), bool(data.get("imported")))


@dataclass(frozen=True)
class TraceSummary:
    """The traced runs behind the suspects: which probes ran where, and what they cost."""

    probe: str  # the failing probe, traced in both environments
    passing_probe: str | None  # a probe that passes in the same environments (Ochiai's passing run)
    old: str  # the version traced as the old side (the narrowed last old)
    new: str
    seconds: dict[str, float]  # "failing_old", "failing_new", "passing_old", "passing_new" -> wall time
    untraced_seconds: float | None  # one untraced run of the failing probe alone (the cost's yardstick)
    packages: tuple[str, ...]  # what was traced: "tensorflow", "keras", …
    error: str | None = None  # why there are no suspects, when tracing failed
    diff_seconds: float | None = None  # reading both versions' sources, the diff and the ranking

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "passing_probe": self.passing_probe,
            "old": self.old,
            "new": self.new,
            "seconds": dict(self.seconds),
            "untraced_seconds": self.untraced_seconds,
            "packages": list(self.packages),
            "error": self.error,
            "diff_seconds": self.diff_seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceSummary:
        return cls(
            probe=str(data["probe"]),
            passing_probe=data.get("passing_probe"),
            old=str(data["old"]),
            new=str(data["new"]),
            seconds={str(k): float(v) for k, v in dict(data.get("seconds") or {}).items()},
            untraced_seconds=data.get("untraced_seconds"),
            packages=tuple(data.get("packages") or ()),
            error=data.get("error"),
            diff_seconds=data.get("diff_seconds"),
        )


@dataclass
class Narrowing:
    """The narrowing of one bisection's change point."""

    release_range: tuple[str, str]  # the bisection's last old and first new releases
    status: NarrowStatus = NarrowStatus.INTERRUPTED
    candidates: list[str] = field(default_factory=list)  # RCs and nightlies between, oldest first
    steps: list[Step] = field(default_factory=list)  # the runs of the candidates (and reused ones)
    last_old: Build | None = None  # the narrowed range: its last old build …
    first_new: Build | None = None  # … and its first new one
    unresolved: list[str] = field(default_factory=list)  # candidates the change may also be at
    compare_url: str | None = None  # GitHub's compare view between the two refs
    notes: list[str] = field(default_factory=list)  # what the index lacks ("nightlies … start at DATE")
    dependencies: list[DependencyChange] = field(default_factory=list)
    trace: TraceSummary | None = None
    # suspects.Suspects.to_dict(), its list cut to SUSPECTS_KEPT (with "suspects_total" added)
    suspects: dict[str, Any] | None = None
    started_at: str = ""
    finished_at: str = ""

    @property
    def runs(self) -> int:
        return sum(
            1 for step in self.steps if not step.reused and step.outcome is not StepOutcome.UNAVAILABLE
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "release_range": list(self.release_range),
            "status": self.status.value,
            "candidates": list(self.candidates),
            "steps": [step.to_dict() for step in self.steps],
            "last_old": self.last_old.to_dict() if self.last_old else None,
            "first_new": self.first_new.to_dict() if self.first_new else None,
            "unresolved": list(self.unresolved),
            "compare_url": self.compare_url,
            "notes": list(self.notes),
            "dependencies": [change.to_dict() for change in self.dependencies],
            "trace": self.trace.to_dict() if self.trace else None,
            "suspects": self.suspects,
            "runs": self.runs,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Narrowing:
        old, new = data["release_range"]
        return cls(
            release_range=(str(old), str(new)),
            status=NarrowStatus(data["status"]),
            candidates=[str(c) for c in data.get("candidates", [])],
            steps=[Step.from_dict(s) for s in data.get("steps", [])],
            last_old=Build.from_dict(data["last_old"]) if data.get("last_old") else None,
            first_new=Build.from_dict(data["first_new"]) if data.get("first_new") else None,
            unresolved=[str(c) for c in data.get("unresolved", [])],
            compare_url=data.get("compare_url"),
            notes=[str(n) for n in data.get("notes", [])],
            dependencies=[DependencyChange.from_dict(d) for d in data.get("dependencies", [])],
            trace=TraceSummary.from_dict(data["trace"]) if data.get("trace") else None,
            suspects=data.get("suspects"),
            started_at=str(data.get("started_at", "")),
            finished_at=str(data.get("finished_at", "")),
        )
