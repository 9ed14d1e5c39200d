"""What a narrowing found, as typed data kept in the bisection log (`BisectReport.narrowing`).

A bisection over releases ends at two releases; the narrowing goes below them with what the
index publishes in between (release candidates, nightlies), lists the packages whose versions
differ between the two environments it ends at, and names the changed Python code the failing
probe ran there (`narrow/ranking.py`).  This module holds the result only: no prose (findings.py has
the words for every `NoteCode`), no runs (`narrow/narrower.py` drives them).

A log is a file anyone can edit, and its text came from wheels, the index and scenario output, so
what this module reads back is read defensively, once, for every view and for a resumed narrowing:
the suspects' wrong types fall back to nothing, their sizes are bounded, and their links are kept
only when they point at GitHub (an `href` from a log must never be `javascript:`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from typing import Any

from tfbisect.core.catalogue import ReleaseKind
from tfbisect.core.textsafe import clip
from tfbisect.search.steps import Step, StepOutcome

# The narrowing section's own version (the bisection log's LOG_VERSION counts the log's layout):
# 1 (no "version" key): notes and a trace's error as English text;
# 2: notes and a trace's error as codes with their fields (`NarrowNote`); a text note still reads;
# 3: a proven revert's `patch` is the minimal one, shrunk from the whole units' revert (`Shrink`,
#    the proof's `shrink`); a version 2 proof has none, its `patch` the whole revert.
NARROWING_VERSION = 3

# The suspects a log keeps: the report shows the first few, a maintainer reads the rest in the log.
SUSPECTS_KEPT = 25

# Bounds for what a (possibly edited) log can put in front of a reader.
EXCERPT_LINES_MAX = 60  # narrow/diff.py writes at most 40 (header and markers included)
LINE_CHARS_MAX = 300  # narrow/diff.py cuts lines at 200
NAME_CHARS_MAX = 300  # file names, functions, callers
NOTE_FIELDS_MAX = 20  # a note's fields (the codes below have at most three)

# A link the views make clickable: GitHub over https, with no character that could end the
# attribute, the Markdown link or the URL itself.
_LINK = re.compile(r"https://github\.com/[A-Za-z0-9._~/%#:+@=&?,!$*;-]*")


def safe_link(url: object) -> str | None:
    """`url` when it is a plain https link into GitHub (what tfbisect writes), else None."""
    if isinstance(url, str) and len(url) <= 2000 and _LINK.fullmatch(url):
        return url
    return None


class NoteCode(enum.StrEnum):
    """What a narrowing notes, each with the fields `NOTE_FIELDS` names (findings.py words them)."""

    LEGACY_TEXT = "legacy_text"  # a note of a version 1 narrowing, kept as it was written
    NO_RCS = "no_rcs"  # the index has no RC of the first new release
    RCS_DELETED = "rcs_deleted"  # … and its oldest RC is newer: old RCs were deleted
    NO_NIGHTLIES = "no_nightlies"  # the index has no tf-nightly at all
    NIGHTLIES_GONE = "nightlies_gone"  # its nightlies start after the range
    NO_NIGHTLY_BETWEEN = "no_nightly_between"
    BUILDS_FLIP = "builds_flip"  # the builds between are not monotonic: nothing compared
    CANNOT_RUN = "cannot_run"  # an end of the narrowed range cannot run here
    STOPPED = "stopped"  # an exception stopped the narrowing
    NO_LOCKS = "no_locks"  # the locks could not be read: no dependency changes
    NO_PROBE_CHANGED = "no_probe_changed"
    PASSING_UNTRACED = "passing_untraced"  # the passing probe's traces failed
    UNTRACED_FAILED = "untraced_failed"  # the untraced yardstick run failed
    TRACE_FAILED = "trace_failed"  # a trace's error (`TraceSummary.error`): what failed, what to do
    PROOF_FAILED = "proof_failed"  # the proof could not run at all (its environment, its backend)
    BACKWARDS_IN_TIME = "backwards_in_time"  # the last old release was published after the first new


NOTE_FIELDS: dict[NoteCode, tuple[str, ...]] = {
    NoteCode.LEGACY_TEXT: ("text",),
    NoteCode.NO_RCS: ("version",),
    NoteCode.RCS_DELETED: ("version", "oldest", "uploaded"),
    NoteCode.NO_NIGHTLIES: (),
    NoteCode.NIGHTLIES_GONE: ("start", "version", "uploaded"),
    NoteCode.NO_NIGHTLY_BETWEEN: (),
    NoteCode.BUILDS_FLIP: (),
    NoteCode.CANNOT_RUN: ("version",),
    NoteCode.STOPPED: ("error_type", "message"),
    NoteCode.NO_LOCKS: ("error",),
    NoteCode.NO_PROBE_CHANGED: (),
    NoteCode.PASSING_UNTRACED: ("probe", "error"),
    NoteCode.UNTRACED_FAILED: ("probe", "error"),
    NoteCode.TRACE_FAILED: ("what", "todo"),
    NoteCode.PROOF_FAILED: ("what",),
    NoteCode.BACKWARDS_IN_TIME: ("old", "old_uploaded", "new", "new_uploaded"),
}


@dataclass(frozen=True)
class NarrowNote:
    """A note as a code and its fields (no words: findings.note_text has them)."""

    code: NoteCode
    values: tuple[tuple[str, str], ...] = ()  # (field, value) in NOTE_FIELDS' order

    @classmethod
    def of(cls, code: NoteCode, **fields: str) -> NarrowNote:
        """A note with exactly the fields its code has (anything else is a bug here, not input)."""
        names = NOTE_FIELDS[code]
        if set(fields) != set(names):
            raise ValueError(f"note {code.value} has the fields {names}, not {sorted(fields)}")
        return cls(code, tuple((name, str(fields[name])) for name in names))

    @classmethod
    def legacy(cls, text: str) -> NarrowNote:
        return cls.of(NoteCode.LEGACY_TEXT, text=text)

    @property
    def fields(self) -> dict[str, str]:
        return dict(self.values)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code.value, **self.fields}

    @classmethod
    def read(cls, data: object) -> NarrowNote | None:
        """A note from a log: text (version 1) is a legacy note, a code its fields ("?" for a field
        that is missing or not text); anything else (an unknown code) is None."""
        if isinstance(data, str):
            return cls.legacy(data)
        if not isinstance(data, dict) or len(data) > NOTE_FIELDS_MAX:
            return None
        code_text = data.get("code")
        if code_text not in tuple(NoteCode):
            return None
        code = NoteCode(code_text)
        values = {name: data.get(name) for name in NOTE_FIELDS[code]}
        return cls(code, tuple((k, v if isinstance(v, str) else "?") for k, v in values.items()))


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
    error: NarrowNote | None = None  # why there are no suspects, when tracing failed (TRACE_FAILED)
    diff_seconds: float | None = None  # reading both versions' sources, the diff and the ranking
    runs: int = 0  # traced and untraced runs made now (stored ones reused are not counted)
    reused: int = 0  # traced and untraced runs read back from the store

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "passing_probe": self.passing_probe,
            "old": self.old,
            "new": self.new,
            "seconds": dict(self.seconds),
            "untraced_seconds": self.untraced_seconds,
            "packages": list(self.packages),
            "error": self.error.to_dict() if self.error else None,
            "diff_seconds": self.diff_seconds,
            "runs": self.runs,
            "reused": self.reused,
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
            error=NarrowNote.read(data.get("error")) if data.get("error") else None,
            diff_seconds=data.get("diff_seconds"),
            runs=_count(data.get("runs")),
            reused=_count(data.get("reused")),
        )


# ---- The suspects: written by narrow/ranking.py, read back defensively -------------------------


def _text(value: object, limit: int = NAME_CHARS_MAX) -> str | None:
    return clip(value, limit, mark="…") if isinstance(value, str) else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _lines(value: object) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value[:10_000] if isinstance(v, int) and not isinstance(v, bool))


def _span(value: object) -> tuple[int, int] | None:
    found = _lines(value)
    return (found[0], found[1]) if len(found) == 2 else None


@dataclass(frozen=True)
class Suspect:
    """A hunk whose changed lines the failing probe ran, with its rank's evidence."""

    file: str  # the installed path, "keras/src/losses.py"
    function: str  # where the changed lines that ran are ("Model.fit", "<module>")
    score: float  # Ochiai: failed / sqrt(total_failed * (failed + passed))
    failed: int  # 1: the failing probe ran the changed lines
    # 1: the passing probe ran every changed line that the failing one ran.  A hunk is scored by
    # its most suspicious line: a branch that only the failing probe takes, inside a hunk whose
    # condition both probes evaluate, still scores 1.
    passed: int
    executed_old: tuple[int, ...]  # changed lines of the old version that ran in the old environment
    executed_new: tuple[int, ...]  # changed lines of the new version that ran in the new environment
    documentation_only: bool  # the change is to docstrings, comments or blank lines only
    old_lines: tuple[int, int] | None  # the hunk's lines (context included) in the old version
    new_lines: tuple[int, int] | None
    excerpt: str  # the hunk as `diff -u` shows it (narrow/diff.py: at most 40 lines)
    only_in: str | None = None  # "old" or "new": the function ran in that version only
    caller: str | None = None  # then, where it was called from: "path:function (line N)"
    old_link: str | None = None  # read back only when `safe_link` keeps it
    new_link: str | None = None
    generated: bool = False  # a file the build generates (op wrappers, the API tree): ranks later

    @property
    def changed_executed(self) -> int:
        return len(self.executed_old) + len(self.executed_new)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.function}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "function": self.function,
            "score": round(self.score, 6),
            "failed": self.failed,
            "passed": self.passed,
            "executed_old": list(self.executed_old),
            "executed_new": list(self.executed_new),
            "documentation_only": self.documentation_only,
            "generated": self.generated,
            "old_lines": list(self.old_lines) if self.old_lines else None,
            "new_lines": list(self.new_lines) if self.new_lines else None,
            "excerpt": self.excerpt,
            "only_in": self.only_in,
            "caller": self.caller,
            "old_link": self.old_link,
            "new_link": self.new_link,
        }

    @classmethod
    def read(cls, data: dict[str, Any]) -> Suspect:
        """One suspect from a log: wrong types fall back to nothing, text is cut, links are GitHub's."""
        score = data.get("score")
        only_in = data.get("only_in")
        return cls(
            file=_text(data.get("file")) or "?",
            function=_text(data.get("function")) or "?",
            score=float(score) if isinstance(score, int | float) and not isinstance(score, bool) else 0.0,
            failed=_count(data.get("failed")),
            passed=_count(data.get("passed")),
            executed_old=_lines(data.get("executed_old")),
            executed_new=_lines(data.get("executed_new")),
            documentation_only=data.get("documentation_only") is True,
            old_lines=_span(data.get("old_lines")),
            new_lines=_span(data.get("new_lines")),
            excerpt=_text(data.get("excerpt"), EXCERPT_LINES_MAX * (LINE_CHARS_MAX + 1)) or "",
            only_in=only_in if only_in in ("old", "new") else None,
            caller=_text(data.get("caller")),
            old_link=safe_link(data.get("old_link")),
            new_link=safe_link(data.get("new_link")),
            generated=data.get("generated") is True,
        )


