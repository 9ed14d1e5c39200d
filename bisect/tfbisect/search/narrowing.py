"""Below the releases: narrow a bisection's change point with what the index publishes in between,
then name what else changed in the environment and the changed code the failing probe ran.

1. The builds between the two releases (release candidates, tf-nightly builds: the catalogue's
   `between`, in PEP 440 order) are bisected with the same search as the releases, both ends
   reused from the bisection; where there are none, notes say why (the index lost old RCs, its
   nightlies start at a date).
2. The two environments the narrowed range ends at are compared by their locks.
3. The failing probe (and a probe that passes in the same environments) runs alone once more in
   both under `data/probe_tracer.py`; `suspects.py` diffs the two versions' sources of what ran
   and ranks the hunks.
The result is a `narrowlog.Narrowing` kept in the bisection's own log after every step, so an
interrupted narrowing loses nothing and `tfbisect narrow LOG` resumes it from stored results.
"""

from __future__ import annotations

import json
import time
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import Version

from tfbisect.core.catalogue import Catalogue, Release, ReleaseKind
from tfbisect.core.errors import LockError, NarrowError, TfbisectError, UnknownVersionError
from tfbisect.core.fsio import now_iso, write_json_atomic
from tfbisect.core.names import safe_component
from tfbisect.core.progress import Progress
from tfbisect.core.record import RunRecord
from tfbisect.core.spec import EnvSpec, KerasVariant
from tfbisect.envs import registry
from tfbisect.envs.wheelhouse import pins
from tfbisect.runs.workflow import Runner
from tfbisect.search.bisection import Bisection, Execute, compare_url, ref_of
from tfbisect.search.bisectlog import BisectReport, Status
from tfbisect.search.bisectplan import BisectRequest, Plan, place_release
from tfbisect.search.narrowlog import (
    SUSPECTS_KEPT,
    Build,
    DependencyChange,
    Narrowing,
    NarrowStatus,
    TraceSummary,
)
from tfbisect.search.suspects import ProbeTraces, Trace, find_suspects, read_places

