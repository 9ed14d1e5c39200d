"""The command line: arguments read into each command's options, the command called (the
commands live in `tfbisect.commands`), its result printed; every known failure is a two-part
message."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tfbisect import toxini
from tfbisect.cli_parser import build_parser
from tfbisect.commands import (
    bisect,
    cache,
    gpu_check,
    lock,
    narrow,
    new,
    report,
    run,
    show,
    sweep,
    tox_ini,
    versions,
)
from tfbisect.commands.narrow import Narrowed
from tfbisect.commands.report import Reports
from tfbisect.core import argv as cmdline
from tfbisect.core import interrupt
from tfbisect.core.errors import ExitCode, MachineFaultError, TfbisectError, as_machine_fault
from tfbisect.core.progress import Progress
from tfbisect.core.spec import Flavour, KerasVariant
from tfbisect.core.textsafe import printable
from tfbisect.core.versions import python_sort_key
from tfbisect.envs import cache as budget
from tfbisect.platform import process
from tfbisect.report import console, findings
from tfbisect.report import show as shown

__all__ = ["build_parser", "main", "options_for", "resume_command"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(words)
    if args.command is None:
        parser.print_help()
        return ExitCode.USAGE
    progress = Progress(quiet=args.quiet)
    options = options_for(args)
    # What a driver killed with SIGKILL (an OOM-killed CI job) left behind: its runs' processes
    # (noted in a state file) and its temporary folders.
    process.reap_orphans()
    process.sweep_temporary()
    try:
        if args.cache_budget:  # the backends read it before each preparation (envs/cache.py)
            os.environ[budget.BUDGET_VARIABLE] = str(budget.parse_size(args.cache_budget))
        with interrupt.handled():
            return COMMANDS[args.command](options, progress)
    except (MachineFaultError, OSError) as exc:
        return _machine_fault(exc, words, options, args.reports)
    except TfbisectError as exc:
        print(f"tfbisect: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: see interrupt.py
        for note in getattr(exc, "__notes__", ()):  # where the command's work so far is
            print(note, file=sys.stderr)
        stop = exc if isinstance(exc, interrupt.Interrupted) else interrupt.Interrupted()
        process.kill_all()
        print(
            f"\ntfbisect: stopped by {stop.name}; the runs in progress were killed and every finished "
            f"result is stored under {args.reports}/results.\n"
            f"Resume with (stored results are reused):\n  {printable(resume_command(words, options))}",
            file=sys.stderr,
        )
        return stop.exit_code
    finally:
        interrupt.reset()
        process.reset_abandoned()


def _machine_fault(exc: OSError | MachineFaultError, words: list[str], options: object, reports: Path) -> int:
    """The machine failed under the command (a full or read-only disk, an I/O error): never a
    verdict nor a traceback, but what failed, what to do and how to resume."""
    fault = as_machine_fault(exc)
    process.abandon(fault)  # what still runs (a prefetch, a round's other runs) ends, unjudged
    print(f"tfbisect: {printable(str(fault))}", file=sys.stderr)
    for note in getattr(exc, "__notes__", ()):  # where the command's work so far is
        print(printable(note), file=sys.stderr)
    print(
        f"tfbisect: every finished result is kept under {reports}/results; nothing was judged by this fault.\n"
        f"Resume with (stored results are reused):\n  {printable(resume_command(words, options))}",
        file=sys.stderr,
    )
    return ExitCode.MACHINE


# -- arguments -> options ------------------------------------------------------------------


def options_for(args: argparse.Namespace) -> Any:
    """The command's typed options from the parsed arguments."""
    return OPTIONS[args.command](args)


def _common(args: argparse.Namespace) -> cmdline.Common:
    return cmdline.Common(
        reports=args.reports, cache=args.cache, quiet=args.quiet, cache_budget=args.cache_budget
    )


def _env(args: argparse.Namespace) -> cmdline.EnvOptions:
    names = [f.name for f in dataclasses.fields(cmdline.EnvOptions) if f.name != "bad_if_raises"]
    given = {name: getattr(args, name) for name in names}
    return cmdline.EnvOptions(**given, bad_if_raises=tuple(args.bad_if_raises or ()))