@dataclass(frozen=True)
class Suspects:
    """The ranked suspects and what was looked at to find them."""

    suspects: tuple[Suspect, ...]  # best first; a log keeps the first SUSPECTS_KEPT
    files_traced: int  # files the failing probe ran in either environment
    files_changed: int  # of those, the ones whose source differs between the versions
    hunks: int  # the hunks in those files
    missing_sources: tuple[str, ...]  # traced files that neither version's wheels hold
    total: int  # how many the narrowing found (more than `suspects` holds once cut)
    # False: no Python code the failing probe ran changed (documentation aside); the change is in
    # compiled code (kernels, C++ gradients, XLA) or in a package that was not traced.
    executed_python_changed: bool

    @classmethod
    def of(
        cls,
        suspects: tuple[Suspect, ...],
        files_traced: int,
        files_changed: int,
        hunks: int,
        missing_sources: tuple[str, ...],
    ) -> Suspects:
        """All that were found (before a cut): the total and the code-changed flag follow from them."""
        return cls(
            suspects,
            files_traced,
            files_changed,
            hunks,
            missing_sources,
            total=len(suspects),
            executed_python_changed=any(not suspect.documentation_only for suspect in suspects),
        )

    def cut(self, most: int = SUSPECTS_KEPT) -> Suspects:
        """The first `most` (what a log keeps); the total and the flag still count them all."""
        return replace(self, suspects=self.suspects[:most])

    def to_dict(self) -> dict[str, Any]:
        return {
            "suspects": [suspect.to_dict() for suspect in self.suspects],
            "files_traced": self.files_traced,
            "files_changed": self.files_changed,
            "hunks": self.hunks,
            "missing_sources": list(self.missing_sources),
            "executed_python_changed": self.executed_python_changed,
            "suspects_total": self.total,
        }

    @classmethod
    def read(cls, data: object) -> Suspects | None:
        """The suspects from a log, or None when it has none (not traced, tracing failed)."""
        if not isinstance(data, dict):
            return None
        listed = data.get("suspects")
        items = [s for s in listed[:SUSPECTS_KEPT] if isinstance(s, dict)] if isinstance(listed, list) else []
        suspects = tuple(Suspect.read(item) for item in items)
        changed = data.get("executed_python_changed")
        missing = data.get("missing_sources")
        return cls(
            suspects=suspects,
            files_traced=_count(data.get("files_traced")),
            files_changed=_count(data.get("files_changed")),
            hunks=_count(data.get("hunks")),
            missing_sources=tuple(
                clip(m, NAME_CHARS_MAX, mark="…")
                for m in (missing if isinstance(missing, list) else [])[:100]
                if isinstance(m, str)
            ),
            total=max(_count(data.get("suspects_total")), len(suspects)),
            executed_python_changed=(
                changed if isinstance(changed, bool) else any(not s.documentation_only for s in suspects)
            ),
        )


