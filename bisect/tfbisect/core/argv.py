"""The one builder of tfbisect command lines: the options of `run`, `sweep`, `bisect` and
`narrow` as typed values, and `to_argv` that writes them back as the parser reads them.

Every command tfbisect prints (a stored run's reproduce command, a bisection's command, the
resume line after Ctrl-C) is one of these turned back into words, so a command runs as printed.
A test walks the parser's options and round-trips each, so a new option cannot be forgotten.
It sits in `core/` because the searches and runs that print commands import it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfbisect.core import scenario

DEFAULT_TIMEOUT = 900.0  # seconds per run, the default of --timeout
DEFAULT_PREFETCH = 2
DEFAULT_PROVE = 10  # the top suspects a proof puts back one by one (--prove; 0: no proof)
DEFAULT_PROVE_BUDGET = 30  # the patched runs a proof may make (--prove-budget)
MAX_JOBS = 64  # the most --jobs (and --prefetch) allow

# One option as the builder writes it: None or False leave it out, True is a bare flag, a
# sequence repeats it once per value.
Value = str | int | float | bool | Path | Sequence[str] | None


def number(value: float) -> str:
    """A number of seconds as short as it reads back exactly (900, 120.5)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def scenario_word(value: str) -> str:
    """A scenario given by name stays a name (found from any directory); a path becomes absolute."""
    path = Path(value)
    named = not (os.sep in value or path.suffix == ".py" or path.exists())
    return value if named else str(path.resolve())


def naming(chosen: scenario.Scenario, argument: str) -> dict[str, Any]:
    """The EnvOptions fields that name a scenario: `--script PATH` and the harness options that
    change its verdict for a plain script, else `--scenario` as `argument` says it."""
    if chosen.script:
        return {"script": str(chosen.path), "bad_if_raises": chosen.bad_if_raises}
    return {"scenario": argument}


def unless(value: Value, default: Value) -> Value:
    """The value, or None (left out) where it is the parser's default."""
    return None if value == default else value


def command_line(words: Iterable[str], options: Iterable[tuple[str, Value]]) -> list[str]:
    """`tfbisect WORDS OPTIONS`: each option written the way argparse reads it back; paths
    absolute, so that the command works as printed from any directory."""
    out = ["tfbisect", *words]
    for flag, value in options:
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, Path):
            out += [flag, str(value.resolve())]
        elif isinstance(value, float):
            out += [flag, number(value)]
        elif isinstance(value, str) and flag == "--scenario":
            out += [flag, scenario_word(value)]
        elif isinstance(value, str) and flag == "--script":
            out += [flag, str(Path(value).resolve())]
        elif isinstance(value, int | str):
            out += [flag, str(value)]
        else:
            out += [part for item in value for part in (flag, item)]
    return out


@dataclass(frozen=True)
class Common:
    """The global options: before the command, or after it."""

    reports: Path = Path("reports")
    cache: Path | None = None
    quiet: bool = False
    cache_budget: str | None = None  # --cache-budget as given (a resumed command keeps the limit)

    def options(self) -> list[tuple[str, Value]]:
        return [
            ("--reports", unless(self.reports, Path("reports"))),
            ("--cache", self.cache),
            ("--cache-budget", self.cache_budget),
            ("-q", self.quiet),
        ]

    def words(self, *command: str) -> list[str]:
        """The global options, then the command's words (argparse reads globals first)."""
        return [*command_line([], self.options())[1:], *command]


@dataclass(frozen=True)
class EnvOptions:
    """Where and how runs happen: the options `run`, `sweep` and `bisect` share."""

    backend: str = "venv"
    docker_host: str | None = None
    registry: str | None = None
    registry_pull: str | None = None
    base_image: str | None = None
    keep_containers: bool = False
    base: str = "cpu"  # `run`: one flavour; `sweep`, `bisect`: a comma-separated list
    keras: str = "default"
    scenario: str = scenario.DEFAULT
    timeout: float = DEFAULT_TIMEOUT
    pre: bool = False
    script: str | None = None  # a plain script instead of the scenario (its path)
    bad_if_raises: tuple[str, ...] = ()  # with script: exceptions that are the bug
    trust_script: bool = False  # run a script marked as a stranger's code outside containers

    def scenario_options(self) -> list[tuple[str, Value]]:
        """The scenario, or the script and the harness options that change its verdict."""
        named = ("--script", self.script) if self.script is not None else ("--scenario", self.scenario)
        return [
            named,
            ("--bad-if-raises", self.bad_if_raises),
            ("--trust-script", self.trust_script),
        ]

    def swarm_options(self) -> list[tuple[str, Value]]:
        return [
            ("--docker-host", self.docker_host),
            ("--registry", self.registry),
            ("--registry-pull", self.registry_pull),
            ("--base-image", self.base_image),
            ("--keep-containers", self.keep_containers),
        ]


