"""One command-line builder: every option of `run`, `sweep`, `bisect` and `narrow`, generated
from the parser itself, survives parse -> options -> to_argv -> parse; so an option added to
the parser and forgotten by `core/argv.py` fails here."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tfbisect.cli import build_parser, options_for, resume_command
from tfbisect.commands.bisect import request_for
from tfbisect.core import argv
from tfbisect.core.scenario import find
from tfbisect.core.spec import Flavour, KerasVariant
from tfbisect.envs.registry import Choice
from tfbisect.options import known_pythons
from tfbisect.search.bisection import BisectRequest

from conftest import ROOT

REQUEST_COMMANDS = ("run", "sweep", "bisect", "narrow")
SKIPPED = (argparse._HelpAction, argparse._VersionAction)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the parser has no subcommands")


def scalar(action: argparse.Action, where: Path) -> str:
    """A value for one option that is not its default (and that its type accepts)."""
    if action.choices:
        return next(str(c) for c in action.choices if c != action.default)
    if action.type is Path:
        return str(where / action.dest)
    if action.dest in ("scenario", "script"):
        script = where / "mine.py"
        script.write_text("")
        return str(script)
    special = {
        "python": known_pythons()[-1],
        "jobs": "3",
        "prefetch": "5",
        "timeout": "120.5",
        "prove": "3",
        "prove_budget": "12",
    }
    return special.get(action.dest, f"v-{action.dest}")


def words_for(action: argparse.Action, where: Path) -> list[str]:
    """The words that set one action to a value other than its default."""
    if isinstance(action, argparse.BooleanOptionalAction):
        return [next(s for s in action.option_strings if s.startswith("--no-"))]
    if action.nargs == 0:  # store_true, store_false
        return [action.option_strings[0]]
    if not action.option_strings:
        return [scalar(action, where)]
    flag = action.option_strings[0]
    if isinstance(action, argparse._AppendAction):
        return [flag, "v-one", flag, "v-two"]
    if action.nargs == "*":
        return [flag, "v-one", "v-two"]
    return [flag, scalar(action, where)]


def option_sets(name: str, where: Path) -> Iterator[list[str]]:
    """The command bare, with each option alone, and with every option at once."""
    parser = build_parser()
    sub = subparsers(parser)[name]
    actions = [a for a in sub._actions if not isinstance(a, SKIPPED)]
    required = [w for a in actions if a.required for w in words_for(a, where)]
    optional = [a for a in actions if a.option_strings and not a.required]
    positional = [w for a in actions if not a.option_strings for w in words_for(a, where)]
    common = ["--reports", str(where / "rep"), "--cache", str(where / "cache"), "-q"]
    yield [name, *required]
    for action in optional:
        yield [name, *required, *words_for(action, where)]
    # Of options that exclude each other (--scenario, --script), the last one of each group.
    excluded = {id(a) for group in sub._mutually_exclusive_groups for a in group._group_actions[:-1]}
    together = [a for a in optional if id(a) not in excluded]
    yield [*common, name, *positional, *required, *(w for a in together for w in words_for(a, where))]


def test_the_generator_sees_every_option_of_the_request_commands(tmp_path: Path) -> None:
    """A check of the check: the sets cover each command's option strings."""
    for name in REQUEST_COMMANDS:
        seen = {w for words in option_sets(name, tmp_path) for w in words if w.startswith("-")}
        sub = subparsers(build_parser())[name]
        for action in sub._actions:
            if action.option_strings and not isinstance(action, SKIPPED):
                assert seen & set(action.option_strings), (name, action.option_strings)


@pytest.mark.parametrize("name", REQUEST_COMMANDS)
def test_every_option_round_trips_through_to_argv(name: str, tmp_path: Path) -> None:
    parser = build_parser()
    for words in option_sets(name, tmp_path):
        args = parser.parse_args(words)
        options = options_for(args)
        again = options.to_argv()
        assert again[0] == "tfbisect"
        back = parser.parse_args(again[1:])
        assert vars(back) == vars(args), (words, again)
        assert options_for(back) == options
        assert options_for(back).to_argv() == again  # one way to write each command