# ---- The proof: reverts and transplants tried, read back defensively ---------------------------

PATCH_CHARS_MAX = 40_000  # a minimal patch shown in the report (a few functions' diff)
TRIALS_MAX = 200  # a proof runs at most its budget (30 by default); an edited log is cut here


class TrialKind(enum.StrEnum):
    REVERT = "revert"  # old text put into a copy of the first new environment
    APPLY = "apply"  # new text put into a copy of the last old environment
    TRANSPLANT_OLD = "transplant_old"  # the package at its old version in the first new environment
    TRANSPLANT_NEW = "transplant_new"  # the package at its new version in the last old environment
    SHRINK = "shrink"  # part of a proven revert (some of its changed blocks) in the first new environment


class Verdict(enum.StrEnum):
    FLIPPED = "flipped"  # the outcome turned to the other end's: confirmed
    NO_FLIP = "no_flip"  # the outcome stayed as it was
    INCONCLUSIVE = "inconclusive"  # the patched code failed otherwise (ImportError, NameError, …)
    NOT_TESTABLE = "not_testable"  # it could not be set up (a pin that does not install)


@dataclass(frozen=True)
class Trial:
    """One patched run of the deciding probe (or its stored result)."""

    kind: TrialKind
    units: tuple[str, ...]  # "path:function" (a revert), or "name old -> new" (a transplant)
    environment: str  # the TF version whose environment's copy ran it
    outcome: str  # the probe's state there ("match", "error: NameError: …")
    verdict: Verdict
    reused: bool = False  # a stored result: no run
    error: str | None = None  # why it is inconclusive or not testable

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "units": list(self.units),
            "environment": self.environment,
            "outcome": self.outcome,
            "verdict": self.verdict.value,
            "reused": self.reused,
            "error": self.error,
        }

    @classmethod
    def read(cls, data: object) -> Trial | None:
        if not isinstance(data, dict):
            return None
        kind, verdict = data.get("kind"), data.get("verdict")
        if kind not in tuple(TrialKind) or verdict not in tuple(Verdict):
            return None
        units = data.get("units")
        return cls(
            kind=TrialKind(kind),
            units=tuple(_text(u) or "?" for u in (units if isinstance(units, list) else [])[:50]),
            environment=_text(data.get("environment")) or "?",
            outcome=_text(data.get("outcome")) or "?",
            verdict=Verdict(verdict),
            reused=data.get("reused") is True,
            error=_text(data.get("error")),
        )


