"""Which changed code the failing probe ran: the suspects between two releases (issue 11, step 4).

The two environments' wheels (from the cache) give both versions' Python sources; the tracer
(`data/probe_tracer.py`) gives the lines the failing probe ran in each environment, and
optionally those a passing probe ran.  The diff of the two versions is kept to the hunks whose
changed lines ran, and those are ranked the way spectrum-based fault localisation ranks
statements (Ochiai): what runs on the failing probe's path but not on the passing one's first,
more changed lines that ran before fewer, documentation-only changes last.

Pure logic: no process, no network.  Wheels are downloads and traces are written next to
untrusted scenario code, so both are read as hostile input: members are size-capped and
path-checked, traces validated and bounded.
"""

from __future__ import annotations

import ast
import bisect
import difflib
import io
import math
import re
import tokenize
import zipfile
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MEMBER_MAX_BYTES = 2 * 1024 * 1024  # larger .py members are generated tables, not code to read
SOURCES_MAX_BYTES = 512 * 1024 * 1024  # one environment's traced files (a TF step reads ~20 MB)
CONTEXT_LINES = 3  # as `diff -u`
EXCERPT_MAX_LINES = 40
EXCERPT_LINE_MAX_CHARS = 200
TRACE_MAX_FILES = 20000  # the tracer's own cap
TRACE_MAX_LINES_PER_FILE = 1_000_000
TRACE_MAX_LINE = 10_000_000
TOTAL_FAILED = 1  # one failing probe: Ochiai's denominator is sqrt(total_failed * (failed + passed))
MODULE_LEVEL = "<module>"

# A member stored under the wheel's data folder installs to the same place as a top-level one.
_DATA_FOLDER = re.compile(r"^[^/]+\.data/(?:purelib|platlib)/")


# ---- Both versions' sources -------------------------------------------------------------------


def member_path(name: str) -> str | None:
    """Where a wheel member installs ("keras/src/losses.py"), or None: not a `.py` file, or a
    path that could point outside the installation (absolute, `..`, backslashes, empty parts)."""
    if not name.endswith(".py") or name.startswith("/") or "\\" in name or "\x00" in name:
        return None
    parts = name.split("/")
    if ":" in parts[0] or any(part in ("", ".", "..") for part in parts):
        return None
    return _DATA_FOLDER.sub("", name, count=1)


def decode_source(data: bytes) -> str:
    """Python source text, decoded the way the interpreter would (PEP 263 cookie or UTF-8)."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:  # a malformed cookie: read as UTF-8 rather than lose the file
        encoding = "utf-8"
    try:
        return data.decode(encoding, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def read_wheel_sources(wheel: Path, only: Collection[str] | None = None) -> dict[str, str]:
    """The `.py` members of a wheel, by installed path; with `only`, just those paths.

    Members over `MEMBER_MAX_BYTES` (declared or read) and unsafe paths are left out.  A file that
    is not a zip raises `zipfile.BadZipFile`; a corrupt member raises it too (its CRC)."""
    sources: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir() or info.file_size > MEMBER_MAX_BYTES:
                continue
            path = member_path(info.filename)
            if path is None or (only is not None and path not in only):
                continue
            with archive.open(info) as stream:
                data = stream.read(MEMBER_MAX_BYTES + 1)  # the declared size can lie
            if len(data) > MEMBER_MAX_BYTES:
                continue
            sources[path] = decode_source(data)
    return sources


def read_sources(wheels: Iterable[Path], only: Collection[str] | None = None) -> dict[str, str]:
    """One environment's sources from all its wheels (tensorflow, keras, …), by installed path."""
    sources: dict[str, str] = {}
    for wheel in wheels:
        sources.update(read_wheel_sources(wheel, only))
    return sources


def read_installed(folder: Path, only: Collection[str]) -> dict[str, str]:
    """The `only` files of an installed tree (a site-packages folder), by installed path: regular
    files that resolve inside the folder (no link leads out), at most `MEMBER_MAX_BYTES` each."""
    sources: dict[str, str] = {}
    root = folder.resolve()
    total = 0
    for path in sorted(only):
        if member_path(path) != path:
            continue
        try:
            file = (folder / path).resolve()
            if not file.is_relative_to(root) or not file.is_file():
                continue
            with open(file, "rb") as stream:
                data = stream.read(MEMBER_MAX_BYTES + 1)
        except OSError:
            continue
        total += len(data)
        if len(data) > MEMBER_MAX_BYTES or total > SOURCES_MAX_BYTES:
            continue
        sources[path] = decode_source(data)
    return sources


