"""The narrowing's steps in order, through callables (the way `search.bisection.Bisection` takes
`execute`), so that it runs nothing and writes nothing itself:

1. the builds between the two releases are bisected with the same search as the releases, both
   ends reused from the bisection (`builds`);
2. the two environments the narrowed range ends at are compared by their locks (`dependencies`);
3. the failing probe (and a probe that passes in the same environments) runs alone once more in
   both, traced (`traces`); both versions' sources of what ran are diffed and the hunks ranked
   (`sources`, `diff`, `ranking`);
4. the proof: each changed package the failing probe imported is put back at its old version into
   a copy of the first new environment (`transplant`); unless one flips the probe's outcome back,
   the top suspects' old text is put back, one at a time and then by delta debugging (`proof`).

`Seams.save` gets the narrowing after every step (the caller keeps it in the bisection's log, so an
interrupted narrowing loses nothing); `run` returns it.  `wiring.runner_seams` makes the seams
from a `Runner`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from tfbisect.core.catalogue import Catalogue, Release
from tfbisect.core.errors import LockError, TfbisectError
from tfbisect.core.fsio import now_iso
from tfbisect.core.progress import Progress
from tfbisect.core.record import RunRecord
from tfbisect.core.spec import EnvSpec
from tfbisect.narrow.builds import (
    backwards_in_time,
    between_builds,
    notes_for,
    range_builds,
    refuse_unless_applicable,
)
from tfbisect.narrow.dependencies import dependency_changes
from tfbisect.narrow.proof import DEFAULT_BUDGET, DEFAULT_PROVE, RunPatched
from tfbisect.narrow.ranking import kept_suspects
from tfbisect.narrow.traces import (
    KeptTraces,
    ProbeRunner,
    ProbeTraces,
    Trace,
    TraceProbes,
    checked_trace,
    choose_probes,
    traced_sources,
)
from tfbisect.narrow.transplant import Proving, RunPinned
from tfbisect.search.bisection import Execute, compare_url
from tfbisect.search.bisectlog import BisectReport, Status
from tfbisect.search.bisectplan import BisectRequest, Plan
from tfbisect.search.narrowlog import (
    SUSPECTS_KEPT,
    Narrowing,
    NarrowNote,
    NarrowStatus,
    NoteCode,
    TraceSummary,
)

# What the tracer follows: TF's Python (`tensorflow_core` in 2.0 and 2.1), Keras 2.6+ and 3, tf-keras.
TRACED_PACKAGES = ("tensorflow", "tensorflow_core", "keras", "tf_keras")

_STATUS = {
    Status.FOUND: NarrowStatus.NARROWED,
    Status.NON_MONOTONIC: NarrowStatus.NON_MONOTONIC,
    Status.INTERRUPTED: NarrowStatus.INTERRUPTED,
}

# The builds' search: the request (its ends the two releases), the planned builds, where each round's
# log goes; back come the search's report and its records by index into the plan.
BisectBuilds = Callable[
    [BisectRequest, Plan, Callable[[BisectReport], None]], tuple[BisectReport, dict[int, RunRecord]]
]


@dataclass(frozen=True)
class NarrowOptions:
    trace: bool = True  # False: stop after the builds and the dependency changes
    packages: tuple[str, ...] = TRACED_PACKAGES
    prove: int = DEFAULT_PROVE  # the top suspects the proof puts back (0: no proof)
    prove_budget: int = DEFAULT_BUDGET  # the patched runs it may make


@dataclass(frozen=True)
class Seams:
    """What the narrowing does through others: each a callable a test can script."""

    catalogue: Catalogue
    place: Callable[[Release], EnvSpec | None]  # a build's environment (None: cannot run here)
    execute: Execute  # one build's run, stored or run now
    bisect: BisectBuilds
    lock_text: Callable[[EnvSpec], str]  # the environment's lock (raises LockError, OSError)
    trace: TraceProbes
    sources: Callable[[EnvSpec], list[Path]]  # where the environment's installed sources are
    kept: KeptTraces  # the traces kept beside the log
    save: Callable[[Narrowing], None]  # keep the narrowing so far (the bisection's log)
    run_patched: RunPatched | None = None  # the probe in a patched copy (None: no proof)
    run_pinned: RunPinned | None = None  # the probe in a copy with a package pinned (None: none)


class Narrower:
    """Narrows one bisection: the handler that prints is `progress`, the rest goes through `seams`."""

    def __init__(
        self,
        report: BisectReport,
        request: BisectRequest,
        seams: Seams,
        progress: Progress,
        log_path: Path,
        options: NarrowOptions = NarrowOptions(),
    ) -> None:
        """`log_path` names the bisection in messages only: `seams.save` keeps the log."""
        refuse_unless_applicable(report, log_path)
        assert report.last_old is not None and report.first_new is not None
        self.report, self.request, self.seams = report, request, seams
        self.progress, self.options = progress, options
        self.narrowing = Narrowing(release_range=(report.last_old, report.first_new), started_at=now_iso())
        # A finished narrowing of this log stays the log's answer if this one is interrupted.
        self.previous = report.narrowing if report.narrowing and report.narrowing.finished_at else None
        self.records: dict[str, RunRecord] = {}
        self.specs: dict[str, EnvSpec] = {}
        self.probes = ProbeRunner(seams.trace, options.packages, progress.say)
        self.ends: tuple[RunRecord, RunRecord] | None = None  # the narrowed range's two records

    def save(self) -> None:
        self.seams.save(self.narrowing)

    def run(self) -> Narrowing:
        try:
            low, high = self.bisect_builds()
            self.save()
            old, new = self.records.get(low.version), self.records.get(high.version)
            if self.narrowing.status is NarrowStatus.NON_MONOTONIC:
                self.narrowing.notes.append(NarrowNote.of(NoteCode.BUILDS_FLIP))
            elif old is None or new is None:
                missing = low.version if old is None else high.version
                self.narrowing.notes.append(NarrowNote.of(NoteCode.CANNOT_RUN, version=missing))
            else:
                self.compare(low, high, old, new)
        except KeyboardInterrupt:
            self.narrowing.status = NarrowStatus.INTERRUPTED
            if self.previous is not None:
                self.narrowing = self.previous
            self.save()
            raise
        except Exception as exc:  # whatever stops it, what finished stays in the log
            self.narrowing.notes.append(
                NarrowNote.of(NoteCode.STOPPED, error_type=type(exc).__name__, message=str(exc)[:300])
            )
            self.narrowing.status = NarrowStatus.INTERRUPTED
            self.save()
            raise
        self.narrowing.finished_at = now_iso()
        self.save()
        return self.narrowing

    # -- 1. the builds between the releases -----------------------------------------------
    def bisect_builds(self) -> tuple[Release, Release]:
        catalogue = self.seams.catalogue
        last_old, first_new = self.narrowing.release_range
        low, high, between = between_builds(catalogue, self.request, last_old, first_new)
        self.narrowing.candidates = [r.version for r in between]
        self.narrowing.notes = notes_for(catalogue, low, high, between)
        builds = [low, *between, high]
        specs = [self.seams.place(r) for r in builds]
        if not between:
            self.progress.say(f"narrowing {last_old} .. {first_new}: nothing published in between")
            self.narrowing.status = NarrowStatus.NOTHING_FINER
            for release, spec in ((low, specs[0]), (high, specs[-1])):
                self.end_record(release, spec)
            self.set_range(low, high)
            return low, high
        kinds = sorted({r.kind.value for r in between})
        self.progress.say(
            f"narrowing {last_old} .. {first_new}: {len(between)} builds in between ({', '.join(kinds)})"
        )
        found, records = self.seams.bisect(
            replace(self.request, good=last_old, bad=first_new),
            Plan(tuple(builds), tuple(specs)),
            self.sub_saved,
        )
        for index, record in records.items():
            self.records[builds[index].version] = record
        for release, spec in zip(builds, specs, strict=True):
            if spec is not None:
                self.specs[release.version] = spec
        self.narrowing.status = _STATUS.get(found.status, NarrowStatus.UNRESOLVED)
        if found.status in (Status.FOUND, Status.AMBIGUOUS) and found.last_old and found.first_new:
            self.narrowing.unresolved = [c for c in found.candidates if c != found.first_new]
            by_version = {r.version: r for r in builds}
            low, high = by_version[found.last_old], by_version[found.first_new]
        self.set_range(low, high)
        return low, high

    def sub_saved(self, found: BisectReport) -> None:
        self.narrowing.steps = list(found.steps)
        self.save()

    def end_record(self, release: Release, spec: EnvSpec | None) -> None:
        """An end's record: stored by the bisection (reused), else run now."""
        if spec is None:
            return
        self.specs[release.version] = spec
        self.records[release.version] = self.seams.execute(spec).record

    def set_range(self, low: Release, high: Release) -> None:
        builds = range_builds(low, high, self.records, self.report.git_versions)
        self.narrowing.last_old, self.narrowing.first_new = builds
        self.narrowing.compare_url = compare_url(builds[0].ref, builds[1].ref)

    # -- 2. and 3. what else changed, and the code that ran --------------------------------
    def compare(self, low: Release, high: Release, old: RunRecord, new: RunRecord) -> None:
        old_spec, new_spec = self.specs[low.version], self.specs[high.version]
        self.ends = (old, new)
        self.narrowing.notes.extend(backwards_in_time(low, high))
        try:
            old_lock, new_lock = self.seams.lock_text(old_spec), self.seams.lock_text(new_spec)
        except (LockError, OSError) as exc:
            self.narrowing.notes.append(NarrowNote.of(NoteCode.NO_LOCKS, error=str(exc)))
            self.save()
            return
        self.narrowing.dependencies = dependency_changes(old_lock, new_lock)
        self.save()
        if not self.options.trace:
            return
        probe, passing = choose_probes(self.request.probe, old, new)
        if probe is None:
            self.narrowing.notes.append(NarrowNote.of(NoteCode.NO_PROBE_CHANGED))
            return
        summary = TraceSummary(
            probe=probe,
            passing_probe=passing,
            old=low.version,
            new=high.version,
            seconds={},
            untraced_seconds=None,
            packages=self.options.packages,
        )
        try:
            self.trace(summary, old_spec, new_spec, old_lock, new_lock)
        except TfbisectError as exc:
            error = NarrowNote.of(NoteCode.TRACE_FAILED, what=exc.what, todo=exc.todo)
            self.narrowing.trace = replace(self.narrowing.trace or summary, error=error)

    def trace(
        self, summary: TraceSummary, old_spec: EnvSpec, new_spec: EnvSpec, old_lock: str, new_lock: str
    ) -> None:
        self.narrowing.trace = summary
        failing = ProbeTraces(
            self.traced("failing", summary.probe, "old", old_spec),
            self.traced("failing", summary.probe, "new", new_spec),
        )
        passing = None
        if summary.passing_probe is not None and self.probes.whole:
            # A whole run is no control: it traces the failing probe's work too.
            self.narrowing.notes.append(
                NarrowNote.of(
                    NoteCode.PASSING_UNTRACED,
                    probe=summary.passing_probe,
                    error="the scenario cannot run one probe alone (it takes no --probe): traced whole",
                )
            )
            self.narrowing.trace = replace(self.trace_summary(), passing_probe=None)
        elif summary.passing_probe is not None:
            try:
                passing = ProbeTraces(
                    self.traced("passing", summary.passing_probe, "old", old_spec),
                    self.traced("passing", summary.passing_probe, "new", new_spec),
                )
            except TfbisectError as exc:  # the failing probe's traces still rank, less sharply
                self.narrowing.notes.append(
                    NarrowNote.of(NoteCode.PASSING_UNTRACED, probe=summary.passing_probe, error=exc.what)
                )
                self.narrowing.trace = replace(self.trace_summary(), passing_probe=None)
        imported = set(failing.old.imported) | set(failing.new.imported)
        self.narrowing.dependencies = dependency_changes(old_lock, new_lock, imported)
        proving, ran = self.proving(old_spec, new_spec), set(failing.old.lines) | set(failing.new.lines)
        if proving is not None and proving.transplant(self.narrowing, self.seams.sources, ran):
            self.save()  # a package that flips the outcome is the answer: no code is put back then
        sources = self.suspects(failing, passing, old_spec, new_spec)
        if proving is not None and proving.revert(self.narrowing, ran, sources):
            self.save()
        try:  # the yardstick of what tracing costs: last, so that its failure loses nothing
            untraced = self.probes.untraced(new_spec, summary.probe)
            self.narrowing.trace = replace(self.trace_summary(), untraced_seconds=round(untraced.seconds, 2))
        except TfbisectError as exc:
            self.narrowing.notes.append(
                NarrowNote.of(NoteCode.UNTRACED_FAILED, probe=summary.probe, error=exc.what)
            )
        self.narrowing.trace = replace(self.trace_summary(), runs=self.probes.runs, reused=self.probes.reused)
        self.save()

    def trace_summary(self) -> TraceSummary:
        assert self.narrowing.trace is not None
        return self.narrowing.trace

    def traced(self, role: str, probe: str, side: str, spec: EnvSpec) -> Trace:
        """One probe traced alone in one environment; a valid trace kept beside the log from an
        earlier (interrupted) narrowing of the same build is reused, unless forced."""
        reused = self.seams.kept.reused(role, side, spec.tf_version)
        if reused is None:
            self.progress.say(f"[{spec.label}] tracing probe {probe} alone")
            done = self.probes.traced(spec, probe)
            trace, document = checked_trace(done, probe, spec.label, whole=self.probes.whole)
            self.seams.kept.keep(role, side, spec.tf_version, document)
            seconds = round(done.seconds, 2)
        else:
            trace, seconds = reused
        summary = replace(self.trace_summary(), runs=self.probes.runs, reused=self.probes.reused)
        self.narrowing.trace = replace(summary, seconds={**summary.seconds, f"{role}_{side}": seconds})
        self.save()
        return trace

    def suspects(
        self, failing: ProbeTraces, passing: ProbeTraces | None, old_spec: EnvSpec, new_spec: EnvSpec
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The suspects ranked; back come both versions' sources of what ran (the proof's)."""
        last_old, first_new = self.narrowing.last_old, self.narrowing.first_new
        started = time.monotonic()
        specs = (old_spec, new_spec)
        old_sources, new_sources = traced_sources(self.seams.sources, specs, failing, self.options.packages)
        found = kept_suspects(  # ranked, or reused from a ranking of the same inputs
            self.seams.kept,
            old_sources,
            new_sources,
            failing,
            passing,
            tf_refs=(last_old.ref if last_old else None, first_new.ref if first_new else None),
        )
        self.narrowing.suspects = found.cut(SUSPECTS_KEPT)
        self.narrowing.trace = replace(
            self.trace_summary(), diff_seconds=round(time.monotonic() - started, 2)
        )
        self.save()
        return old_sources, new_sources

    # -- 4. the proof: the old package, or the old code, put back ---------------------------
    def proving(self, old_spec: EnvSpec, new_spec: EnvSpec) -> Proving | None:
        if self.options.prove <= 0 or self.ends is None:
            return None
        limits = (self.options.prove, self.options.prove_budget)
        seams = self.seams
        return Proving(
            seams.run_pinned, seams.run_patched, limits, self.progress.say, self.ends, (old_spec, new_spec)
        )
