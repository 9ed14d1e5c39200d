"""`tfbisect narrow`: an existing bisection narrowed below its releases (RCs, nightlies, the
dependency changes, suspect code), and the narrowing's exit policy, which `bisect` shares."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tfbisect.commands.common import DONE, FAILED, RunnerArgs, make_runner, newest
from tfbisect.commands.report import Reports, write_reports
from tfbisect.core import scenario
from tfbisect.core.argv import DEFAULT_PROVE, DEFAULT_PROVE_BUDGET, DEFAULT_TIMEOUT, NarrowOptions
from tfbisect.core.errors import ExitCode, MachineFaultError, NarrowError, TfbisectError
from tfbisect.core.progress import Progress
from tfbisect.core.timing import SPENT, Phase
from tfbisect.narrow import builds, narrower, wiring
from tfbisect.runs.runner import Runner
from tfbisect.search import bisection, bisectlog
from tfbisect.search.narrowlog import NarrowStatus

__all__ = ["NarrowOptions", "NarrowResult", "Narrowed", "narrow", "run_narrowing"]


@dataclass(frozen=True)
class Narrowed:
    """A narrowing done, or stopped (`stopped` says why); the answer is in the report's log."""

    report: bisectlog.BisectReport
    log_path: Path
    stopped: str  # "" when it ran through
    exit_code: ExitCode

    @property
    def traces(self) -> Path | None:
        """The folder of the traces the suspects were ranked from, if any."""
        folder = self.log_path.with_suffix(".traces")
        return folder if folder.is_dir() else None


@dataclass(frozen=True)
class NarrowResult:
    narrowed: Narrowed
    reports: Reports | None  # with --report
    exit_code: ExitCode
    spent: dict[Phase, float] | None = None  # seconds per phase (summed over parallel work)


def run_narrowing(
    report: bisectlog.BisectReport,
    request: bisection.BisectRequest,
    runner: Runner,
    progress: Progress,
    log_path: Path,
    *,
    trace: bool,
    prove: tuple[int, int] = (DEFAULT_PROVE, DEFAULT_PROVE_BUDGET),
) -> Narrowed:
    """Narrow; the exit status: 0, 1 when the builds between were not decisive, 13 (TRACE) when
    the traced runs failed.  A narrowing that cannot go on says why and keeps the bisection's
    answer (and everything it finished) in the log."""
    try:
        seams = wiring.runner_seams(report, request, runner, progress, log_path, force=runner.settings.force)
        found = narrower.Narrower(
            report,
            request,
            seams,
            progress,
            log_path,
            narrower.NarrowOptions(trace=trace, prove=prove[0], prove_budget=prove[1]),
        ).run()
    except (KeyboardInterrupt, MachineFaultError) as exc:  # a failing machine is no narrowing's answer
        again = shlex.join(NarrowOptions(logfile=log_path).to_argv())
        exc.add_note(
            f"tfbisect: the narrowing so far is in {log_path}; to finish only the narrowing (stored "
            f"runs and traces are reused): {again}"
        )
        raise
    except TfbisectError as exc:
        return Narrowed(report, log_path, str(exc), ExitCode(exc.exit_code))
    if found.trace is not None and found.trace.error:
        return Narrowed(report, log_path, "", ExitCode.TRACE)
    decided = found.status in (NarrowStatus.NARROWED, NarrowStatus.NOTHING_FINER)
    return Narrowed(report, log_path, "", DONE if decided else FAILED)


def narrow(options: NarrowOptions, progress: Progress, done: Callable[[Narrowed], None]) -> NarrowResult:
    """`done` hears of the narrowing before the reports are written."""
    before = SPENT.totals()
    reports = options.common.reports
    log_path = options.logfile or newest(reports / "bisect")
    report, request = _request(options, log_path)
    # The bisection's own settings: its backend (a swarm's address options need it) and timeout.
    timeout = options.timeout
    if timeout is None:
        timeout = request.timeout if request.timeout is not None else DEFAULT_TIMEOUT
    args = RunnerArgs(
        reports=reports,
        cache=options.common.cache,
        timeout=timeout,
        force=options.force,
        base_image=options.base_image,
        backend=request.backend,
        docker_host=options.docker_host,
        registry=options.registry,
        registry_pull=options.registry_pull,
    )
    runner = make_runner(args, progress)
    narrowed = run_narrowing(
        report,
        request,
        runner,
        progress,
        log_path,
        trace=options.trace,
        prove=(options.prove, options.prove_budget),
    )
    done(narrowed)
    written = write_reports(reports, request.scenario, reports, bisect=log_path) if options.report else None
    return NarrowResult(narrowed, written, narrowed.exit_code, SPENT.since(before))


def _request(
    options: NarrowOptions, log_path: Path
) -> tuple[bisectlog.BisectReport, bisection.BisectRequest]:
    """The bisection's log and request, refused (NarrowError) when they cannot be narrowed here."""
    try:
        report = bisectlog.load_report(log_path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NarrowError(
            f"Cannot read the bisection log {log_path}: {exc}.",
            "pass a log written by `tfbisect bisect` (they are under REPORTS/bisect/).",
        ) from exc
    builds.refuse_unless_applicable(report, log_path)  # before any runner is made
    if not isinstance(report.request, dict):
        raise NarrowError(f"The bisection log {log_path} holds no request.", "bisect again.")
    name = str(
        options.script
        or options.scenario
        or report.request.get("scenario_argument")
        or report.request.get("scenario", "")
    )
    # A plain script stays one (run under the harness, with its --bad-if-raises) unless told otherwise.
    given_raises = report.request.get("bad_if_raises")
    raises = options.bad_if_raises or tuple(
        str(r) for r in (given_raises if isinstance(given_raises, list) else [])
    )
    as_script = options.script is not None or (
        options.scenario is None and report.request.get("script") is True
    )
    chosen = scenario.find_script(name, raises) if as_script else scenario.find(name)
    if chosen.sha256 != report.request.get("scenario_sha256"):
        raise NarrowError(
            f"The scenario {name!r} ({chosen.path}) changed since this bisection ran, so its stored results "
            "do not answer for it.",
            "bisect again with the current scenario (stored results of unchanged versions are reused).",
        )
    try:
        request = bisection.BisectRequest.from_record(report.request, chosen)
    except (ValueError, TypeError) as exc:
        raise NarrowError(
            f"The bisection log {log_path} holds a request this tfbisect cannot read: {exc}.",
            "bisect again with this version of tfbisect.",
        ) from exc
    return report, request