def read_places(places: Iterable[Path], only: Collection[str]) -> dict[str, str]:
    """One environment's sources of `only` from where it keeps them: folders or wheel files."""
    sources: dict[str, str] = {}
    for place in places:
        if place.is_dir():
            sources.update(read_installed(place, only))
        elif place.suffix == ".whl":
            sources.update(read_wheel_sources(place, only))
    return sources


def source_lines(text: str) -> list[str]:
    """The lines as Python numbers them: only \\n, \\r\\n and \\r end a line (`str.splitlines`
    also splits at form feeds and other characters, and the numbers would drift)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


# ---- The diff ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hunk:
    """One hunk of `diff -u`, with its changed lines numbered in each version."""

    old_first: int  # the hunk's first line in the old version, context included (1-based)
    old_last: int  # its last; below old_first when the hunk has no old lines
    new_first: int
    new_last: int
    old_changed: tuple[int, ...]  # old lines the hunk removes or replaces
    new_changed: tuple[int, ...]  # new lines it adds or puts in their place
    body: tuple[str, ...]  # " context", "-old", "+new", as `diff -u` prints them

    @property
    def header(self) -> str:
        return f"@@ -{_unified_range(self.old_first, self.old_last)} +{_unified_range(self.new_first, self.new_last)} @@"


def _unified_range(first: int, last: int) -> str:
    """`diff -u`'s range: "start,count", "start" for one line, the line before for none."""
    count = last - first + 1
    if count == 1:
        return str(first)
    return f"{first - 1 if count == 0 else first},{count}"


@dataclass(frozen=True)
class FileDiff:
    path: str  # the installed path, "keras/src/losses.py"
    old: str | None  # the old version's text; None when the file is new
    new: str | None  # the new version's text; None when the file is gone
    hunks: tuple[Hunk, ...]


def diff_file(path: str, old: str | None, new: str | None) -> FileDiff:
    """The hunks between two versions of one file (None: the file is absent in that version)."""
    if old == new:
        return FileDiff(path, old, new, ())
    a = source_lines(old) if old is not None else []
    b = source_lines(new) if new is not None else []
    hunks = []
    # The same matcher `difflib.unified_diff` uses, so the hunks are the ones `diff -u` people know.
    for group in difflib.SequenceMatcher(None, a, b).get_grouped_opcodes(CONTEXT_LINES):
        body: list[str] = []
        old_changed: list[int] = []
        new_changed: list[int] = []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                body.extend(" " + line for line in a[i1:i2])
                continue
            body.extend("-" + line for line in a[i1:i2])
            body.extend("+" + line for line in b[j1:j2])
            old_changed.extend(range(i1 + 1, i2 + 1))
            new_changed.extend(range(j1 + 1, j2 + 1))
        first, last = group[0], group[-1]
        hunks.append(
            Hunk(
                old_first=first[1] + 1,
                old_last=last[2],
                new_first=first[3] + 1,
                new_last=last[4],
                old_changed=tuple(old_changed),
                new_changed=tuple(new_changed),
                body=tuple(body),
            )
        )
    return FileDiff(path, old, new, tuple(hunks))


def diff_sources(
    old: Mapping[str, str], new: Mapping[str, str], paths: Iterable[str] | None = None
) -> list[FileDiff]:
    """The files that differ (present in either version), in path order; `paths` narrows them."""
    chosen = sorted(set(paths) if paths is not None else set(old) | set(new))
    diffs = []
    for path in chosen:
        before, after = old.get(path), new.get(path)
        if before != after:
            diffs.append(diff_file(path, before, after))
    return diffs