def _fields(kind: type[Any], args: argparse.Namespace, **given: Any) -> Any:
    """`kind` from the arguments of the same names, and `given`."""
    names = [f.name for f in dataclasses.fields(kind) if f.name not in given]
    return kind(**{name: getattr(args, name) for name in names}, **given)


OPTIONS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "versions": lambda a: _fields(versions.VersionsOptions, a),
    "run": lambda a: _fields(cmdline.RunOptions, a, env=_env(a), common=_common(a)),
    "show": lambda a: show.ShowOptions(a.result, _common(a)),
    "lock": lambda a: lock.LockOptions(
        tuple(a.tf or ()), a.python, Flavour(a.flavour), KerasVariant(a.keras), a.missing
    ),
    "tox-ini": lambda a: tox_ini.ToxIniOptions(),
    "bisect": lambda a: _fields(cmdline.BisectOptions, a, env=_env(a), common=_common(a)),
    "narrow": lambda a: _fields(
        cmdline.NarrowOptions, a, bad_if_raises=tuple(a.bad_if_raises or ()), common=_common(a)
    ),
    "sweep": lambda a: _fields(cmdline.SweepOptions, a, env=_env(a), common=_common(a)),
    "report": lambda a: _fields(report.ReportOptions, a, common=_common(a)),
    "gpu-check": lambda a: _fields(gpu_check.GpuCheckOptions, a, tf=tuple(a.tf or ()), common=_common(a)),
    "new": lambda a: _fields(new.NewOptions, a, write_as=new.Kind(a.write_as) if a.write_as else None),
    "cache": lambda a: _fields(cache.CacheOptions, a, common=_common(a)),
}


# -- the resume command ----------------------------------------------------------------------

PATH_OPTIONS = ("--scenario", "--script", "--reports", "--cache", "--interpreter")


def resume_command(words: Sequence[str], options: object = None) -> str:
    """The command that resumes an interrupted one, from any directory (every finished run is
    reused): a request's options written back without --force, which would run them all again;
    for the other commands, the words as given with their paths made absolute."""
    if isinstance(
        options, cmdline.RunOptions | cmdline.SweepOptions | cmdline.BisectOptions | cmdline.NarrowOptions
    ):
        return shlex.join(dataclasses.replace(options, force=False).to_argv())
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
    # A scenario given by name stays a name; every other path becomes absolute.
    return cmdline.scenario_word(value) if flag == "--scenario" else str(Path(value).resolve())


# -- commands and their printing -------------------------------------------------------------


def emit(text: str) -> None:
    """Print text that carries scenario output: control characters escaped."""
    print(printable(text))


def cmd_versions(options: versions.VersionsOptions, progress: Progress) -> int:
    found = versions.versions(options, progress)
    print(shown.versions_table(found.releases, set(found.pythons)))
    if found.nightly_window is not None:
        first, last = found.nightly_window
        print(f"\nnightlies on the index: {first} .. {last} (older ones are gone)")
    pythons = " ".join(sorted(found.pythons, key=python_sort_key)) or "none"
    print(f"\ncatalogue of {found.fetched_at[:10]}; Pythons here: {pythons}")
    return found.exit_code


def cmd_run(options: cmdline.RunOptions, progress: Progress) -> int:
    done = run.run(options, progress)
    emit(shown.record_text(done.record, done.path))
    return done.exit_code


def cmd_show(options: show.ShowOptions, progress: Progress) -> int:
    found = show.show(options, progress)
    if found.shown is not None:
        emit(shown.record_text(*found.shown))
        return found.exit_code
    if not found.listed:
        print(f"no stored results under {found.root}; run one with `tfbisect run --tf 2.10`.")
    for path, record in found.listed:
        emit(f"{shown.MARK[record.outcome]:<18} {record.spec.label:<44} {path}")
    return found.exit_code


def cmd_lock(options: lock.LockOptions, progress: Progress) -> int:
    def done(one: lock.Locked) -> None:
        if one.error is not None:
            print(f"tfbisect: {one.error}", file=sys.stderr)
        else:
            print(f"{one.path}  (exclude-newer {one.exclude_newer})")

    return lock.lock(options, progress, done).exit_code