@dataclass(frozen=True)
class Shrink:
    """How the proven revert was shrunk to its minimal patch (narrow/shrink.py)."""

    whole_patch: str  # the whole units' revert it was shrunk from; "" when nothing could be left out
    blocks: int  # the changed blocks of the whole revert (line level, no context)
    documentation: int  # of those, the ones that change only docstrings, comments or blank lines
    kept: int  # the blocks in the minimal patch
    tries: int  # the partial reverts tried (stored ones and ones that do not compile included)
    runs: int  # of those, the patched runs made now (the proof's `runs` counts them too)
    minimal: bool  # no block of the patch can be left out; False: the budget ended first

    def to_dict(self) -> dict[str, Any]:
        return {
            "whole_patch": self.whole_patch,
            "blocks": self.blocks,
            "documentation": self.documentation,
            "kept": self.kept,
            "tries": self.tries,
            "runs": self.runs,
            "minimal": self.minimal,
        }

    @classmethod
    def read(cls, data: object) -> Shrink | None:
        if not isinstance(data, dict):
            return None
        return cls(
            whole_patch=_text(data.get("whole_patch"), PATCH_CHARS_MAX) or "",
            blocks=_count(data.get("blocks")),
            documentation=_count(data.get("documentation")),
            kept=_count(data.get("kept")),
            tries=_count(data.get("tries")),
            runs=_count(data.get("runs")),
            minimal=data.get("minimal") is True,
        )


