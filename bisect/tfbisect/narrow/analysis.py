"""What a version's source says about its lines: statements, functions, docstrings, calls and code
tokens, read with `ast` and `tokenize` (empty tables when a file cannot be parsed)."""

from __future__ import annotations

import ast
import bisect
import io
import tokenize
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tfbisect.narrow.sources import source_lines

MODULE_LEVEL = "<module>"

_Span = tuple[tuple[int, int], tuple[int, int]]  # (row, column) from, to


@dataclass(frozen=True)
class Source:
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
class Tokens:
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


def _analyse(text: str | None) -> Source:
    if text is None:
        return Source("", None, {}, (), (), ())
    lines = source_lines(text)
    normalised = "\n".join(lines) + "\n"
    try:
        tree = ast.parse(normalised)
    except _UNREADABLE:
        return Source(normalised, None, {}, (), (), ())
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
    return Source(
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


def _calls(source: Source) -> dict[str, tuple[int, ...]]:
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


def _code_tokens(source: Source) -> Tokens | None:
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
    return Tokens(tuple(tokens), {line: tuple(indices) for line, indices in by_line.items()})


class SourceVersion:
    """One environment's sources, each file analysed once, and only as far as asked."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.sources = sources
        self._sources: dict[str, Source] = {}
        self._calls: dict[str, dict[str, tuple[int, ...]]] = {}
        self._tokens: dict[str, Tokens | None] = {}

    def source(self, path: str) -> Source:
        if path not in self._sources:
            self._sources[path] = _analyse(self.sources.get(path))
        return self._sources[path]

    def calls(self, path: str) -> dict[str, tuple[int, ...]]:
        if path not in self._calls:
            self._calls[path] = _calls(self.source(path))
        return self._calls[path]

    def tokens(self, path: str) -> Tokens | None:
        if path not in self._tokens:
            self._tokens[path] = _code_tokens(self.source(path))
        return self._tokens[path]


def same_code(
    versions: tuple[SourceVersion, SourceVersion],
    paths: tuple[str, str],
    lines: tuple[Iterable[int], Iterable[int]],
) -> bool:
    """Whether the code tokens of `lines` are the same in both versions (the file `paths[0]` in the
    first, `paths[1]` in the second): then only comments, docstrings, blank lines (or the layout)
    differ there.  Unreadable source is code; a file a version lacks has no code."""
    found = []
    for version, path in zip(versions, paths, strict=True):
        tokens = version.tokens(path) if path in version.sources else Tokens((), {})
        if tokens is None:
            return False
        found.append(tokens)
    return found[0].between(lines[0]) == found[1].between(lines[1])
