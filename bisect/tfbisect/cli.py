"""The command line: a thin layer over the workflow; every known failure is a two-part message."""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfbisect import __version__, options, toxini
from tfbisect.core import catalogue, cudasets, interrupt, process, scenario, store
from tfbisect.core.errors import ExitCode, NarrowError, TfbisectError, UsageError
from tfbisect.core.fsio import write_text_atomic
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.spec import Flavour, KerasVariant
from tfbisect.core.textsafe import printable
from tfbisect.core.versions import python_sort_key
from tfbisect.envs import interpreters, locks, registry
from tfbisect.narrow import builds, narrower, wiring
from tfbisect.report import findings, github, htmlreport, matrixpng, mdsummary, reportdata, show
from tfbisect.runs import givenenv
from tfbisect.runs.workflow import DEFAULT_TIMEOUT, Runner, Settings, default_cache_dir
from tfbisect.search import bisection, bisectlog, sweep
from tfbisect.search.narrowlog import NarrowStatus

# gpu-check builds CUDA images and runs them: on the Docker backend, whatever --backend says.
GPU_CHECK_BACKEND = "docker"
# `tfbisect run` speaks git bisect run's language, so it can drive `git bisect run` itself.
RUN_EXIT = {outcome: ExitCode[outcome.name] for outcome in Outcome}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfbisect",
        description="Which TensorFlow releases reproduce a behaviour, on CPU and CUDA, and where did it change?",
    )
    parser.add_argument("--version", action="version", version=f"tfbisect {__version__}")
    parser.add_argument(
        "--reports", type=Path, default=Path("reports"), help="results and logs (default: reports/)"
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="venvs and images cache (default: ~/.cache/tfbisect)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    versions = sub.add_parser(
        "versions", help="the catalogue of TF releases and which Pythons here can run them"
    )
    versions.add_argument("--pre", action="store_true", help="include release candidates")
    versions.add_argument(
        "--nightly", action="store_true", help="include the tf-nightly builds on the index (by date)"
    )
    versions.add_argument(
        "--refresh", action="store_true", help="read the package index instead of the snapshot"
    )
    versions.add_argument(
        "--save", action="store_true", help="with --refresh: overwrite the committed snapshot"
    )
    versions.add_argument("--index-url", default=catalogue.DEFAULT_INDEX)

    run = sub.add_parser("run", help="run the scenario on one TF version")
    add_env_options(run)
    run.add_argument("--tf", required=True, metavar="VERSION", help="2.10 (newest 2.10.x) or 2.10.0")
    run.add_argument(
        "--python",
        type=options.python_version,
        metavar="X.Y",
        help="pin the interpreter (default: newest with wheels here)",
    )
    run.add_argument("--force", action="store_true", help="run again even if a stored result exists")
    run.add_argument(
        "--interpreter",
        type=Path,
        metavar="PYTHON",
        help="run in this interpreter's environment as it is (a tox env's {envpython}) instead of a venv "
        "tfbisect builds; refused unless it is the line's Python (or --python) with exactly that TF; "
        "always runs, and replaces the stored result",
    )
    run.add_argument(
        "--via",
        choices=["tox"],
        help="with --interpreter: record the run as made through tox (and $TOX_ENV_NAME), and exit 0 for "
        "either verdict; an error, a timeout or a skip still exits non-zero",
    )

    show_cmd = sub.add_parser("show", help="pretty-print a stored result (no argument: list them)")
    show_cmd.add_argument("result", nargs="?", type=Path, help="a result file under reports/results/")

    lock = sub.add_parser("lock", help="regenerate locks: dependencies as of each release date")
    lock.add_argument("--tf", nargs="*", metavar="VERSION", help="versions to lock (default: every release)")
    lock.add_argument(
        "--python",
        type=options.python_version,
        metavar="X.Y",
        help="Python to lock for (default: newest with wheels here)",
    )
    lock.add_argument("--flavour", choices=[f.value for f in Flavour], default="cpu")
    lock.add_argument("--keras", choices=[k.value for k in KerasVariant], default="default")
    lock.add_argument("--missing", action="store_true", help="only versions that have no lock yet")

    sub.add_parser("tox-ini", help="print tox.ini's generated per-line block for the current catalogue")

    bisect = sub.add_parser("bisect", help="find between which two TF releases the behaviour changed")
    bisect.add_argument(
        "action", nargs="?", choices=["log"], help="log: print the full sequence of a bisection"
    )
    bisect.add_argument(
        "logfile", nargs="?", type=Path, help="with log: the bisection's file (default: newest)"
    )
    add_env_options(bisect, multi=True)
    bisect.add_argument(
        "--good", "--old", dest="good", metavar="V", help="the older end (default: oldest here)"
    )
    bisect.add_argument(
        "--bad", "--new", dest="bad", metavar="V", help="the newer end (default: newest here)"
    )
    bisect.add_argument(
        "--probe", metavar="NAME", help="judge by one probe (match/mismatch) instead of the verdict"
    )
    bisect.add_argument(
        "--python", type=options.python_version, metavar="X.Y", help="pin the interpreter for every version"
    )
    bisect.add_argument(
        "--prefetch",
        type=options.prefetch,
        default=2,
        metavar="N",
        help="environments prepared ahead of the next round while one runs (both outcomes; 0: none; default 2)",
    )
    bisect.add_argument(
        "--jobs",
        "-j",
        type=options.jobs,
        default=None,
        help=f"versions run at once (n-section; 1 to {options.MAX_JOBS}; default 1, on a swarm its ready nodes)",
    )
    bisect.add_argument(
        "--confirm", action="store_true", help="also run the versions next to the change point"
    )
    bisect.add_argument(
        "--regress",
        choices=["state", "error"],
        default="state",
        help="state: bisect the question's two states (default); error: bisect where the scenario starts "
        "(or stops) failing: a crash, an error or a timeout against a run that answers",
    )
    bisect.add_argument("--term-old", help="name of the older end's state (default: good, or bad for a fix)")
    bisect.add_argument("--term-new", help="name of the newer end's state (default: bad, or good for a fix)")
    bisect.add_argument("--force", action="store_true", help="run again even where results are stored")
    bisect.add_argument("--report", action="store_true", help="then write the HTML report, summary and PNG")
    add_narrow_options(bisect)
    bisect.add_argument(
        "--narrow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after a change point between two releases, narrow it with the RCs and nightlies in between, "
        "list the dependency changes and trace the failing probe (default: on; --no-narrow stops at the releases)",
    )

    narrow_cmd = sub.add_parser(
        "narrow",
        help="narrow an existing bisection below its releases: RCs, nightlies, dependency changes, suspect code",
    )
    narrow_cmd.add_argument("logfile", nargs="?", type=Path, help="the bisection's log (default: newest)")
    narrow_cmd.add_argument("--force", action="store_true", help="run again even where results are stored")
    narrow_cmd.add_argument(
        "--timeout", type=options.timeout, default=None, help="seconds per run (default: the bisection's)"
    )
    narrow_cmd.add_argument(
        "--scenario", help="the scenario's name or path (default: as the bisection was given it)"
    )
    narrow_cmd.add_argument(
        "--docker-host", metavar="URL", help="swarm: the manager's engine (default: $DOCKER_HOST)"
    )
    narrow_cmd.add_argument("--registry", metavar="HOST:PORT", help="swarm: the registry images go to")
    narrow_cmd.add_argument(
        "--registry-pull", metavar="HOST:PORT", help="swarm: the registry as nodes reach it"
    )
    narrow_cmd.add_argument("--base-image", metavar="IMAGE", help="docker: the base image the bisection used")
    narrow_cmd.add_argument(
        "--report", action="store_true", help="then write the HTML report, summary and PNG"
    )
    add_narrow_options(narrow_cmd)

    report = sub.add_parser(
        "report", help="HTML report, GitHub summary and matrix PNG from the stored results"
    )
    report.add_argument(
        "--scenario", help=f"scenario name or path (default: the --bisect log's, else {scenario.DEFAULT})"
    )
    report.add_argument(
        "--bisect",
        type=Path,
        metavar="LOG",
        help="the bisection log the headline and matrix answer (default: the newest of the scenario)",
    )
    report.add_argument("--out", type=Path, help="where to write the files (default: the reports folder)")
    report.add_argument(
        "--post", metavar="OWNER/REPO#N", help="post the summary as a comment (token from env)"
    )
    report.add_argument("--api-url", default=github.API, help=argparse.SUPPRESS)

    gpu = sub.add_parser(
        "gpu-check",
        help="build a CUDA image per CUDA set, prove TF opens its libraries, run the scenario (on the GPU if any)",
    )
    gpu.add_argument(
        "--tf",
        action="append",
        metavar="VERSION",
        help="check this version (repeatable; default: the newest release of every CUDA set)",
    )
    gpu.add_argument("--python", type=options.python_version, metavar="X.Y", help="pin the interpreter")
    gpu.add_argument("--require-gpu", action="store_true", help="fail unless every run saw a GPU")
    gpu.add_argument(
        "--base-image", metavar="IMAGE", help="a base image of your own (with its CUDA libraries)"
    )
    gpu.add_argument("--scenario", default=scenario.DEFAULT, help="scenario name or path")
    gpu.add_argument("--timeout", type=options.timeout, default=DEFAULT_TIMEOUT, help="seconds per run")
    gpu.set_defaults(force=True)  # a result stored on a machine without a GPU says nothing here

    sweep = sub.add_parser("sweep", help="run the whole matrix of versions, bases and Keras variants")
    add_env_options(sweep, multi=True)
    sweep.add_argument("--tf", default="..", metavar="RANGE", help="2.5..2.21, 2.9,2.21 or .. (default: all)")
    sweep.add_argument(
        "--all-patches", action="store_true", help="every patch release, not just each line's newest"
    )
    sweep.add_argument("--probe", metavar="NAME", help="show this probe's outcome in each cell")
    sweep.add_argument("--python", type=options.python_version, metavar="X.Y", help="pin the interpreter")
    sweep.add_argument(
        "--jobs",
        "-j",
        type=options.jobs,
        default=None,
        help=f"runs at once (1 to {options.MAX_JOBS}; default 1, on a swarm its ready nodes)",
    )
    sweep.add_argument("--force", action="store_true")
    return parser


