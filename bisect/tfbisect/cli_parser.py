"""The command line's grammar: argparse's parser, one small function per subcommand."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from tfbisect import __version__, options
from tfbisect.core import catalogue, scenario
from tfbisect.core.argv import DEFAULT_PROVE, DEFAULT_PROVE_BUDGET, DEFAULT_TIMEOUT
from tfbisect.core.spec import Flavour, KerasVariant
from tfbisect.envs import registry
from tfbisect.report import github

# The Dockerfile the docker and swarm backends build from (envs/backend_docker.DOCKERFILE, which
# the command line may not import; a test keeps the two the same).
DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"
# What argparse reads as a number, not an option (`--timeout -5` is a bad value, not an option).
_NUMBER = re.compile(r"-[0-9.]")


class CommandParser(argparse.ArgumentParser):
    """argparse's parser, naming an option it does not know as such: without this, the value
    after a misspelled option (`bisect --scirpt repro.py`) lands in `bisect`'s positional and
    argparse says "argument action: invalid choice: 'repro.py'", which points nowhere near the typo."""

    parent: CommandParser | None = None  # the top parser, for a command's parser
    current: CommandParser | None = None  # the top parser's: the command's parser it last ran
    words: tuple[str, ...] = ()  # the words this parser was last given

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        given = args[0] if args else kwargs.get("args")
        self.words = tuple(sys.argv[1:] if given is None else given)
        if self.parent is not None:
            self.parent.current = self
        else:
            self.current = None
        return super().parse_known_args(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if self.current is not None:  # the command's parser knows its own options
            self.current.error(message)
        unknown = self.unknown_options()
        if unknown:
            flag = unknown[0].partition("=")[0]
            longs = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
            close = difflib.get_close_matches(flag, longs, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            message = (
                f"unrecognized option {flag}{hint}\n  What to do: correct it; `{self.prog} --help` "
                "lists the options (--reports, --cache, --cache-budget and -q go before or after the command)."
            )
        super().error(message)

    def unknown_options(self) -> list[str]:
        """The words this parser was given that look like options and that it has not got (as
        written, or abbreviated as argparse allows); words after `--` are values."""
        known = {s for a in self._actions for s in a.option_strings}
        out: list[str] = []
        for word in self.words:
            if word == "--":
                break
            flag = word.partition("=")[0]
            if not word.startswith("-") or word == "-" or _NUMBER.match(word) or flag in known:
                continue
            if flag.startswith("--") and any(s.startswith(flag) for s in known):
                continue  # an abbreviation (argparse itself says when it is ambiguous)
            if not flag.startswith("--") and word[:2] in known:
                continue  # short flags run together (-qj3)
            out.append(word)
        return out


def build_parser() -> argparse.ArgumentParser:
    top = CommandParser(
        prog="tfbisect",
        description="Which TensorFlow releases reproduce a behaviour, on CPU and CUDA, and where did it change?",
    )
    parser: argparse.ArgumentParser = top  # its commands' parsers are CommandParsers too
    parser.add_argument("--version", action="version", version=f"tfbisect {__version__}")
    add_global_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # One function per subcommand, in the order `tfbisect --help` lists them.
    for add in (
        add_versions,
        add_run,
        add_show,
        add_lock,
        add_tox_ini,
        add_bisect,
        add_narrow,
        add_report,
        add_gpu_check,
        add_sweep,
        add_new,
        add_cache,
    ):
        add(sub)
    for command in sub.choices.values():
        # The global options after the command too (`bisect ... --reports X`); no defaults there,
        # so that a value given before the command is kept.
        add_global_options(command, defaults=False)
        if isinstance(command, CommandParser):
            command.parent = top
    return parser


def add_global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--reports, --cache, --cache-budget and -q: the top parser's with their defaults, each
    command's with none (argparse.SUPPRESS: not set unless given)."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--reports", type=Path, default=default(Path("reports")), help="results and logs (default: reports/)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=default(None),
        help="venvs and images cache (default: ~/.cache/tfbisect)",
    )
    parser.add_argument(
        "--cache-budget",
        metavar="SIZE",
        default=default(None),
        help="keep the cache under SIZE (50G), least recently used first, before each preparation "
        "(default: $TFBISECT_CACHE_BUDGET, else no limit)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="no progress output"
    )


def add_versions(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def add_show(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    show_cmd = sub.add_parser("show", help="pretty-print a stored result (no argument: list them)")
    show_cmd.add_argument("result", nargs="?", type=Path, help="a result file under reports/results/")


def add_lock(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def add_tox_ini(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("tox-ini", help="print tox.ini's generated per-line block for the current catalogue")


def add_bisect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        "--no-run-ahead",
        dest="run_ahead",
        action="store_false",
        help="only prepare the next round's environments ahead; by default, with a core to spare, "
        "they are also run ahead at low priority and the round takes their results",
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


def add_narrow(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    narrow_cmd = sub.add_parser(
        "narrow",
        help="narrow an existing bisection below its releases: RCs, nightlies, dependency changes, suspect code",
    )
    narrow_cmd.add_argument("logfile", nargs="?", type=Path, help="the bisection's log (default: newest)")
    narrow_cmd.add_argument("--force", action="store_true", help="run again even where results are stored")
    narrow_cmd.add_argument(
        "--timeout", type=options.timeout, default=None, help="seconds per run (default: the bisection's)"
    )
    which = narrow_cmd.add_mutually_exclusive_group()
    which.add_argument(
        "--scenario", help="the scenario's name or path (default: as the bisection was given it)"
    )
    which.add_argument(
        "--script", metavar="FILE", help="the plain script's path (default: as the bisection was given it)"
    )
    add_script_options(narrow_cmd)
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


def add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def add_gpu_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def add_sweep(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def add_new(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    new = sub.add_parser(
        "new",
        help="write a scenario to start from (scenarios/NAME.py), or a repro script from an issue",
        description="Write scenarios/NAME.py (the skeleton, or --from a plain script wrapped into it), "
        "or NAME.py, a plain repro script taken from a GitHub issue or its Markdown, with the "
        "bisect command to run next.",
    )
    new.add_argument("name", metavar="NAME", help="the scenario's (or script's) name: letters, digits, _")
    source = new.add_mutually_exclusive_group()
    source.add_argument(
        "--from", dest="source", type=Path, metavar="FILE.py", help="wrap this plain script's code"
    )
    source.add_argument(
        "--from-issue",
        metavar="OWNER/REPO#N",
        help="take the repro and versions from this GitHub issue (token optional, from env)",
    )
    source.add_argument(
        "--from-markdown", type=Path, metavar="FILE", help="the same from an issue's text saved as Markdown"
    )
    new.add_argument(
        "--as",
        dest="write_as",
        choices=["scenario", "script"],
        default=None,
        help="scenario (the default) or script: a plain script run with --script (the default "
        "for --from-issue and --from-markdown)",
    )
    new.add_argument(
        "--out", type=Path, metavar="PATH", help="write here (default: scenarios/NAME.py, a script NAME.py)"
    )
    new.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    new.add_argument("--api-url", default=github.API, help=argparse.SUPPRESS)


def add_cache(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cache = sub.add_parser(
        "cache", help="what tfbisect keeps (venvs, wheels, images, locks, traces); `cache prune` frees it"
    )
    cache.add_argument("action", nargs="?", choices=["list", "prune"], default="list")
    cache.add_argument(
        "--older-than", metavar="AGE", help="prune: what was last used before AGE ago (7d, 12h)"
    )
    cache.add_argument(
        "--keep-last", type=int, metavar="N", help="prune: all but the N most recently used of each kind"
    )
    cache.add_argument("--all", action="store_true", help="prune: everything (what runs elsewhere too)")
    cache.add_argument("--dry-run", action="store_true", help="prune: list what would go, remove nothing")


def add_narrow_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-trace",
        dest="trace",
        action="store_false",
        help="narrow without the traced runs (no suspect code: builds and dependency changes only)",
    )
    parser.add_argument(
        "--prove",
        type=options.whole_number("--prove", 0, 100),
        default=DEFAULT_PROVE,
        metavar="N",
        help="prove which change did it by rerunning the deciding probe in copies of the venvs: first the "
        "changed packages the probe imported put back at their old versions (transplants, each wheel "
        f"checked against its lock's hashes), then the old code of the top N suspects (default {DEFAULT_PROVE}; "
        "0: no proof)",
    )
    parser.add_argument(
        "--prove-budget",
        type=options.whole_number("--prove-budget", 1, 1000),
        default=DEFAULT_PROVE_BUDGET,
        metavar="RUNS",
        help=f"the most probe runs and package installs the proof makes, transplants, code reverts and "
        f"shrinking the proven revert to its minimal patch together; a failed install counts too "
        f"(default {DEFAULT_PROVE_BUDGET})",
    )


def add_env_options(parser: argparse.ArgumentParser, *, multi: bool = False) -> None:
    parser.add_argument(
        "--backend",
        choices=[*registry.names(), registry.AUTO],
        default=registry.AUTO if multi else registry.SINGLE,
        help=f"venv (local virtual environments), docker (images built from {_help_text(DOCKERFILE)}), "
        "swarm (those images as services on a Docker Swarm), or auto (containers when a Docker engine "
        "answers, with venvs for the versions no base image fits; venvs alone when none answers). "
        + (
            "Default: auto (containers when Docker runs, else venvs)."
            if multi
            else f"Default: {registry.SINGLE}."
        ),
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
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--scenario", default=scenario.DEFAULT, help="scenario name or path")
    which.add_argument(
        "--script",
        metavar="FILE",
        help="a plain Python script as the scenario: ending normally = good; an AssertionError or an "
        "exit status from 1 to 127 = bad (reproduced); status 125 = skip; any other exception = error",
    )
    add_script_options(parser)
    parser.add_argument(
        "--timeout",
        type=options.timeout,
        default=DEFAULT_TIMEOUT,
        help=f"seconds per run (above 0, at most {options.MAX_TIMEOUT_SECONDS:.0f})",
    )
    parser.add_argument("--pre", action="store_true", help="allow release candidates")


def _help_text(path: Path) -> str:
    # argparse %-formats help strings: a % in the checkout's path must not be read as one.
    return str(path).replace("%", "%%")


def add_script_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bad-if-raises",
        action="append",
        type=options.bad_if_raises,
        metavar="TYPE[:REGEX]",
        help="with --script: this exception (its class or a base class named TYPE, its message matching "
        "REGEX) is the bug, so it counts as bad (repeatable)",
    )
    parser.add_argument(
        "--trust-script",
        action="store_true",
        help="run code marked as taken from an issue (a stranger's code) outside containers too",
    )