# ---- What the tracer saw ----------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """One probe's run in one environment, as `probe_tracer.py` wrote it."""

    python: str
    exit_code: int
    versions: Mapping[str, str | None]  # package -> installed distribution version
    lines: Mapping[str, frozenset[int]]  # installed path -> lines that ran
    imported: frozenset[str] = frozenset()  # distributions the process had imported at its end

    @classmethod
    def from_dict(cls, data: object) -> Trace:
        """Validated: a trace is written next to scenario code, so nothing in it is trusted.
        Raises ValueError saying what is wrong."""
        if not isinstance(data, dict) or data.get("schema") != 1:
            raise ValueError("not a probe trace: schema 1 expected")
        python, exit_code = data.get("python"), data.get("exit_code")
        if not isinstance(python, str) or len(python) > 32:
            raise ValueError("a probe trace's `python` is not a version")
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            raise ValueError("a probe trace's `exit_code` is not an integer")
        return cls(
            python=python,
            exit_code=exit_code,
            versions=_trace_versions(data.get("packages")),
            lines=_trace_lines(data.get("files")),
            imported=_trace_imported(data.get("imported")),
        )

    def version_of(self, path: str) -> str | None:
        return self.versions.get(path.split("/", 1)[0])


def _trace_versions(packages: object) -> dict[str, str | None]:
    if not isinstance(packages, dict) or len(packages) > 1000:
        raise ValueError("a probe trace's `packages` is not a mapping of packages")
    versions: dict[str, str | None] = {}
    for name, entry in packages.items():
        version = entry.get("version") if isinstance(entry, dict) else None
        if not isinstance(name, str) or (version is not None and not isinstance(version, str)):
            raise ValueError(f"a probe trace's package {name!r} is malformed")
        versions[name] = version[:100] if version is not None else None
    return versions


def _trace_imported(imported: object) -> frozenset[str]:
    """The imported distributions' names (absent from older traces and on Python 3.7)."""
    if imported is None:
        return frozenset()
    if not isinstance(imported, dict) or len(imported) > 5000:
        raise ValueError("a probe trace's `imported` is not a mapping of distributions")
    return frozenset(name[:100] for name in imported if isinstance(name, str))


def _trace_lines(files: object) -> dict[str, frozenset[int]]:
    if not isinstance(files, dict) or len(files) > TRACE_MAX_FILES:
        raise ValueError(f"a probe trace's `files` is not a mapping of at most {TRACE_MAX_FILES} files")
    lines: dict[str, frozenset[int]] = {}
    for path, entry in files.items():
        if not isinstance(path, str) or member_path(path) is None or len(path) > 1000:
            raise ValueError(f"a probe trace names a file {path!r} that is not an installed .py path")
        found = entry.get("lines") if isinstance(entry, dict) else None
        if not isinstance(found, list) or len(found) > TRACE_MAX_LINES_PER_FILE:
            raise ValueError(f"a probe trace's lines for {path} are not a list")
        if not all(type(line) is int and 0 < line <= TRACE_MAX_LINE for line in found):
            raise ValueError(f"a probe trace's lines for {path} are not all line numbers")
        lines[path] = frozenset(found)
    return lines


@dataclass(frozen=True)
class ProbeTraces:
    """One probe traced in both environments: the older one (last good) and the newer (first bad)."""

    old: Trace
    new: Trace


# ---- What a version's source says about its lines ---------------------------------------------

_Span = tuple[tuple[int, int], tuple[int, int]]  # (row, column) from, to


@dataclass(frozen=True)
class _Source:
    """One version of one file, read with `ast` (empty tables when it cannot be parsed)."""

    text: str  # normalised: "\\n" line ends, as Python numbers the lines
    tree: ast.Module | None
    statement: Mapping[int, tuple[int, int]]  # a line -> the lines of the statement it is part of
    function_at: tuple[int, ...]  # a line -> its innermost function's index, -1 at module level
    functions: tuple[str, ...]  # qualified names, "Model.fit", "outer.<locals>.inner"
    docstrings: tuple[_Span, ...]  # bare-string statements: docstrings, or documentation where they stand

    def function(self, line: int) -> str:
        index = self.function_at[line] if 0 <= line < len(self.function_at) else -1
        return self.functions[index] if index >= 0 else MODULE_LEVEL

    def ran(self, lines: Iterable[int]) -> set[int]:
        """The lines that ran, widened to whole statements: a tracer reports a statement that
        spans lines at one of them, and a change may lie on any."""
        widened: set[int] = set()
        for line in lines:
            first, last = self.statement.get(line, (line, line))
            widened.update(range(first, last + 1))
        return widened