def add_narrow_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-trace",
        dest="trace",
        action="store_false",
        help="narrow without the traced runs (no suspect code: builds and dependency changes only)",
    )


def add_env_options(parser: argparse.ArgumentParser, *, multi: bool = False) -> None:
    parser.add_argument(
        "--backend",
        choices=[*registry.names(), registry.AUTO],
        default="auto" if multi else "venv",
        help="venv (local virtual environments), docker (images from ./Dockerfile), swarm (those images as "
        "services on a Docker Swarm), or auto: containers when a Docker engine answers (venvs for versions "
        "no base image fits), else venvs" + (" (default)" if multi else ""),
    )
    parser.add_argument(
        "--docker-host", metavar="URL", help="swarm: the manager's engine (default: $DOCKER_HOST)"
    )
    parser.add_argument(
        "--registry", metavar="HOST:PORT", help="swarm: the registry the driver pushes images to"
    )
    parser.add_argument(
        "--registry-pull",
        metavar="HOST:PORT",
        help="swarm: the registry's address as the nodes reach it (default: --registry)",
    )
    parser.add_argument("--base-image", metavar="IMAGE", help="docker: a base image of your own with python3")
    parser.add_argument(
        "--keep-containers", action="store_true", help="docker: keep containers for debugging"
    )
    if multi:
        # Variant axes: each combination is searched (or swept) in the same command.
        parser.add_argument("--base", "--bases", default="cpu", help="cpu, cuda or cpu,cuda")
        parser.add_argument(
            "--keras",
            "--variants",
            default="default",
            help="default, legacy or default,legacy (tf-keras, TF 2.16+)",
        )
    else:
        parser.add_argument("--base", choices=[f.value for f in Flavour], default="cpu", help="cpu or cuda")
        parser.add_argument(
            "--keras",
            choices=[k.value for k in KerasVariant],
            default="default",
            help="legacy: TF_USE_LEGACY_KERAS=1 with tf-keras (TF 2.16+)",
        )
    parser.add_argument("--scenario", default=scenario.DEFAULT, help="scenario name or path")
    parser.add_argument(
        "--timeout",
        type=options.timeout,
        default=DEFAULT_TIMEOUT,
        help=f"seconds per run (above 0, at most {options.MAX_TIMEOUT_SECONDS:.0f})",
    )
    parser.add_argument("--pre", action="store_true", help="allow release candidates")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(words)
    if args.command is None:
        parser.print_help()
        return 2
    progress = Progress(quiet=args.quiet)
    handler = {
        "versions": cmd_versions,
        "run": cmd_run,
        "show": cmd_show,
        "lock": cmd_lock,
        "tox-ini": cmd_tox_ini,
        "bisect": cmd_bisect,
        "narrow": cmd_narrow,
        "sweep": cmd_sweep,
        "report": cmd_report,
        "gpu-check": cmd_gpu_check,
    }[args.command]
    try:
        with interrupt.handled():
            code: int = handler(args, progress)
            return code
    except TfbisectError as exc:
        print(f"tfbisect: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: see interrupt.py
        stop = exc if isinstance(exc, interrupt.Interrupted) else interrupt.Interrupted()
        process.kill_all()
        print(
            f"\ntfbisect: stopped by {stop.name}; the runs in progress were killed and every finished "
            f"result is stored under {args.reports}/results.\n"
            f"Resume with (stored results are reused):\n  {printable(resume_command(words))}",
            file=sys.stderr,
        )
        return stop.exit_code
    finally:
        interrupt.reset()


PATH_OPTIONS = ("--scenario", "--reports", "--cache", "--interpreter")


def resume_command(words: Sequence[str]) -> str:
    """The command as it was given, with its paths made absolute so that it works as printed
    from any directory: it resumes, because every finished run is reused."""
    out: list[str] = []
    for i, word in enumerate(words):
        flag, eq, value = word.partition("=")
        if eq and flag in PATH_OPTIONS:
            out.append(f"{flag}={_absolute(value, flag)}")
        elif i > 0 and words[i - 1] in PATH_OPTIONS:
            out.append(_absolute(word, words[i - 1]))
        else:
            out.append(word)
    return shlex.join(["tfbisect", *out])


def _absolute(value: str, flag: str) -> str:
    path = Path(value)
    # A scenario given by name stays a name; every other path becomes absolute.
    named = flag == "--scenario" and not (os.sep in value or path.suffix == ".py" or path.exists())
    return value if named else str(path.resolve())


def emit(text: str) -> None:
    """Print text that carries scenario output: control characters escaped."""
    print(printable(text))


def cmd_versions(args: argparse.Namespace, progress: Progress) -> int:
    if args.save and not args.refresh:
        raise UsageError("--save writes the snapshot read with --refresh.", "add --refresh.")
    if args.refresh:
        with progress.step("catalogue", f"reading {args.index_url}"):
            cat = catalogue.fetch(args.index_url)
        if args.save:
            catalogue.save_snapshot(cat, catalogue.default_snapshot_path())
            progress.say(f"saved the snapshot to {catalogue.default_snapshot_path()}")
    else:
        cat = catalogue.load_snapshot()
    have = set(interpreters.available())
    print(show.versions_table(cat.releases(pre=args.pre, nightly=args.nightly), have))
    window = cat.nightly_window()
    if args.nightly and window is not None:
        print(f"\nnightlies on the index: {window[0]} .. {window[1]} (older ones are gone)")
    print(
        f"\ncatalogue of {cat.fetched_at[:10]}; Pythons here: {' '.join(sorted(have, key=python_sort_key)) or 'none'}"
    )
    return 0


def make_runner(args: argparse.Namespace, progress: Progress) -> Runner:
    """The runner, its backends configured from the parsed options; a named backend is checked
    here (an engine, a swarm manager and its registry that do not answer stop everything)."""
    settings = Settings(
        reports_dir=args.reports,
        cache_dir=args.cache or default_cache_dir(),
        timeout=getattr(args, "timeout", DEFAULT_TIMEOUT),
        force=getattr(args, "force", False),
        options=args,
    )
    runner = Runner(catalogue.load_snapshot(), settings, progress)
    asked = getattr(args, "backend", None)
    if asked is not None and asked != registry.AUTO:
        registry.check(asked, args, progress)
    return runner


def jobs_for(asked: int | None, runner: Runner, choice: registry.Choice, flavour: Flavour) -> int:
    """--jobs, or by default 1; on a backend with a capacity (a swarm: its ready nodes for the
    flavour), that many (n-section with N = the cluster's capacity)."""
    if asked is not None:
        return asked
    capacity = registry.capacity(runner.environment(choice.primary), flavour)
    return 1 if capacity is None else max(1, min(capacity, options.MAX_JOBS))


def axis(text: str, kind: type[Flavour] | type[KerasVariant], flag: str) -> list[Any]:
    values = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            values.append(kind(part))
        except ValueError:
            allowed = ", ".join(m.value for m in kind)
            raise UsageError(
                f"{flag} {part!r} is not one of {allowed}.", f"use {flag} with {allowed}."
            ) from None
    return values


def cmd_gpu_check(args: argparse.Namespace, progress: Progress) -> int:
    """One CUDA image per CUDA set: built (TF's loader check is a build step), then the scenario
    run in it, on the GPU where the engine has the NVIDIA runtime.  One line per image."""
    runner = make_runner(args, progress)
    chosen = scenario.find(args.scenario)
    versions = args.tf or cudasets.one_per_set([r.version for r in runner.catalogue.releases()])
    failed = 0
    for version in versions:
        spec = runner.spec_for(
            version, python=args.python, flavour=Flavour.CUDA, backends=(GPU_CHECK_BACKEND,)
        )
        record = runner.run(spec, chosen).record
        line = show.gpu_check_line(record)
        if not findings.loader_check_passed(record) or (
            args.require_gpu and not str(record.ran_on).startswith("GPU")
        ):
            failed += 1
        emit(line)
    print(f"\ngpu-check: {len(versions) - failed} of {len(versions)} CUDA images passed", file=sys.stderr)
    return 1 if failed else 0


def cmd_run(args: argparse.Namespace, progress: Progress) -> int:
    if args.via and args.interpreter is None:
        raise UsageError(
            "--via tox marks a run in an environment tox made, and none was given.",
            "add --interpreter {envpython} (as tox.ini's tf envs do), or drop --via.",
        )
    if args.interpreter is not None and args.backend != "venv":
        raise UsageError(
            f"--interpreter runs in a given environment; --backend {args.backend} builds its own.",
            "drop one of the two.",
        )
    runner = make_runner(args, progress)
    chosen = scenario.find(args.scenario)
    if args.interpreter is not None:
        # An environment made elsewhere (tox): checked to hold the line's Python and this TF.
        spec = givenenv.spec_for(
            runner.catalogue,
            args.tf,
            args.interpreter,
            pinned=args.python,
            flavour=Flavour(args.base),
            keras=KerasVariant(args.keras),
            pre=args.pre,
        )
        record = runner.run_given(spec, chosen, args.interpreter, givenenv.tags(args.via, args.interpreter))
    else:
        spec = runner.spec_for(
            args.tf,
            python=args.python,
            flavour=Flavour(args.base),
            keras=KerasVariant(args.keras),
            backends=registry.choose(args.backend, progress, args).order,
            pre=args.pre,
        )
        record = runner.run(spec, chosen).record
    path = runner.store.path_for(chosen.name, chosen.sha256, spec)
    emit(show.record_text(record, path))
    if args.via == "tox" and record.outcome.decisive:
        return 0  # for tox, either verdict is an answer; a failure, a timeout or a skip is not
    return RUN_EXIT[record.outcome]


def cmd_show(args: argparse.Namespace, progress: Progress) -> int:
    if args.result is None:
        results = store.ResultStore(args.reports / "results", warn=progress.say)
        found = list(results.records())
        if not found:
            print(f"no stored results under {results.root}; run one with `tfbisect run --tf 2.10`.")
        for path, record in found:
            emit(f"{show.MARK[record.outcome]:<18} {record.spec.label:<44} {path}")
        return 0
    emit(show.record_text(store.load(args.result), args.result))
    return 0


def cmd_lock(args: argparse.Namespace, progress: Progress) -> int:
    cat = catalogue.load_snapshot()
    have = interpreters.available()
    releases = [cat.resolve(v, pre=True) for v in args.tf] if args.tf else cat.releases()
    failed = 0
    for release in releases:
        python = args.python or locks.preferred_python(release, set(have))
        spec = locks.LockSpec(release.version, python, Flavour(args.flavour), KerasVariant(args.keras))
        if args.missing and locks.lock_path(spec).is_file():
            continue
        interpreter = have.get(python)
        try:
            with progress.step(f"TF {release.version} py{python}", "resolving as of the release date"):
                lock = locks.compile_lock(spec, cat, interpreter.path if interpreter else None)
            print(f"{lock.path}  (exclude-newer {lock.exclude_newer})")
        except TfbisectError as exc:
            failed += 1
            print(f"tfbisect: {exc}", file=sys.stderr)
    return 1 if failed else 0


def cmd_tox_ini(args: argparse.Namespace, progress: Progress) -> int:
    cat = catalogue.load_snapshot()
    print(f"env_list = {toxini.env_list(cat)}\n")
    print(toxini.render(cat), end="")
    return 0


def cmd_bisect(args: argparse.Namespace, progress: Progress) -> int:
    bisect_dir = args.reports / "bisect"
    if args.action == "log":
        path = args.logfile or newest(bisect_dir)
        emit(show.bisect_log_text(bisectlog.load_report(path)))
        return 0
    runner = make_runner(args, progress)
    chosen = scenario.find(args.scenario)
    flavours = axis(args.base, Flavour, "--base")
    variants = axis(args.keras, KerasVariant, "--keras")
    choice = registry.choose(args.backend, progress, args)
    progress.say(f"bisecting {chosen.name} in {choice.describe()}")
    status = 0
    for flavour, keras in itertools.product(flavours, variants):
        request = bisection.BisectRequest(
            scenario=chosen,
            good=args.good,
            bad=args.bad,
            probe=args.probe,
            flavour=flavour,
            keras=keras,
            backend=choice.primary,
            venv_fallback=choice.fallback,
            python=args.python,
            jobs=jobs_for(args.jobs, runner, choice, flavour),
            prefetch=args.prefetch,
            pre=args.pre,
            confirm=args.confirm,
            term_old=args.term_old,
            term_new=args.term_new,
            timeout=args.timeout if args.timeout != DEFAULT_TIMEOUT else None,
            regress=args.regress,
        )
        log_path = bisect_dir / bisection.log_name(request, bisect_dir)  # created exclusively
        try:
            report = bisection.Bisection(request, runner, progress, log_path).run()
        except KeyboardInterrupt:
            print(f"tfbisect: the sequence so far: tfbisect bisect log {log_path}", file=sys.stderr)
            raise
        emit(show.bisect_text(report, log_path))
        if args.narrow and builds.applicable(report) is None:
            status = max(status, run_narrowing(report, request, runner, progress, log_path, trace=args.trace))
        print("files written:")
        print(f"  {log_path}  (the bisection log)")
        for path in result_paths(report, runner, chosen):
            print(f"  {path}")
        if report.status not in (bisectlog.Status.FOUND, bisectlog.Status.AMBIGUOUS):
            status = max(status, 1)
    if args.report:
        write_reports(args.reports, chosen, args.reports)
    return status


def run_narrowing(
    report: bisectlog.BisectReport,
    request: bisection.BisectRequest,
    runner: Runner,
    progress: Progress,
    log_path: Path,
    *,
    trace: bool,
) -> int:
    """Narrow and print; the exit status: 0, 1 when the builds between were not decisive, 13
    (TRACE) when the traced runs failed.  A narrowing that cannot go on says why and keeps the
    bisection's answer (and everything it finished) in the log."""
    try:
        seams = wiring.runner_seams(report, request, runner, progress, log_path, force=runner.settings.force)
        options = narrower.NarrowOptions(trace=trace)
        found = narrower.Narrower(report, request, seams, progress, log_path, options).run()
    except KeyboardInterrupt:
        print(
            f"tfbisect: the narrowing so far is in {log_path}; to finish only the narrowing (stored "
            f"runs and traces are reused): tfbisect narrow {shlex.quote(str(log_path.resolve()))}",
            file=sys.stderr,
        )
        raise
    except TfbisectError as exc:
        print(f"tfbisect: the narrowing stopped: {printable(str(exc))}", file=sys.stderr)
        emit(show.narrowing_text(report, log_path))
        return exc.exit_code
    emit(show.narrowing_text(report, log_path))
    if found.trace is not None and found.trace.error:
        return int(ExitCode.TRACE)
    return 0 if found.status in (NarrowStatus.NARROWED, NarrowStatus.NOTHING_FINER) else 1


def cmd_narrow(args: argparse.Namespace, progress: Progress) -> int:
    log_path = args.logfile or newest(args.reports / "bisect")
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
    name = str(args.scenario or report.request.get("scenario_argument") or report.request.get("scenario", ""))
    chosen = scenario.find(name)
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
    # The bisection's own settings: its backend (a swarm's address options need it) and timeout.
    args.keep_containers, args.backend = False, request.backend
    if args.timeout is None:
        args.timeout = request.timeout if request.timeout is not None else DEFAULT_TIMEOUT
    runner = make_runner(args, progress)
    status = run_narrowing(report, request, runner, progress, log_path, trace=args.trace)
    print("files written:")
    print(f"  {log_path}  (the bisection log, with the narrowing)")
    if log_path.with_suffix(".traces").is_dir():
        print(f"  {log_path.with_suffix('.traces')}/  (the traces the suspects were ranked from)")
    if args.report:
        write_reports(args.reports, chosen, args.reports, bisect=log_path)
    return status


def result_paths(report: bisectlog.BisectReport, runner: Runner, chosen: scenario.Scenario) -> list[Path]:
    """The stored results behind the steps of a bisection."""
    keys = {step.key for step in report.steps}
    return [
        path
        for path, record in runner.store.records(chosen.name)
        if record.spec.key in keys and record.scenario_sha256 == chosen.sha256
    ]


def newest(directory: Path) -> Path:
    found = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UsageError(f"There is no bisection log under {directory}.", "run `tfbisect bisect` first.")
    return found[-1]


def cmd_sweep(args: argparse.Namespace, progress: Progress) -> int:
    runner = make_runner(args, progress)
    chosen = scenario.find(args.scenario)
    releases = sweep.parse_range(args.tf, runner.catalogue, all_patches=args.all_patches, pre=args.pre)
    choice = registry.choose(args.backend, progress, args)
    cells = sweep.run_sweep(
        runner,
        chosen,
        releases,
        axis(args.base, Flavour, "--base"),
        axis(args.keras, KerasVariant, "--keras"),
        choice.order,
        jobs_for(args.jobs, runner, choice, Flavour.CPU),
        args.python,
    )
    emit(show.sweep_text(cells, args.probe))
    return 0


def cmd_report(args: argparse.Namespace, progress: Progress) -> int:
    name = args.scenario
    if name is None and args.bisect is not None:
        name = report_scenario(args.bisect)
    chosen = scenario.find(name or scenario.DEFAULT)
    target = github.Target.parse(args.post) if args.post else None
    # No token: fail before any work, saying that nothing was posted and no file was written.
    token = github.token_from_env() if target else ""
    out = args.out or args.reports
    summary = write_reports(args.reports, chosen, out, bisect=args.bisect)
    if target is not None:
        # A failed post says so (PostError, exit 11) and where the written summary is.
        url = github.post_comment(target, summary, token, api=args.api_url, summary_path=out / "summary.md")
        print(f"posted the summary: {url}")
    return 0


def report_scenario(log: Path) -> str | None:
    """The scenario a bisection log is about (for `report --bisect LOG` without --scenario)."""
    try:
        found = bisectlog.load_report(log).request.get("scenario")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # collect() says what is wrong with the log
    return str(found) if found else None


def write_reports(reports: Path, chosen: scenario.Scenario, out: Path, *, bisect: Path | None = None) -> str:
    """Write the HTML report, the Markdown summary, the matrix PNG and JSON; returns the summary.

    `bisect`: the bisection log the headline answers (default: the scenario's newest)."""
    data = reportdata.collect(store.ResultStore(reports / "results"), chosen, reports / "bisect", bisect)
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "report.html": htmlreport.render(data),
        "summary.md": mdsummary.render(data),
        "matrix.json": reportdata.dump(data),
    }
    for name, text in written.items():
        write_text_atomic(out / name, text)
    matrixpng.render(data, out / "matrix.png")
    emit(f"{data.scenario}: {data.headline()}")
    note = data.choice_note()
    if note:
        emit(note)
    print("report files written:")
    for name in (*written, "matrix.png"):
        print(f"  {out / name}")
    return written["summary.md"]