def test_the_bisect_command_stored_in_the_log_keeps_no_narrow_and_no_trace() -> None:
    """The bug: `bisect … --no-narrow` stored a command without --no-narrow, so repeating it ran
    the narrowing that was turned off (and, with no --probe, exited 13)."""
    parser = build_parser()
    for flags, narrow, trace in (
        (["--no-narrow"], False, True),
        (["--no-trace"], True, False),
        (["--no-narrow", "--no-trace"], False, False),
        ([], True, True),
    ):
        options = options_for(parser.parse_args(["bisect", "--backend", "venv", *flags]))
        request = request_for(
            options,
            find("gradient_mismatch"),
            (Flavour.CPU, KerasVariant.DEFAULT),
            Choice(("venv",)),
            1,
        )
        assert (request.narrow, request.trace) == (narrow, trace)
        command = request.command()
        assert ("--no-narrow" in shlex.split(command)) is not narrow
        repeated = parser.parse_args(shlex.split(command)[1:])
        assert (repeated.narrow, repeated.trace) == (narrow, trace)
        # ... and the log's request keeps them too (what `tfbisect narrow LOG` reads back)
        kept = BisectRequest.from_record(request.to_record(), request.scenario)
        assert (kept.narrow, kept.trace) == (narrow, trace)


def test_a_request_logged_before_the_narrowing_options_reads_as_narrowing_on() -> None:
    record = BisectRequest(scenario=find("gradient_mismatch")).to_record()
    del record["narrow"], record["trace"]
    kept = BisectRequest.from_record(record, find("gradient_mismatch"))
    assert (kept.narrow, kept.trace) == (True, True)


@pytest.mark.parametrize("name", REQUEST_COMMANDS)
def test_the_resume_command_never_carries_force(name: str, tmp_path: Path) -> None:
    parser = build_parser()
    for words in option_sets(name, tmp_path):
        args = parser.parse_args(words)
        resumed = shlex.split(resume_command(words, options_for(args)))
        assert "--force" not in resumed
        back = parser.parse_args(resumed[1:])
        assert vars(back) == vars(args) | {"force": False}


def test_numbers_read_back_exactly() -> None:
    for seconds in (900.0, 120.5, 0.001, 604800.0, 1234567.0, 1 / 3):
        assert float(argv.number(seconds)) == seconds
    assert argv.number(120.0) == "120" and argv.number(0.5) == "0.5"


def test_no_integer_exit_codes_in_the_command_line_and_the_commands() -> None:
    """Exit codes come from core/errors.ExitCode only: no `return 1` in cli.py (whose commands
    return exit codes), no `exit_code=2`, `ExitCode(1)`, `max(status, 1)` or `sys.exit(0)` in
    cli.py, cli_parser.py or commands/ (whose functions return results, so a `return 1` there
    is a count, as in jobs_for)."""
    tfbisect = ROOT / "bisect" / "tfbisect"
    anywhere = re.compile(
        r"\bexit_code\s*(:\s*\w+\s*)?=\s*-?\d|\bExitCode\(\s*-?\d|\bmax\([^)]*,\s*-?\d+\s*\)|"
        r"\b(status|code|DONE|FAILED)\s*=\s*-?\d|\bsys\.exit\(\s*-?\d|\bint\(ExitCode"
    )
    in_cli = re.compile(anywhere.pattern + r"|\breturn\s+-?\d")
    files = [tfbisect / "cli.py", tfbisect / "cli_parser.py", *sorted((tfbisect / "commands").glob("*.py"))]
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if (in_cli if path.name.startswith("cli") else anywhere).search(line)
    ]
    assert found == []
    assert in_cli.search("        return 0") and anywhere.search("status = max(status, 1)")
    assert anywhere.search("exit_code: ExitCode = 0") and not anywhere.search("return DONE")