@dataclass(frozen=True)
class _Tokens:
    """The code tokens of one version of a file: all but comments, blank lines and docstrings."""

    tokens: tuple[tuple[int, str], ...]
    by_line: Mapping[int, tuple[int, ...]]  # a line -> the indices of the tokens on it

    def between(self, lines: Iterable[int]) -> list[tuple[int, str]]:
        indices = sorted({index for line in lines for index in self.by_line.get(line, ())})
        return [self.tokens[index] for index in indices]


_UNREADABLE = (SyntaxError, ValueError, RecursionError, MemoryError, tokenize.TokenError)
_NO_TEXT = frozenset({tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE, tokenize.ENDMARKER})
_NOT_CODE = frozenset({tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER})
_BLOCKS = (ast.stmt, ast.ExceptHandler, ast.match_case)  # what holds statements


def _analyse(text: str | None) -> _Source:
    if text is None:
        return _Source("", None, {}, (), (), ())
    lines = source_lines(text)
    normalised = "\n".join(lines) + "\n"
    try:
        tree = ast.parse(normalised)
    except _UNREADABLE:
        return _Source(normalised, None, {}, (), (), ())
    statement: dict[int, tuple[int, int]] = {}
    spans: list[tuple[str, int, int]] = []  # (qualified name, first line, last line)
    docstrings: list[_Span] = []
    # Statements only (expressions hold none worth a line of their own), without recursion.
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        node, prefix = stack.pop()
        inner = prefix
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            spans.append((prefix + node.name, first, node.end_lineno or node.lineno))
            inner = f"{prefix}{node.name}.<locals>."
        elif isinstance(node, ast.ClassDef):
            inner = f"{prefix}{node.name}."
        if isinstance(node, ast.stmt):
            _statement_span(node, statement)
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docstrings.append(
                ((node.lineno, node.col_offset), (node.end_lineno or 0, node.end_col_offset or 0))
            )
        for _, value in ast.iter_fields(node):
            if isinstance(value, list):
                stack.extend((child, inner) for child in value if isinstance(child, _BLOCKS))
    spans.sort(key=lambda span: span[1])
    function_at = [-1] * (len(lines) + 2)
    for index, (_, first, last) in enumerate(spans):  # an inner function is painted over its outer one
        for line in range(max(first, 0), min(last, len(lines)) + 1):
            function_at[line] = index
    return _Source(
        text=normalised,
        tree=tree,
        statement=statement,
        function_at=tuple(function_at),
        functions=tuple(name for name, _, _ in spans),
        docstrings=tuple(sorted(docstrings)),
    )


def _statement_span(node: ast.stmt, statement: dict[int, tuple[int, int]]) -> None:
    """A simple statement's lines, or a compound one's header (`def f(\\n a):`, decorators too)."""
    first = node.lineno
    body = getattr(node, "body", None)
    if isinstance(node, ast.Match):  # its cases are not statements: the header is `match subject:`
        last = node.subject.end_lineno or node.lineno
    elif isinstance(body, list) and body and isinstance(body[0], ast.stmt):
        decorators = getattr(node, "decorator_list", [])
        first = min([first, *(d.lineno for d in decorators)])
        last = max(node.lineno, body[0].lineno - 1)
    else:
        last = node.end_lineno or node.lineno
    for line in range(first, last + 1):
        statement.setdefault(line, (first, last))


def _calls(source: _Source) -> dict[str, tuple[int, ...]]:
    """Each called name ("fit" for `model.fit(...)`) and the lines of its calls."""
    calls: dict[str, list[int]] = {}
    if source.tree is None:
        return {}
    for node in ast.walk(source.tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name):
            calls.setdefault(node.func.id, []).append(node.func.lineno)
        elif isinstance(node.func, ast.Attribute):  # the line where `.name(` is
            calls.setdefault(node.func.attr, []).append(node.func.end_lineno or node.func.lineno)
    return {name: tuple(lines) for name, lines in calls.items()}