@dataclass(frozen=True)
class RunOptions:
    tf: str
    env: EnvOptions = EnvOptions()
    python: str | None = None
    force: bool = False
    interpreter: Path | None = None
    via: str | None = None
    common: Common = Common()

    def to_argv(self) -> list[str]:
        env = self.env
        return command_line(
            self.common.words("run"),
            [
                ("--tf", self.tf),
                ("--python", self.python),
                ("--backend", env.backend),  # explicit: `run` on another machine may differ
                ("--base", unless(env.base, "cpu")),
                ("--keras", unless(env.keras, "default")),
                *env.scenario_options(),
                ("--timeout", unless(env.timeout, DEFAULT_TIMEOUT)),
                ("--pre", env.pre),
                *env.swarm_options(),
                ("--force", self.force),
                ("--interpreter", self.interpreter),
                ("--via", self.via),
            ],
        )


@dataclass(frozen=True)
class SweepOptions:
    env: EnvOptions = EnvOptions(backend="auto")
    tf: str = ".."
    all_patches: bool = False
    probe: str | None = None
    python: str | None = None
    jobs: int | None = None
    force: bool = False
    common: Common = Common()

    def to_argv(self) -> list[str]:
        env = self.env
        return command_line(
            self.common.words("sweep"),
            [
                *env.scenario_options(),
                ("--tf", unless(self.tf, "..")),
                ("--base", unless(env.base, "cpu")),
                ("--keras", unless(env.keras, "default")),
                ("--backend", env.backend),
                ("--python", self.python),
                ("--jobs", self.jobs),
                ("--all-patches", self.all_patches),
                ("--probe", self.probe),
                ("--pre", env.pre),
                ("--timeout", unless(env.timeout, DEFAULT_TIMEOUT)),
                *env.swarm_options(),
                ("--force", self.force),
            ],
        )


@dataclass(frozen=True)
class BisectOptions:
    env: EnvOptions = EnvOptions(backend="auto")
    action: str | None = None  # "log": print a bisection's sequence
    logfile: Path | None = None
    good: str | None = None
    bad: str | None = None
    probe: str | None = None
    python: str | None = None
    prefetch: int = DEFAULT_PREFETCH
    run_ahead: bool = True
    jobs: int | None = None
    confirm: bool = False
    regress: str = "state"
    term_old: str | None = None
    term_new: str | None = None
    force: bool = False
    report: bool = False
    trace: bool = True
    narrow: bool = True
    prove: int = DEFAULT_PROVE
    prove_budget: int = DEFAULT_PROVE_BUDGET
    common: Common = Common()

    def to_argv(self) -> list[str]:
        env = self.env
        positional = [self.action] if self.action else []
        positional += [str(self.logfile.resolve())] if self.logfile else []
        return command_line(
            self.common.words("bisect", *positional),
            [
                *env.scenario_options(),
                ("--good", self.good),
                ("--bad", self.bad),
                ("--probe", self.probe),
                ("--base", unless(env.base, "cpu")),
                ("--keras", unless(env.keras, "default")),
                # Always explicit: the default (auto) would pick containers once an engine answers.
                ("--backend", env.backend),
                ("--python", self.python),
                ("--jobs", self.jobs),
                ("--pre", env.pre),
                ("--confirm", self.confirm),
                ("--term-old", self.term_old),
                ("--term-new", self.term_new),
                ("--timeout", unless(env.timeout, DEFAULT_TIMEOUT)),
                ("--regress", unless(self.regress, "state")),
                ("--prefetch", unless(self.prefetch, DEFAULT_PREFETCH)),
                ("--no-run-ahead", not self.run_ahead),
                *env.swarm_options(),
                ("--force", self.force),
                ("--report", self.report),
                ("--no-trace", not self.trace),
                ("--no-narrow", not self.narrow),
                ("--prove", unless(self.prove, DEFAULT_PROVE)),
                ("--prove-budget", unless(self.prove_budget, DEFAULT_PROVE_BUDGET)),
            ],
        )


@dataclass(frozen=True)
class NarrowOptions:
    logfile: Path | None = None
    force: bool = False
    timeout: float | None = None  # None: the bisection's
    scenario: str | None = None  # None: as the bisection was given it
    docker_host: str | None = None
    registry: str | None = None
    registry_pull: str | None = None
    base_image: str | None = None
    report: bool = False
    trace: bool = True
    script: str | None = None  # None: as the bisection was given it
    bad_if_raises: tuple[str, ...] = ()  # (): as the bisection was given them
    trust_script: bool = False
    prove: int = DEFAULT_PROVE
    prove_budget: int = DEFAULT_PROVE_BUDGET
    common: Common = Common()

    def to_argv(self) -> list[str]:
        positional = [str(self.logfile.resolve())] if self.logfile else []
        return command_line(
            self.common.words("narrow", *positional),
            [
                ("--scenario", self.scenario),
                ("--script", self.script),
                ("--bad-if-raises", self.bad_if_raises),
                ("--trust-script", self.trust_script),
                ("--timeout", self.timeout),
                ("--docker-host", self.docker_host),
                ("--registry", self.registry),
                ("--registry-pull", self.registry_pull),
                ("--base-image", self.base_image),
                ("--force", self.force),
                ("--report", self.report),
                ("--no-trace", not self.trace),
                ("--prove", unless(self.prove, DEFAULT_PROVE)),
                ("--prove-budget", unless(self.prove_budget, DEFAULT_PROVE_BUDGET)),
            ],
        )