@dataclass(frozen=True)
class Proof:
    """What was put back and what it did: the proven cause (if any flipped) first."""

    probe: str  # the deciding probe
    old: str  # the last old build's version, and the probe's state there
    new: str
    old_state: str
    new_state: str
    trials: tuple[Trial, ...]
    runs: int  # patched runs made now (stored ones reused are not counted)
    budget: int
    cause: tuple[str, ...] = ()  # the minimal units (or the package) whose revert flips the outcome
    cause_kind: TrialKind | None = None  # REVERT (code) or TRANSPLANT_OLD (a package)
    sufficient: bool = False  # the new text of the cause in the old environment flips it too
    patch: str = ""  # the minimal patch as a unified diff (new -> old: it restores the old behaviour)
    old_link: str | None = None  # the cause's first unit at both refs (GitHub only)
    new_link: str | None = None
    skipped: str | None = None  # why no code was tried (not a venv, nothing to revert)
    shrink: Shrink | None = None  # how `patch` was shrunk from the whole revert (None: a version 2 log)

    @property
    def proven(self) -> bool:
        return bool(self.cause)

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "old": self.old,
            "new": self.new,
            "old_state": self.old_state,
            "new_state": self.new_state,
            "trials": [trial.to_dict() for trial in self.trials],
            "runs": self.runs,
            "budget": self.budget,
            "cause": list(self.cause),
            "cause_kind": self.cause_kind.value if self.cause_kind else None,
            "sufficient": self.sufficient,
            "patch": self.patch,
            "old_link": self.old_link,
            "new_link": self.new_link,
            "skipped": self.skipped,
            "shrink": self.shrink.to_dict() if self.shrink else None,
        }

    @classmethod
    def read(cls, data: object) -> Proof | None:
        """A proof from a log, or None: wrong types fall back to nothing, links are GitHub's."""
        if not isinstance(data, dict):
            return None
        listed = data.get("trials")
        trials = [Trial.read(t) for t in (listed if isinstance(listed, list) else [])[:TRIALS_MAX]]
        cause = data.get("cause")
        kind = data.get("cause_kind")
        return cls(
            probe=_text(data.get("probe")) or "?",
            old=_text(data.get("old")) or "?",
            new=_text(data.get("new")) or "?",
            old_state=_text(data.get("old_state")) or "?",
            new_state=_text(data.get("new_state")) or "?",
            trials=tuple(t for t in trials if t is not None),
            runs=_count(data.get("runs")),
            budget=_count(data.get("budget")),
            cause=tuple(_text(c) or "?" for c in (cause if isinstance(cause, list) else [])[:50]),
            cause_kind=TrialKind(kind) if kind in tuple(TrialKind) else None,
            sufficient=data.get("sufficient") is True,
            patch=_text(data.get("patch"), PATCH_CHARS_MAX) or "",
            old_link=safe_link(data.get("old_link")),
            new_link=safe_link(data.get("new_link")),
            skipped=_text(data.get("skipped")),
            shrink=Shrink.read(data.get("shrink")),
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
    notes: list[NarrowNote] = field(default_factory=list)  # what the index lacks, what was not done
    dependencies: list[DependencyChange] = field(default_factory=list)
    trace: TraceSummary | None = None
    suspects: Suspects | None = None  # cut to SUSPECTS_KEPT
    proof: Proof | None = None  # the reverts and transplants tried (narrow/proof.py)
    started_at: str = ""
    finished_at: str = ""

    @property
    def runs(self) -> int:
        return sum(
            1 for step in self.steps if not step.reused and step.outcome is not StepOutcome.UNAVAILABLE
        )

    def ordered_steps(self) -> list[Step]:
        """The steps in version order: the release before, the builds between, the release after."""
        old, new = self.release_range
        place = {version: i for i, version in enumerate(self.candidates)}
        place[old], place[new] = -1, len(place)
        return sorted(self.steps, key=lambda step: place.get(step.version, len(place) + 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": NARROWING_VERSION,
            "release_range": list(self.release_range),
            "status": self.status.value,
            "candidates": list(self.candidates),
            "steps": [step.to_dict() for step in self.steps],
            "last_old": self.last_old.to_dict() if self.last_old else None,
            "first_new": self.first_new.to_dict() if self.first_new else None,
            "unresolved": list(self.unresolved),
            "compare_url": self.compare_url,
            "notes": [note.to_dict() for note in self.notes],
            "dependencies": [change.to_dict() for change in self.dependencies],
            "trace": self.trace.to_dict() if self.trace else None,
            "suspects": self.suspects.to_dict() if self.suspects else None,
            "proof": self.proof.to_dict() if self.proof else None,
            "runs": self.runs,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Narrowing:
        """A narrowing from a log (raises KeyError, TypeError, ValueError on one it cannot read:
        the bisection log then drops it, and `narrow` redoes it)."""
        version = data.get("version", 1)
        if not isinstance(version, int) or version > NARROWING_VERSION:
            raise ValueError(
                f"narrowing version {version} is newer than this tfbisect reads ({NARROWING_VERSION})"
            )
        old, new = data["release_range"]
        notes = [NarrowNote.read(note) for note in data.get("notes", [])]
        return cls(
            release_range=(str(old), str(new)),
            status=NarrowStatus(data["status"]),
            candidates=[str(c) for c in data.get("candidates", [])],
            steps=[Step.from_dict(s) for s in data.get("steps", [])],
            last_old=Build.from_dict(data["last_old"]) if data.get("last_old") else None,
            first_new=Build.from_dict(data["first_new"]) if data.get("first_new") else None,
            unresolved=[str(c) for c in data.get("unresolved", [])],
            compare_url=data.get("compare_url"),
            notes=[note for note in notes if note is not None],
            dependencies=[DependencyChange.from_dict(d) for d in data.get("dependencies", [])],
            trace=TraceSummary.from_dict(data["trace"]) if data.get("trace") else None,
            suspects=Suspects.read(data.get("suspects")),
            proof=Proof.read(data.get("proof")),
            started_at=str(data.get("started_at", "")),
            finished_at=str(data.get("finished_at", "")),
        )