def _code_tokens(source: _Source) -> _Tokens | None:
    """None when the file cannot be tokenized (or parsed: its docstrings are not known)."""
    if source.tree is None:
        return None
    starts = [start for start, _ in source.docstrings]
    tokens: list[tuple[int, str]] = []
    by_line: dict[int, list[int]] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source.text).readline):
            if token.type in _NOT_CODE:
                continue
            if token.type == tokenize.STRING:
                # A docstring's parts (implicitly joined strings too) lie inside its statement.
                index = bisect.bisect_right(starts, token.start) - 1
                if index >= 0 and token.start < source.docstrings[index][1]:
                    continue
            # Indentation counts as structure, not as its width: re-indenting alike is not a change of code.
            tokens.append((token.type, "" if token.type in _NO_TEXT else token.string))
            for line in range(token.start[0], token.end[0] + 1):
                by_line.setdefault(line, []).append(len(tokens) - 1)
    except _UNREADABLE:
        return None
    return _Tokens(tuple(tokens), {line: tuple(indices) for line, indices in by_line.items()})


class _Version:
    """One environment's sources, each file analysed once, and only as far as asked."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.sources = sources
        self._sources: dict[str, _Source] = {}
        self._calls: dict[str, dict[str, tuple[int, ...]]] = {}
        self._tokens: dict[str, _Tokens | None] = {}

    def source(self, path: str) -> _Source:
        if path not in self._sources:
            self._sources[path] = _analyse(self.sources.get(path))
        return self._sources[path]

    def calls(self, path: str) -> dict[str, tuple[int, ...]]:
        if path not in self._calls:
            self._calls[path] = _calls(self.source(path))
        return self._calls[path]

    def tokens(self, path: str) -> _Tokens | None:
        if path not in self._tokens:
            self._tokens[path] = _code_tokens(self.source(path))
        return self._tokens[path]


# ---- Links ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceRepository:
    """Where installed files of a package's releases live on GitHub."""

    installed: str  # the installed path prefix this row covers
    since: tuple[int, ...]  # the first release it covers
    before: tuple[int, ...] | None  # the first release it no longer covers
    repository: str  # owner/name
    in_repository: str  # what the installed prefix is called in the repository


SOURCE_REPOSITORIES = (
    SourceRepository("tensorflow/", (0,), None, "tensorflow/tensorflow", "tensorflow/"),
    # TF 2.0 and 2.1 installed their Python under `tensorflow_core`; the repository says `tensorflow`.
    SourceRepository("tensorflow_core/", (1, 15), (2, 2), "tensorflow/tensorflow", "tensorflow/"),
    SourceRepository("keras/", (2, 6), (3,), "keras-team/keras", "keras/"),
    SourceRepository("keras/src/", (3,), None, "keras-team/keras", "keras/src/"),
    SourceRepository("tf_keras/", (2,), None, "keras-team/tf-keras", "tf_keras/"),
)
# Installed files that a build generates (the API tree, op wrappers): the repository has none.
_GENERATED = re.compile(
    r"^(?:tensorflow(?:_core)?/(?:_api/|__init__\.py$|.*/gen_[^/]*\.py$)|keras/api/|tf_keras/api/)"
)


