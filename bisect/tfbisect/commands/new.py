"""`tfbisect new NAME`: a scenario (or a plain repro script) to start from, written where the
user works, never into the package.

Four sources: the skeleton alone (`core/scaffold.py`), an existing plain script (`--from`),
a GitHub issue (`--from-issue OWNER/REPO#N`, read through `report/github.py`) or its text
saved as Markdown (`--from-markdown`).  Code taken from an issue is a stranger's code: it is
written with `issuetext.mark`'s header line, and the result says so.  The result also carries
the versions the issue's text names and the command to run next.
"""

from __future__ import annotations

import enum
import shlex
from dataclasses import dataclass
from pathlib import Path

import tfbisect
from tfbisect.commands.common import DONE
from tfbisect.core import issuetext, scaffold, scenario
from tfbisect.core.errors import ExitCode, PostError, ScenarioError, UsageError
from tfbisect.core.fsio import write_text_atomic
from tfbisect.core.textsafe import printable
from tfbisect.report import github

# A script read with --from or --from-markdown: a repro is a few KiB, an issue at most 64 KiB.
MAX_SOURCE_BYTES = 1024 * 1024


class Kind(enum.Enum):
    SCENARIO = "scenario"  # the scaffold's frame around the code: probes, --probe, the document
    SCRIPT = "script"  # the code alone, run with `--script`: exit 0 good, assert/exit 1 bad


@dataclass(frozen=True)
class NewOptions:
    name: str
    out: Path | None = None  # None: scenarios/NAME.py (a scenario) or NAME.py (a script), here
    force: bool = False  # overwrite an existing file
    source: Path | None = None  # --from: a plain script to wrap
    from_issue: str | None = None  # OWNER/REPO#N
    from_markdown: Path | None = None
    write_as: Kind | None = None  # None: a scenario, but a script from an issue
    api_url: str = github.API


@dataclass(frozen=True)
class NewResult:
    path: Path
    kind: Kind
    origin: str | None  # where the code came from (a file name, an issue's address), None: the skeleton
    marked: bool  # the file carries the stranger's-code mark
    hint: issuetext.VersionHint | None  # the versions an issue's text names
    more_comments: bool  # an issue had more comments than were read
    next_command: str  # what to run next, as words a shell reads
    exit_code: ExitCode = DONE


@dataclass(frozen=True)
class _Code:
    """The code to write, where it came from and what its text says about versions."""

    code: str | None  # None: the scaffold's example
    origin: str | None
    title: str | None
    hint: issuetext.VersionHint | None = None
    more_comments: bool = False


def new(options: NewOptions) -> NewResult:
    name = scaffold.check_name(options.name)
    sources = [s for s in (options.source, options.from_issue, options.from_markdown) if s is not None]
    if len(sources) > 1:
        raise UsageError(
            "--from, --from-issue and --from-markdown each name where the code comes from; more than one was given.",
            "give one of them.",
        )
    from_text = options.from_issue is not None or options.from_markdown is not None
    kind = options.write_as or (Kind.SCRIPT if from_text else Kind.SCENARIO)
    if kind is Kind.SCRIPT and options.source is not None:
        raise UsageError(
            "--from FILE with --as script would copy the script as it is.",
            f"run it as it is: `tfbisect bisect --script {shlex.quote(str(options.source))}`; "
            "or leave out --as to wrap it into a scenario.",
        )
    path = _target(options, name, kind)
    got = _code(options)
    text = _text(name, kind, got)
    write_text_atomic(path, text)
    return NewResult(
        path=path,
        kind=kind,
        origin=got.origin,
        marked=issuetext.is_marked(text),
        hint=got.hint,
        more_comments=got.more_comments,
        next_command=next_command(path, name, kind, got.hint, default_place=options.out is None),
    )


def _target(options: NewOptions, name: str, kind: Kind) -> Path:
    """Where the file goes, checked before any network or file is read: not into the package,
    not over a file unless --force."""
    path = options.out or (Path("scenarios") / f"{name}.py" if kind is Kind.SCENARIO else Path(f"{name}.py"))
    resolved = path.resolve()
    package = Path(tfbisect.__file__).resolve().parent
    guarded = [package, *(folder.resolve() for folder in scenario.shipped_dirs())]
    if any(resolved == folder or folder in resolved.parents for folder in guarded):
        raise UsageError(
            f"{path} is inside tfbisect's own installed files ({package} or its shipped scenarios).",
            "write it where you work: leave out --out (scenarios/NAME.py here) or give --out a path of yours.",
        )
    if resolved.is_dir():
        raise UsageError(f"{path} is a folder.", "give --out a file's path, e.g. --out repro.py.")
    if resolved.exists() and not options.force:
        raise UsageError(
            f"{path} already exists; it was left as it is.",
            "give another NAME or --out PATH, or --force to overwrite it.",
        )
    return path