# What the tracer follows: TF's Python (`tensorflow_core` in 2.0 and 2.1), Keras 2.6+ and 3, tf-keras.
TRACED_PACKAGES = ("tensorflow", "tensorflow_core", "keras", "tf_keras")
# The distributions that are the TF build itself: what is bisected, not a dependency that changed.
TF_DISTRIBUTIONS = frozenset(
    {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly", "tf-nightly-cpu"}
)

_STATUS = {
    Status.FOUND: NarrowStatus.NARROWED,
    Status.NON_MONOTONIC: NarrowStatus.NON_MONOTONIC,
    Status.INTERRUPTED: NarrowStatus.INTERRUPTED,
}


@dataclass(frozen=True)
class NarrowOptions:
    trace: bool = True  # False: stop after the builds and the dependency changes
    packages: tuple[str, ...] = TRACED_PACKAGES


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


def notes_for(
    catalogue: Catalogue, last_old: Release, first_new: Release, between: list[Release]
) -> list[str]:
    """What the index lacks between two releases, in words a user can check."""
    notes = []
    new = Version(first_new.version)
    if not any(r.kind is ReleaseKind.RC for r in between) and not new.is_prerelease and new.micro == 0:
        oldest = catalogue.oldest_rc()
        if oldest is not None and Version(oldest.version) > new:
            notes.append(
                f"the index has no release candidates of {first_new.version} (its oldest release candidate "
                f"is {oldest.version}, uploaded {oldest.date}): old RCs were deleted"
            )
        else:
            notes.append(f"the index has no release candidates of {first_new.version}")
    if not any(r.kind is ReleaseKind.NIGHTLY for r in between):
        window = catalogue.nightly_window()
        if window is None:
            notes.append("the index has no tf-nightly builds")
        elif first_new.date < window[0]:
            notes.append(
                f"nightlies on the index start at {window[0]}, after this range "
                f"({first_new.version} was uploaded on {first_new.date}): older nightlies are gone"
            )
        else:
            notes.append("no tf-nightly build lies between these two in version order")
    return notes


def dependency_changes(old_lock: str, new_lock: str, imported: Iterable[str] = ()) -> list[DependencyChange]:
    """The packages whose pinned versions differ between two locks (the TF build itself left out),
    the ones the probe imported first, then by name."""
    old = {canonicalize_name(p.name): p.version for p in pins(old_lock)}
    new = {canonicalize_name(p.name): p.version for p in pins(new_lock)}
    used = {canonicalize_name(name) for name in imported}
    changes = [
        DependencyChange(name, old.get(name), new.get(name), name in used)
        for name in sorted(set(old) | set(new))
        if name not in TF_DISTRIBUTIONS and old.get(name) != new.get(name)
    ]
    return sorted(changes, key=lambda c: (not c.imported, c.name))


def probe_outcomes(record: RunRecord) -> dict[str, tuple[str, str]]:
    """Probe name -> (kind, outcome) of a run's document."""
    found: dict[str, tuple[str, str]] = {}
    document = record.document or {}
    for probe in document.get("probes", []) if isinstance(document, dict) else []:
        if isinstance(probe, dict) and isinstance(probe.get("name"), str):
            found[probe["name"]] = (str(probe.get("kind", "")), str(probe.get("outcome", "")))
    return found


def choose_probes(asked: str | None, old: RunRecord, new: RunRecord) -> tuple[str | None, str | None]:
    """The failing probe to trace (the one asked, else the first whose outcome changed) and a
    passing one: the same kind, passing in both environments as the failing one did in the old,
    the most alike by name (`gradient_eager_plain` -> `gradient_eager_decorated`)."""
    before, after = probe_outcomes(old), probe_outcomes(new)
    failing = asked
    if failing is None:
        changed = [
            name for name, (_, outcome) in after.items() if before.get(name, ("", outcome))[1] != outcome
        ]
        failing = changed[0] if changed else None
    if failing is None or failing not in after or failing not in before:
        return failing, None
    kind, good = before[failing]
    parts = set(failing.split("_"))
    passing = [
        name
        for name, (other_kind, outcome) in after.items()
        if name != failing
        and other_kind == kind
        and outcome == good
        and before.get(name, ("", ""))[1] == good
    ]
    passing.sort(key=lambda name: (-len(parts & set(name.split("_"))), name))
    return failing, passing[0] if passing else None


class Narrower:
    """Narrows one bisection: the handler that prints is `progress`, the runs are the runner's."""

    def __init__(
        self,
        report: BisectReport,
        request: BisectRequest,
        runner: Runner,
        progress: Progress,
        log_path: Path,
        options: NarrowOptions = NarrowOptions(),
        execute: Execute | None = None,
    ) -> None:
        """`execute` runs one build's scenario (default: the runner's stored-or-run; tests script it)."""
        refuse_unless_applicable(report, log_path)
        assert report.last_old is not None and report.first_new is not None
        self.report, self.request, self.runner = report, request, runner
        self.progress, self.log_path, self.options = progress, log_path, options
        self.narrowing = Narrowing(release_range=(report.last_old, report.first_new), started_at=now_iso())
        # A finished narrowing of this log stays the log's answer if this one is interrupted.
        self.previous = report.narrowing if report.narrowing and report.narrowing.finished_at else None
        self.scripted = execute  # None: real runs, with environments prepared ahead
        self.execute: Execute = execute or (lambda spec: runner.run(spec, request.scenario))
        self.records: dict[str, RunRecord] = {}
        self.specs: dict[str, EnvSpec] = {}

    def save(self) -> None:
        self.report.narrowing = self.narrowing
        write_json_atomic(self.log_path, self.report.to_dict())

    def run(self) -> Narrowing:
        try:
            low, high = self.bisect_builds()
            self.save()
            old, new = self.records.get(low.version), self.records.get(high.version)
            if self.narrowing.status is NarrowStatus.NON_MONOTONIC:
                self.narrowing.notes.append(
                    "the builds in between flip back and forth, so no pair was compared or traced"
                )
            elif old is None or new is None:
                self.narrowing.notes.append(
                    f"{low.version if old is None else high.version} cannot run here, so nothing was compared or traced"
                )
            else:
                self.compare(low, high, old, new)
        except KeyboardInterrupt:
            self.narrowing.status = NarrowStatus.INTERRUPTED
            if self.previous is not None:
                self.narrowing = self.previous
            self.save()
            raise
        except Exception as exc:  # whatever stops it, what finished stays in the log
            self.narrowing.notes.append(f"the narrowing stopped: {type(exc).__name__}: {str(exc)[:300]}")
            self.narrowing.status = NarrowStatus.INTERRUPTED
            self.save()
            raise
        self.narrowing.finished_at = now_iso()
        self.save()
        return self.narrowing

    # -- 1. the builds between the releases -----------------------------------------------
    def bisect_builds(self) -> tuple[Release, Release]:
        catalogue = self.runner.catalogue
        last_old, first_new = self.narrowing.release_range
        try:
            low, high = catalogue.resolve(last_old, pre=True), catalogue.resolve(first_new, pre=True)
        except UnknownVersionError as exc:
            raise NarrowError(
                f"The bisection names TF {last_old} and {first_new}; the catalogue snapshot lacks one: {exc.what}",
                "refresh it with `tfbisect versions --refresh --save`, then narrow again.",
            ) from exc
        between = catalogue.between(last_old, first_new)
        if self.request.keras is KerasVariant.LEGACY:  # tf-keras has no nightly builds to pair with
            between = [r for r in between if r.kind is not ReleaseKind.NIGHTLY]
        self.narrowing.candidates = [r.version for r in between]
        self.narrowing.notes = notes_for(catalogue, low, high, between)
        builds = [low, *between, high]
        specs = [place_release(self.request, r, self.runner.environment) for r in builds]
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
        sub = Bisection(
            replace(self.request, good=last_old, bad=first_new),
            self.runner,
            self.progress,
            self.log_path,
            execute=self.scripted,
            planned=Plan(tuple(builds), tuple(specs)),
            save=self.sub_saved,
        )
        found = sub.run()
        for index, record in sub.records.items():
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
        self.records[release.version] = self.execute(spec).record

    def set_range(self, low: Release, high: Release) -> None:
        builds = []
        for release in (low, high):
            record = self.records.get(release.version)
            git_version = record.git_version if record else self.report.git_versions.get(release.version)
            builds.append(
                Build(
                    version=release.version,
                    kind=release.kind,
                    uploaded=release.uploaded,
                    git_version=git_version,
                    ref=ref_of(release.version, git_version),
                )
            )
        self.narrowing.last_old, self.narrowing.first_new = builds
        self.narrowing.compare_url = compare_url(builds[0].ref, builds[1].ref)

    # -- 2. and 3. what else changed, and the code that ran --------------------------------
    def compare(self, low: Release, high: Release, old: RunRecord, new: RunRecord) -> None:
        old_spec, new_spec = self.specs[low.version], self.specs[high.version]
        try:
            old_lock = self.runner.lock_for(old_spec).path.read_text(encoding="utf-8")
            new_lock = self.runner.lock_for(new_spec).path.read_text(encoding="utf-8")
        except (LockError, OSError) as exc:
            self.narrowing.notes.append(f"the dependency changes are not listed: {exc}")
            self.save()
            return
        self.narrowing.dependencies = dependency_changes(old_lock, new_lock)
        self.save()
        if not self.options.trace:
            return
        probe, passing = choose_probes(self.request.probe, old, new)
        if probe is None:
            self.narrowing.notes.append("no probe changed between the two builds, so none was traced")
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
            self.narrowing.trace = replace(
                self.narrowing.trace or summary, error=f"{exc.what} (what to do: {exc.todo})"
            )

    def trace(
        self, summary: TraceSummary, old_spec: EnvSpec, new_spec: EnvSpec, old_lock: str, new_lock: str
    ) -> None:
        # Traced runs go where the backend sends them (a swarm's to this engine, which built its images).
        old_spec, new_spec = registry.traced_spec(old_spec), registry.traced_spec(new_spec)
        self.narrowing.trace = summary
        failing = ProbeTraces(
            self.traced("failing", summary.probe, "old", old_spec),
            self.traced("failing", summary.probe, "new", new_spec),
        )
        passing = None
        if summary.passing_probe is not None:
            try:
                passing = ProbeTraces(
                    self.traced("passing", summary.passing_probe, "old", old_spec),
                    self.traced("passing", summary.passing_probe, "new", new_spec),
                )
            except TfbisectError as exc:  # the failing probe's traces still rank, less sharply
                self.narrowing.notes.append(
                    f"the passing probe {summary.passing_probe} could not be traced ({exc.what}); "
                    "the suspects are ranked without it"
                )
                self.narrowing.trace = replace(self.trace_summary(), passing_probe=None)
        imported = set(failing.old.imported) | set(failing.new.imported)
        self.narrowing.dependencies = dependency_changes(old_lock, new_lock, imported)
        self.suspects(failing, passing, old_spec, new_spec)
        try:  # the yardstick of what tracing costs: last, so that its failure loses nothing
            untraced = self.runner.trace(new_spec, self.request.scenario, [summary.probe], [], traced=False)
            self.narrowing.trace = replace(self.trace_summary(), untraced_seconds=round(untraced.seconds, 2))
        except TfbisectError as exc:
            self.narrowing.notes.append(f"the untraced run of {summary.probe} failed: {exc.what}")
        self.save()

    def trace_summary(self) -> TraceSummary:
        assert self.narrowing.trace is not None
        return self.narrowing.trace

    def traced(self, role: str, probe: str, side: str, spec: EnvSpec) -> Trace:
        """One probe traced alone in one environment; a trace kept beside the log from an earlier
        (interrupted) narrowing of the same build is reused.  A run that traced nothing, or not
        the probe, is an error: no trace must read as "no Python changed"."""
        folder = self.log_path.with_suffix(".traces")
        kept = folder / f"{safe_component(f'{role}-{side}-{spec.tf_version}')}.json"
        document, seconds = self.reused_trace(kept)
        if document is None:
            self.progress.say(f"[{spec.label}] tracing probe {probe} alone")
            done = self.runner.trace(spec, self.request.scenario, [probe], list(self.options.packages))
            ran = {p.get("name") for p in (done.result or {}).get("probes", []) if isinstance(p, dict)}
            window = done.document.get("window")
            opened = window.get("opened", 0) if isinstance(window, dict) else 0
            if not done.document.get("files") or not opened or probe not in ran:
                raise NarrowError(
                    f"The traced run of {probe} on {spec.label} traced nothing (exit {done.exit_code}; the "
                    f"tracing window was opened {opened} times; the probe {'ran' if probe in ran else 'did not run'}).",
                    f"check that the scenario runs `--probe {probe}` alone and opens the tracing window "
                    f"(README: Writing a scenario); the run's log: {done.log}",
                )
            document, seconds = {**done.document, "seconds": round(done.seconds, 2)}, round(done.seconds, 2)
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(kept, document)
        try:
            trace = Trace.from_dict(document)
        except ValueError as exc:
            raise NarrowError(
                f"The traced run of {probe} on {spec.label} wrote an unusable trace: {exc}.",
                f"see the run's log under {self.runner.log_dir(self.request.scenario)}.",
            ) from exc
        summary = self.trace_summary()
        self.narrowing.trace = replace(summary, seconds={**summary.seconds, f"{role}_{side}": seconds})
        self.save()
        return trace

    @staticmethod
    def reused_trace(path: Path) -> tuple[dict[str, Any] | None, float]:
        try:
            document = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, ValueError):
            return None, 0.0
        if not isinstance(document, dict) or not isinstance(document.get("seconds"), int | float):
            return None, 0.0
        return document, float(document["seconds"])

    def suspects(
        self, failing: ProbeTraces, passing: ProbeTraces | None, old_spec: EnvSpec, new_spec: EnvSpec
    ) -> None:
        last_old, first_new = self.narrowing.last_old, self.narrowing.first_new
        started = time.monotonic()
        packages = set(self.options.packages)
        traced = {
            p for p in set(failing.old.lines) | set(failing.new.lines) if p.split("/", 1)[0] in packages
        }
        try:
            old_sources = read_places(self.runner.source_places(old_spec, self.request.scenario), traced)
            new_sources = read_places(self.runner.source_places(new_spec, self.request.scenario), traced)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as exc:
            raise NarrowError(
                f"The installed sources could not be read: {exc}.",
                "remove the environment from the cache (a venv under CACHE/venvs, or the wheel cache) and narrow again.",
            ) from exc
        # A file that ran must be readable where it ran: else every line of it would read as added.
        lost = [p for p in failing.old.lines if p in traced and p not in old_sources]
        lost += [p for p in failing.new.lines if p in traced and p not in new_sources]
        if lost:
            raise NarrowError(
                f"The installed sources of {len(lost)} traced files could not be read (e.g. {lost[0]}): "
                "the environment's wheels left the cache, or its files are links out of it.",
                "remove the environment (CACHE/venvs, or the wheel cache) and narrow again.",
            )
        found = find_suspects(
            old_sources,
            new_sources,
            failing,
            passing,
            tf_refs=(last_old.ref if last_old else None, first_new.ref if first_new else None),
        )
        kept = found.to_dict()
        kept["suspects_total"] = len(kept["suspects"])
        kept["suspects"] = kept["suspects"][:SUSPECTS_KEPT]
        self.narrowing.suspects = kept
        self.narrowing.trace = replace(
            self.trace_summary(), diff_seconds=round(time.monotonic() - started, 2)
        )
        self.save()