def _release(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split("."):
        digits = part[: len(part) - len(part.lstrip("0123456789"))]
        if not digits:
            break
        numbers.append(int(digits))
        if digits != part:
            break
    return tuple(numbers)


def release_tag(version: str) -> str | None:
    """The git tag of a released version: "2.4.0" -> "v2.4.0", "2.4.0rc1" -> "v2.4.0-rc1" (the
    TensorFlow convention); None for a nightly or dev build, which has a commit, not a tag."""
    found = re.fullmatch(r"(\d+\.\d+\.\d+)(?:(rc)(\d+))?", version)
    if found is None:
        return None
    base, rc, number = found.groups()
    return f"v{base}-rc{number}" if rc else f"v{base}"


def github_link(path: str, version: str, first: int, last: int, ref: str | None = None) -> str | None:
    """A link to lines `first`..`last` of an installed file at the release's tag (or at `ref`, a
    commit), or None when no repository is known for it or the file is generated at build time."""
    if _GENERATED.match(path) or first < 1 or last < first:
        return None
    release = _release(version)
    for row in SOURCE_REPOSITORIES:
        if not path.startswith(row.installed) or release < row.since:
            continue
        if row.before is not None and release >= row.before:
            continue
        tag = ref or release_tag(version)
        if tag is None:
            return None
        where = row.in_repository + path[len(row.installed) :]
        return f"https://github.com/{row.repository}/blob/{tag}/{where}#L{first}-L{last}"
    return None


# ---- The suspects -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Suspect:
    """A hunk whose changed lines the failing probe ran, with its rank's evidence."""

    file: str
    function: str  # where the changed lines that ran are ("Model.fit", "<module>")
    score: float  # Ochiai: failed / sqrt(total_failed * (failed + passed))
    failed: int  # 1: the failing probe ran the changed lines
    # 1: the passing probe ran every changed line that the failing one ran.  A hunk is scored by
    # its most suspicious line: a branch that only the failing probe takes, inside a hunk whose
    # condition both probes evaluate, still scores 1.
    passed: int
    executed_old: tuple[int, ...]  # changed lines of the old version that ran in the old environment
    executed_new: tuple[int, ...]  # changed lines of the new version that ran in the new environment
    documentation_only: bool  # the change is to docstrings, comments or blank lines only
    old_lines: tuple[int, int] | None  # the hunk's lines (context included) in the old version
    new_lines: tuple[int, int] | None
    excerpt: str  # the hunk as `diff -u` shows it, at most EXCERPT_MAX_LINES lines
    only_in: str | None = None  # "old" or "new": the function ran in that version only
    caller: str | None = None  # then, where it was called from: "path:function (line N)"
    old_link: str | None = None
    new_link: str | None = None

    @property
    def changed_executed(self) -> int:
        return len(self.executed_old) + len(self.executed_new)

    @property
    def generated(self) -> bool:
        """A file the build generates (op wrappers `gen_*.py`, the API tree): its changes follow
        op registrations in C++, so they rank after the hand-written code that ran."""
        return bool(_GENERATED.match(self.file))

    def rank_key(self) -> tuple[bool, bool, float, int, str, int]:
        first = (self.new_lines or self.old_lines or (0, 0))[0]
        return (
            self.documentation_only,
            self.generated,
            -self.score,
            -self.changed_executed,
            self.file,
            first,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "function": self.function,
            "score": round(self.score, 6),
            "failed": self.failed,
            "passed": self.passed,
            "executed_old": list(self.executed_old),
            "executed_new": list(self.executed_new),
            "documentation_only": self.documentation_only,
            "generated": self.generated,
            "old_lines": list(self.old_lines) if self.old_lines else None,
            "new_lines": list(self.new_lines) if self.new_lines else None,
            "excerpt": self.excerpt,
            "only_in": self.only_in,
            "caller": self.caller,
            "old_link": self.old_link,
            "new_link": self.new_link,
        }


@dataclass(frozen=True)
class Suspects:
    """The ranked suspects and what was looked at to find them."""

    suspects: tuple[Suspect, ...]
    files_traced: int  # files the failing probe ran in either environment
    files_changed: int  # of those, the ones whose source differs between the versions
    hunks: int  # the hunks in those files
    missing_sources: tuple[str, ...]  # traced files that neither version's wheels hold

    @property
    def executed_python_changed(self) -> bool:
        """False: no Python code the failing probe ran changed (documentation aside); the change is
        in compiled code (kernels, C++ gradients, XLA) or in a package that was not traced."""
        return any(not suspect.documentation_only for suspect in self.suspects)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suspects": [suspect.to_dict() for suspect in self.suspects],
            "files_traced": self.files_traced,
            "files_changed": self.files_changed,
            "hunks": self.hunks,
            "missing_sources": list(self.missing_sources),
            "executed_python_changed": self.executed_python_changed,
        }


def ochiai(failed: int, passed: int, total_failed: int = TOTAL_FAILED) -> float:
    """Ochiai's suspiciousness of one element: 1 for what only failing runs execute, less the more
    passing runs execute it too, 0 for what no failing run executes."""
    if failed == 0:
        return 0.0
    return failed / math.sqrt(total_failed * (failed + passed))


