"""`tfbisect bisect`: between which two TF releases the behaviour changed, for each variant of
the request (bases, Keras variants), then narrowed below the releases; and `bisect log`."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tfbisect.commands.common import (
    DONE,
    FAILED,
    allowed_backends,
    axis,
    jobs_for,
    make_runner,
    newest,
    runner_args,
)
from tfbisect.commands.narrow import Narrowed, run_narrowing
from tfbisect.commands.report import Reports, write_reports
from tfbisect.core import scenario, timing
from tfbisect.core.argv import DEFAULT_PROVE, DEFAULT_PROVE_BUDGET, DEFAULT_TIMEOUT, BisectOptions
from tfbisect.core.errors import ExitCode, MachineFaultError
from tfbisect.core.fsio import write_json_atomic
from tfbisect.core.progress import Progress
from tfbisect.core.spec import Flavour, KerasVariant
from tfbisect.core.timing import SPENT, Phase
from tfbisect.envs import registry
from tfbisect.narrow import builds
from tfbisect.runs.runner import Runner
from tfbisect.search import bisection, bisectlog

__all__ = [
    "BisectLog",
    "BisectOptions",
    "BisectResult",
    "Bisected",
    "Event",
    "Variant",
    "bisect",
    "bisect_log",
]


@dataclass(frozen=True)
class Bisected:
    """One variant's bisection finished (before its narrowing starts)."""

    report: bisectlog.BisectReport
    log_path: Path


@dataclass(frozen=True)
class Variant:
    """One variant done: its log, the stored results behind its steps, its exit code."""

    report: bisectlog.BisectReport
    log_path: Path
    results: tuple[Path, ...]
    narrowed: Narrowed | None  # None: not narrowed
    exit_code: ExitCode


Event = Bisected | Narrowed | Variant


@dataclass(frozen=True)
class BisectResult:
    variants: tuple[Variant, ...]
    reports: Reports | None  # with --report
    exit_code: ExitCode
    spent: dict[Phase, float]  # seconds per phase over every variant (summed over parallel work)


@dataclass(frozen=True)
class BisectLog:
    report: bisectlog.BisectReport
    path: Path
    exit_code: ExitCode = DONE


def bisect_log(options: BisectOptions) -> BisectLog:
    """`bisect log [LOG]`: a bisection's full sequence (default: the newest)."""
    path = options.logfile or newest(options.common.reports / "bisect")
    return BisectLog(bisectlog.load_report(path), path)


def bisect(options: BisectOptions, progress: Progress, on_event: Callable[[Event], None]) -> BisectResult:
    """Bisect each variant in turn; `on_event` hears of each step as it ends.  Exit 0 when
    every variant found its change point (or an ambiguous one), else 1: the bisection's status
    stands whatever its narrowing could do (the narrowing says that itself)."""
    env = options.env
    runner = make_runner(runner_args(options.common, env, force=options.force), progress)
    chosen = scenario.chosen(env.scenario, env.script, env.bad_if_raises)
    flavours = axis(env.base, Flavour, "--base")
    variants = axis(env.keras, KerasVariant, "--keras")
    choice = registry.choose(env.backend, progress, runner.settings.options)
    choice = registry.Choice(
        allowed_backends(chosen, choice.order, trusted=env.trust_script, progress=progress)
    )
    progress.say(f"bisecting {chosen.name} in {choice.describe()}")
    done = []
    for flavour, keras in itertools.product(flavours, variants):
        jobs = jobs_for(options.jobs, runner, choice, flavour)
        request = request_for(options, chosen, (flavour, keras), choice, jobs)
        proving = (options.prove, options.prove_budget)
        done.append(_variant(request, runner, progress, options.common.reports / "bisect", on_event, proving))
    reports = options.common.reports
    written = write_reports(reports, chosen, reports) if options.report else None
    status = max((v.exit_code for v in done), default=DONE)
    # The line adds up what the logs say (not the process's clock since `before`): a prefetch
    # still ending after a log's last save, or a second rounding, would make them disagree.
    return BisectResult(tuple(done), written, status, timing.total(v.report.time_spent for v in done))


def request_for(
    options: BisectOptions,
    chosen: scenario.Scenario,
    variant: tuple[Flavour, KerasVariant],
    choice: registry.Choice,
    jobs: int,
) -> bisection.BisectRequest:
    """The request of one variant: all it needs to run, and to be repeated by its log's command."""
    env = options.env
    flavour, keras = variant
    return bisection.BisectRequest(
        scenario=chosen,
        good=options.good,
        bad=options.bad,
        probe=options.probe,
        flavour=flavour,
        keras=keras,
        backend=choice.primary,
        venv_fallback=choice.fallback,
        python=options.python,
        jobs=jobs,
        prefetch=options.prefetch,
        run_ahead=options.run_ahead,
        pre=env.pre,
        confirm=options.confirm,
        term_old=options.term_old,
        term_new=options.term_new,
        timeout=env.timeout if env.timeout != DEFAULT_TIMEOUT else None,
        regress=options.regress,
        narrow=options.narrow,
        trace=options.trace,
    )


def _variant(
    request: bisection.BisectRequest,
    runner: Runner,
    progress: Progress,
    bisect_dir: Path,
    on_event: Callable[[Event], None],
    prove: tuple[int, int] = (DEFAULT_PROVE, DEFAULT_PROVE_BUDGET),
) -> Variant:
    log_path = bisect_dir / bisection.log_name(request, bisect_dir)
    try:
        report = bisection.Bisection(request, runner, progress, log_path, save=timed_saver(log_path)).run()
    except (KeyboardInterrupt, MachineFaultError) as exc:
        exc.add_note(f"tfbisect: the sequence so far: tfbisect bisect log {log_path}")
        raise
    on_event(Bisected(report, log_path))
    status = DONE
    narrowed = None
    if request.narrow and builds.applicable(report) is None:
        narrowed = run_narrowing(
            report, request, runner, progress, log_path, trace=request.trace, prove=prove
        )
        # The narrowing says what it could not do; it never turns the answer into a failure.
        on_event(narrowed)
    if report.status not in (bisectlog.Status.FOUND, bisectlog.Status.AMBIGUOUS):
        status = max(status, FAILED)
    variant = Variant(
        report, log_path, tuple(result_paths(report, runner, request.scenario)), narrowed, status
    )
    on_event(variant)
    return variant


def timed_saver(log_path: Path) -> Callable[[bisectlog.BisectReport], None]:
    """Writes a bisection's log after each round with the time spent on it so far (from now)."""
    before = SPENT.totals()

    def save(report: bisectlog.BisectReport) -> None:
        report.time_spent = SPENT.since(before)
        write_json_atomic(log_path, report.to_dict())

    return save


def result_paths(report: bisectlog.BisectReport, runner: Runner, chosen: scenario.Scenario) -> list[Path]:
    """The stored results behind the steps of a bisection."""
    keys = {step.key for step in report.steps}
    return [
        path
        for path, record in runner.store.records(chosen.name)
        if record.spec.key in keys and record.scenario_sha256 == chosen.sha256
    ]