def cmd_tox_ini(options: tox_ini.ToxIniOptions, progress: Progress) -> int:
    found = tox_ini.tox_ini(options, progress)
    print(f"env_list = {toxini.env_list(found.catalogue)}\n")
    print(toxini.render(found.catalogue), end="")
    return found.exit_code


def cmd_bisect(options: cmdline.BisectOptions, progress: Progress) -> int:
    if options.action == "log":
        found = bisect.bisect_log(options)
        emit(shown.bisect_log_text(found.report))
        return found.exit_code
    done = bisect.bisect(options, progress, print_bisect_event)
    print_reports(done.reports)
    emit(findings.time_line(done.spent))
    return done.exit_code


def print_bisect_event(event: bisect.Event) -> None:
    if isinstance(event, bisect.Bisected):
        emit(shown.bisect_text(event.report, event.log_path))
    elif isinstance(event, Narrowed):
        print_narrowed(event)
    else:
        print("files written:")
        print(f"  {event.log_path}  (the bisection log)")
        for path in event.results:
            print(f"  {path}")


def print_narrowed(narrowed: Narrowed) -> None:
    if narrowed.stopped:
        print(f"tfbisect: the narrowing stopped: {printable(narrowed.stopped)}", file=sys.stderr)
    emit(shown.narrowing_text(narrowed.report, narrowed.log_path))


def cmd_narrow(options: cmdline.NarrowOptions, progress: Progress) -> int:
    def done(narrowed: Narrowed) -> None:
        print_narrowed(narrowed)
        print("files written:")
        print(f"  {narrowed.log_path}  (the bisection log, with the narrowing)")
        if narrowed.traces is not None:
            print(f"  {narrowed.traces}/  (the traces the suspects were ranked from)")

    found = narrow.narrow(options, progress, done)
    print_reports(found.reports)
    if found.spent is not None:
        emit(findings.time_line(found.spent))
    return found.exit_code


def cmd_sweep(options: cmdline.SweepOptions, progress: Progress) -> int:
    found = sweep.sweep(options, progress)
    emit(shown.sweep_text(found.cells, found.probe))
    if found.spent is not None:
        emit(findings.time_line(found.spent))
    return found.exit_code


def cmd_report(options: report.ReportOptions, progress: Progress) -> int:
    found = report.report(options, progress)
    print_reports(found.reports)
    if found.posted is not None:
        print(f"posted the summary: {found.posted}")
    return found.exit_code


def print_reports(reports: Reports | None) -> None:
    if reports is None:
        return
    # One line each: a term or scenario text with a newline must not forge a console line.
    print(printable(reports.headline, newlines=False))
    if reports.note:
        print(printable(reports.note, newlines=False))
    print("report files written:")
    for path in reports.files:
        print(f"  {path}")


def cmd_gpu_check(options: gpu_check.GpuCheckOptions, progress: Progress) -> int:
    """One line per CUDA image as its check ends, then how many passed."""
    found = gpu_check.gpu_check(options, progress, lambda one: emit(shown.gpu_check_line(one.record)))
    total = len(found.checked)
    print(f"\ngpu-check: {found.passed} of {total} CUDA images passed", file=sys.stderr)
    return found.exit_code


def cmd_new(options: new.NewOptions, progress: Progress) -> int:
    """What was written, what the issue's text says about versions, and what to run next."""
    done = new.new(options)
    emit(console.new_text(done, scenario=done.kind is new.Kind.SCENARIO))
    return done.exit_code


def cmd_cache(options: cache.CacheOptions, progress: Progress) -> int:
    found = cache.cache_command(options, progress)
    if options.action == "list":
        emit(console.cache_list_text(found.inventory))
    else:
        notes = found.inventory.notes
        emit(console.cache_prune_text(found.planned, found.freed, notes, dry_run=options.dry_run))
    return found.exit_code


COMMANDS: dict[str, Callable[[Any, Progress], int]] = {
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
    "new": cmd_new,
    "cache": cmd_cache,
}