def find_suspects(
    old_sources: Mapping[str, str],
    new_sources: Mapping[str, str],
    failing: ProbeTraces,
    passing: ProbeTraces | None = None,
    tf_refs: tuple[str | None, str | None] = (None, None),
) -> Suspects:
    """The hunks between the two versions whose changed lines the failing probe ran, best first.

    A hunk touches executed code when a changed line of the old version ran in the old
    environment, or one of the new version ran in the new one.  Only files the failing probe
    ran can hold such a hunk, so only those are diffed."""
    old, new = _Version(old_sources), _Version(new_sources)
    traced = sorted(set(failing.old.lines) | set(failing.new.lines))
    missing = tuple(path for path in traced if path not in old_sources and path not in new_sources)
    diffs = diff_sources(old_sources, new_sources, [path for path in traced if path not in missing])
    found = []
    for diff in diffs:
        ran = _Ran.of(diff.path, old, new, failing, passing)
        for hunk in diff.hunks:
            suspect = _suspect(diff.path, hunk, old, new, failing, ran, tf_refs)
            if suspect is not None:
                found.append(suspect)
    found.sort(key=Suspect.rank_key)
    return Suspects(
        suspects=tuple(found),
        files_traced=len(traced),
        files_changed=len(diffs),
        hunks=sum(len(diff.hunks) for diff in diffs),
        missing_sources=missing,
    )


@dataclass(frozen=True)
class _Ran:
    """The lines of one file that ran (widened to whole statements), per probe and version."""

    failing_old: frozenset[int]
    failing_new: frozenset[int]
    passing_old: frozenset[int]
    passing_new: frozenset[int]

    @classmethod
    def of(
        cls, path: str, old: _Version, new: _Version, failing: ProbeTraces, passing: ProbeTraces | None
    ) -> _Ran:
        before, after = old.source(path), new.source(path)
        return cls(
            failing_old=frozenset(before.ran(failing.old.lines.get(path, ()))),
            failing_new=frozenset(after.ran(failing.new.lines.get(path, ()))),
            passing_old=frozenset(before.ran(passing.old.lines.get(path, ()))) if passing else frozenset(),
            passing_new=frozenset(after.ran(passing.new.lines.get(path, ()))) if passing else frozenset(),
        )


