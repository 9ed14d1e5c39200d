"""The narrowing's seams made from a `Runner`: the one place the narrowing meets the runs and the
bisection log's file (the narrower itself runs nothing and writes nothing)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from packaging.utils import canonicalize_name

from tfbisect.core.fsio import write_json_atomic
from tfbisect.core.progress import Progress
from tfbisect.core.record import RunRecord
from tfbisect.core.spec import EnvSpec
from tfbisect.core.timing import SPENT, Phase
from tfbisect.envs.registry import traced_spec
from tfbisect.envs.wheelhouse import Pin, pins
from tfbisect.narrow.narrower import Seams
from tfbisect.narrow.proof import PatchedRun
from tfbisect.narrow.traces import KeptTraces
from tfbisect.narrow.transplant import NotInstalled
from tfbisect.runs.patched import PatchedRuns, PinError
from tfbisect.runs.runner import Runner
from tfbisect.runs.tracing import STORE_FOLDER, TraceRun
from tfbisect.search.bisection import Bisection, Execute
from tfbisect.search.bisectlog import BisectReport
from tfbisect.search.bisectplan import BisectRequest, Plan, place_release
from tfbisect.search.narrowlog import Narrowing


def traces_folder(log_path: Path) -> Path:
    """Where the traces of a bisection log's narrowing are kept."""
    return log_path.with_suffix(".traces")


def rankings_folder(runner: Runner) -> Path:
    """Where rankings are kept for any log to reuse: beside the stored traced runs."""
    return runner.settings.reports_dir / "results" / STORE_FOLDER / "rankings"


def log_saver(report: BisectReport, log_path: Path) -> Callable[[Narrowing], None]:
    """Keeps a narrowing in its bisection's log (the report's `narrowing`, the whole log written),
    with the time spent since this saver was made added to the log's `time_spent`."""
    earlier = dict(report.time_spent or {})
    before = SPENT.totals()

    def save(narrowing: Narrowing) -> None:
        report.narrowing = narrowing
        since = SPENT.since(before)
        report.time_spent = {phase: earlier.get(phase, 0.0) + since[phase] for phase in Phase}
        write_json_atomic(log_path, report.to_dict())

    return save


def runner_seams(
    report: BisectReport,
    request: BisectRequest,
    runner: Runner,
    progress: Progress,
    log_path: Path,
    *,
    execute: Execute | None = None,
    force: bool = False,
) -> Seams:
    """The seams of a narrowing of `report` (kept in `log_path`) that runs with `runner`.
    `execute`: a test's scripted runs (then nothing is prepared ahead); `force`: trace again."""
    scenario = request.scenario

    def bisect(
        sub: BisectRequest, planned: Plan, save: Callable[[BisectReport], None]
    ) -> tuple[BisectReport, dict[int, RunRecord]]:
        search = Bisection(sub, runner, progress, log_path, execute=execute, planned=planned, save=save)
        return search.run(), search.records

    def trace(spec: EnvSpec, probes: Sequence[str], packages: Sequence[str], traced: bool) -> TraceRun:
        # No probes: the scenario whole, from its start (it may have no window to open).  Its
        # environment's preparation inside counts as building (runner.prepare measures it).
        with SPENT.measure(Phase.TRACE):
            return runner.trace(
                traced_spec(spec), scenario, probes, packages, traced=traced, window_only=bool(probes)
            )

    patched = PatchedRuns(runner)
    locked = LockedHashes()

    def lock_text(spec: EnvSpec) -> str:
        text = runner.lock_for(spec, scenario.dependencies).path.read_text(encoding="utf-8")
        locked.learn(text)  # both ends' locks are read before any transplant: their hashes
        return text

    def run_patched(spec: EnvSpec, probe: str, patches: Mapping[str, str]) -> PatchedRun:
        with SPENT.measure(Phase.TRACE):  # the proof's runs count with the traced runs
            return patched.run(traced_spec(spec), scenario, probe, patches=patches)

    def run_pinned(spec: EnvSpec, probe: str, wanted: Mapping[str, str]) -> PatchedRun | NotInstalled:
        try:
            return patched.run(traced_spec(spec), scenario, probe, pins=locked.pins(wanted))
        except PinError as exc:  # the pin itself (a copy that cannot be made ends the proof)
            return not_installed(exc)

    return Seams(
        catalogue=runner.catalogue,
        place=lambda release: place_release(request, release, runner.environment),
        execute=execute or (lambda spec: runner.run(spec, scenario)),
        bisect=bisect,
        lock_text=lock_text,
        trace=trace,
        sources=lambda spec: runner.source_places(traced_spec(spec), scenario),
        kept=KeptTraces(
            traces_folder(log_path), force=force, store=rankings_folder(runner), say=progress.say
        ),
        save=log_saver(report, log_path),
        run_patched=None if execute is not None else run_patched,
        run_pinned=None if execute is not None else run_pinned,
    )


class LockedHashes:
    """The sha256 hashes each lock read so far gives a package's version: a transplanted wheel is
    checked against the hashes of the lock it comes from (the other end's)."""

    def __init__(self) -> None:
        self.hashes: dict[tuple[str, str], frozenset[str]] = {}

    def learn(self, lock_text: str) -> None:
        for pin in pins(lock_text):
            self.hashes[(canonicalize_name(pin.name), pin.version)] = pin.hashes

    def pins(self, wanted: Mapping[str, str]) -> list[Pin]:
        """The pins (name -> version) with their hashes; none known: empty (refused, not testable)."""
        return [
            Pin(name, version, self.hashes.get((canonicalize_name(name), version), frozenset()))
            for name, version in sorted(wanted.items())
        ]


def not_installed(exc: PinError) -> NotInstalled:
    """A pin's failure as the transplant's trial keeps it: what happened and what to do (the log,
    or that --force tries a stored one again), and whether it was stored from before."""
    return NotInstalled(f"{exc.what} ({exc.todo})", reused=exc.reused, inconclusive=exc.inconclusive)