def _code(options: NewOptions) -> _Code:
    if options.source is not None:
        return _Code(_read(options.source, "--from"), options.source.name, None)
    if options.from_markdown is not None:
        text = _read(options.from_markdown, "--from-markdown")
        return _from_posts([text], options.from_markdown.name, None, False)
    if options.from_issue is not None:
        try:
            target = github.Target.parse(options.from_issue)
        except PostError as exc:
            raise UsageError(exc.what, exc.todo) from None
        issue = github.fetch_issue(target, github.optional_token(), api=options.api_url)
        return _from_posts(list(issue.posts), issue.address, issue.title, issue.more_comments)
    return _Code(None, None, None)


def _from_posts(posts: list[str], origin: str, title: str | None, more: bool) -> _Code:
    """The repro among the posts' code blocks, and the versions their text names."""
    blocks = issuetext.code_blocks(posts)
    picked = issuetext.pick(blocks)
    if picked is None:
        shown = printable(origin, newlines=False)
        if not blocks:
            raise ScenarioError(
                f"{shown} has no block of Python code (a ```python fence, or an indented block that parses).",
                "copy the repro into a file and use `tfbisect new NAME --from FILE.py`, or run it with --script.",
            )
        unparsed = [b for b in blocks if not b.parses]
        raise ScenarioError(
            f"{shown} has {len(blocks)} code block(s), but none that parses as Python and imports TensorFlow"
            + (f" ({len(unparsed)} labelled Python do not parse)" if unparsed else "")
            + ".",
            "copy the repro into a file (add `import tensorflow as tf`, fix what the paste broke) and use "
            "`tfbisect new NAME --from FILE.py`, or run it with --script.",
        )
    return _Code(issuetext.mark(picked.code, origin), origin, title, issuetext.versions(posts), more)


def _read(path: Path, flag: str) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SOURCE_BYTES + 1)
    except OSError as exc:
        raise UsageError(
            f"{flag} {path} cannot be read: {exc.strerror or exc}.", f"give {flag} a readable file."
        ) from None
    if len(raw) > MAX_SOURCE_BYTES:
        raise UsageError(
            f"{flag} {path} is larger than {MAX_SOURCE_BYTES // 1024} KiB: not a repro or an issue's text.",
            f"give {flag} the file that holds the code.",
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{flag} {path} is not UTF-8 text.", "save it as UTF-8 and try again.") from None


def _text(name: str, kind: Kind, got: _Code) -> str:
    description = _description(got)
    if kind is Kind.SCENARIO:
        if got.code is None:
            return scaffold.render(name, description)
        return scaffold.from_script(got.code, name, description)
    if got.code is not None:
        return got.code if got.code.endswith("\n") else got.code + "\n"
    return _PLAIN.format(name=name, description=description, example=_dedent(scaffold.EXAMPLE_REPRO))


_PLAIN = '''"""{name}: {description}

A plain repro script for `tfbisect bisect --script {name}.py`: exit 0 (running to the end) is
good, a failed assert or an exit status of 1 is bad (reproduced), exit status 125 is skip, and
any other exception is an error (never bad, unless --bad-if-raises names it).
"""
{example}'''


def _dedent(code: str) -> str:
    return "".join(line[4:] + "\n" if line.startswith("    ") else line + "\n" for line in code.splitlines())


def _description(got: _Code) -> str:
    """One line for the docstring: the issue's title or the source's name, safe inside it."""
    if got.title:
        text = got.title
    elif got.origin:
        text = f"a repro from {got.origin}"
    else:
        return "what goes wrong (one line)"
    # The text goes into a docstring: no backslash (an escape), no quotes that could close it.
    shown = printable(text, newlines=False).replace("\\", "/").replace('"', "'")
    return " ".join(shown.split())[:120] or "a repro"


def next_command(
    path: Path, name: str, kind: Kind, hint: issuetext.VersionHint | None, *, default_place: bool
) -> str:
    """The bisection to run on the written file, with the --good/--bad the text names."""
    words = ["tfbisect", "bisect"]
    if kind is Kind.SCRIPT:
        words += ["--script", str(path)]
    else:
        words += ["--scenario", name if default_place else str(path)]
    if hint is not None and hint.good:
        words += ["--good", hint.good]
    if hint is not None and hint.bad and hint.bad != "nightly":
        words += ["--bad", hint.bad]
    return shlex.join(words)