def _changed_that_ran(
    hunk: Hunk, ran_old: frozenset[int], ran_new: frozenset[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (
        tuple(line for line in hunk.old_changed if line in ran_old),
        tuple(line for line in hunk.new_changed if line in ran_new),
    )


def _suspect(
    path: str,
    hunk: Hunk,
    old: _Version,
    new: _Version,
    failing: ProbeTraces,
    ran: _Ran,
    tf_refs: tuple[str | None, str | None] = (None, None),
) -> Suspect | None:
    executed_old, executed_new = _changed_that_ran(hunk, ran.failing_old, ran.failing_new)
    if not executed_old and not executed_new:
        return None
    passed = int(
        all(line in ran.passing_old for line in executed_old)
        and all(line in ran.passing_new for line in executed_new)
    )
    before, after = old.source(path), new.source(path)
    function = after.function(executed_new[0]) if executed_new else before.function(executed_old[0])
    only_in = _only_in(path, function, old, new, failing)
    caller = None
    if only_in is not None:
        version, trace = (old, failing.old) if only_in == "old" else (new, failing.new)
        other = before if only_in == "new" else after
        other_line = hunk.old_first if only_in == "new" else hunk.new_first
        caller = _caller(path, function, version, trace) or _other_caller(function, other, other_line)
    old_version, new_version = failing.old.version_of(path), failing.new.version_of(path)
    old_lines = (hunk.old_first, hunk.old_last) if hunk.old_last >= hunk.old_first else None
    new_lines = (hunk.new_first, hunk.new_last) if hunk.new_last >= hunk.new_first else None
    return Suspect(
        file=path,
        function=function,
        score=ochiai(1, passed),
        failed=1,
        passed=passed,
        executed_old=executed_old,
        executed_new=executed_new,
        documentation_only=_documentation_only(path, hunk, old, new),
        old_lines=old_lines,
        new_lines=new_lines,
        excerpt=excerpt(hunk, set(executed_old), set(executed_new)),
        only_in=only_in,
        caller=caller,
        old_link=_link(path, old_version, old_lines, tf_refs[0]),
        new_link=_link(path, new_version, new_lines, tf_refs[1]),
    )


def _link(path: str, version: str | None, lines: tuple[int, int] | None, tf_ref: str | None) -> str | None:
    """A link to the lines at the version's tag; a TensorFlow file of a nightly at its commit."""
    if version is None or lines is None:
        return None
    ref = tf_ref if path.startswith(("tensorflow/", "tensorflow_core/")) else None
    return github_link(path, version, *lines, ref=ref)


def _documentation_only(path: str, hunk: Hunk, old: _Version, new: _Version) -> bool:
    """Whether the code tokens of the changed lines are the same on both sides: then only
    comments, docstrings, blank lines (or the layout) changed.  Unreadable source is code."""
    before = old.tokens(path) if path in old.sources else _Tokens((), {})
    after = new.tokens(path) if path in new.sources else _Tokens((), {})
    if before is None or after is None:
        return False
    return before.between(hunk.old_changed) == after.between(hunk.new_changed)


def _ran_functions(source: _Source, lines: Iterable[int]) -> set[str]:
    return {source.function(line) for line in lines}


def _only_in(path: str, function: str, old: _Version, new: _Version, failing: ProbeTraces) -> str | None:
    """The one version whose environment ran the function ("old" or "new": a call that happens in
    that version only), or None when it ran in both."""
    if function == MODULE_LEVEL:
        return None
    ran_old = function in _ran_functions(old.source(path), failing.old.lines.get(path, ()))
    ran_new = function in _ran_functions(new.source(path), failing.new.lines.get(path, ()))
    if ran_old == ran_new:
        return None
    return "old" if ran_old else "new"


def _caller(path: str, function: str, version: _Version, trace: Trace) -> str | None:
    """Where the function was called from in the version where it ran: an executed call of its
    name, in its own file first, then in the other files the probe ran."""
    name = function.rsplit(".", 1)[-1]
    for candidate in [path, *sorted(set(trace.lines) - {path})]:
        if candidate not in version.sources:
            continue
        lines = version.calls(candidate).get(name)
        if not lines:
            continue
        source = version.source(candidate)
        ran = source.ran(trace.lines.get(candidate, ()))
        for line in lines:
            caller = source.function(line)
            if line in ran and not (candidate == path and caller == function):
                return f"{candidate}:{caller} (line {line})"
    return None


def _other_caller(function: str, other: _Source, line: int) -> str | None:
    """The approximation when no call was found: the function around the hunk in the other version."""
    found = other.function(line)
    return None if found in (function, MODULE_LEVEL) else found


def excerpt(hunk: Hunk, executed_old: Collection[int], executed_new: Collection[int]) -> str:
    """The hunk as `diff -u` prints it, at most EXCERPT_MAX_LINES lines, centred on the first
    changed line that ran when the hunk is longer; long lines are cut."""
    body = list(hunk.body)
    budget = EXCERPT_MAX_LINES - 1  # the header
    start, end = 0, len(body)
    if len(body) > budget:
        budget -= 2  # room for a marker before and after
        focus = _first_executed(hunk, executed_old, executed_new)
        start = max(0, min(focus - CONTEXT_LINES, len(body) - budget))
        end = start + budget
    lines = [hunk.header]
    if start:
        lines.append(f"… {start} lines not shown")
    lines.extend(_cut(line) for line in body[start:end])
    if end < len(body):
        lines.append(f"… {len(body) - end} lines not shown")
    return "\n".join(lines)


def _first_executed(hunk: Hunk, executed_old: Collection[int], executed_new: Collection[int]) -> int:
    """The index in the hunk's body of the first changed line that ran (0 when none did)."""
    old_line, new_line = hunk.old_first, hunk.new_first
    for index, line in enumerate(hunk.body):
        kind = line[:1]
        if (kind == "-" and old_line in executed_old) or (kind == "+" and new_line in executed_new):
            return index
        if kind != "+":
            old_line += 1
        if kind != "-":
            new_line += 1
    return 0


def _cut(line: str) -> str:
    return line if len(line) <= EXCERPT_LINE_MAX_CHARS else line[: EXCERPT_LINE_MAX_CHARS - 1] + "…"
