"""What the views show of a narrowing, read from its log data (no prose here: findings.py has it).

The suspects reach the views as the dict a log keeps (`Suspects.to_dict()`, cut), and a log is a
file anyone can edit; its text came from wheels, the index and scenario output.  So everything
is read defensively here, once, for every view: wrong types fall back to nothing, sizes are
bounded, and links are kept only when they point at GitHub (an `href` from a log must never be
`javascript:`).  The diff excerpts are cut into lines with their kind, numbers and simple Python
highlighting, so the HTML template only prints fixed class names around escaped text.
"""

from __future__ import annotations

import functools
import keyword
import re
from dataclasses import dataclass
from typing import Any

from tfbisect.search.narrowlog import SUSPECTS_KEPT, DependencyChange, Narrowing
from tfbisect.search.steps import Step

# Bounds for what a (possibly edited) log can put in front of a reader.
EXCERPT_LINES_MAX = 60  # narrow/diff.py writes at most 40 (header and markers included)
LINE_CHARS_MAX = 300  # narrow/diff.py cuts lines at 200
NAME_CHARS_MAX = 300  # file names, functions, callers
NOTES_MAX = 50
NOTE_CHARS_MAX = 1000
DEPENDENCIES_MAX = 500

# A link the views make clickable: GitHub over https, with no character that could end the
# attribute, the Markdown link or the URL itself.
_LINK = re.compile(r"https://github\.com/[A-Za-z0-9._~/%#:+@=&?,!$*;-]*")
_HEADER = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_link(url: object) -> str | None:
    """`url` when it is a plain https link into GitHub (what tfbisect writes), else None."""
    if isinstance(url, str) and len(url) <= 2000 and _LINK.fullmatch(url):
        return url
    return None


# ---- Diff lines and their highlighting ---------------------------------------------------------

# Token classes: fixed names the style sheet knows, never text from the excerpt.
KEYWORD, STRING, COMMENT, NUMBER, DEFINED, DECORATOR, PLAIN = "kw", "str", "com", "num", "fn", "dec", ""
Token = tuple[str, str]  # (class, text)

_TOKEN = re.compile(
    r"""
    (?P<com>\#.*)
    |(?P<str>(?:[rRbBuUfF]{1,2})?(?:\"\"\"|'''|"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?))
    |(?P<num>\b(?:0[xXoObB][0-9a-fA-F_]+|\d[\d_]*\.?[\d_]*(?:[eE][+-]?\d+)?[jJ]?))
    |(?P<name>[^\W\d]\w*)
    |(?P<dec>@[^\W\d][\w.]*)
    """,
    re.VERBOSE,
)
_KEYWORDS = frozenset(keyword.kwlist)


def highlight(code: str, open_quote: str | None = None) -> tuple[tuple[Token, ...], str | None]:
    """A line of Python as (class, text) tokens, and the triple quote still open after it.

    A line-by-line approximation (a hunk starts anywhere): comments, strings (triple-quoted ones
    carried over lines by `open_quote`), numbers, keywords, the names `def` and `class` define."""
    tokens: list[Token] = []
    pos = 0
    if open_quote is not None:
        end = code.find(open_quote)
        if end < 0:
            return ((STRING, code),), open_quote
        pos = end + 3
        tokens.append((STRING, code[:pos]))
        open_quote = None
    defining = False
    while pos < len(code):
        found = _TOKEN.search(code, pos)
        if found is None:
            tokens.append((PLAIN, code[pos:]))
            break
        if found.start() > pos:
            tokens.append((PLAIN, code[pos : found.start()]))
        kind, text = found.lastgroup or "", found.group()
        pos = found.end()
        if kind == "str" and text.lstrip("rRbBuUfF") in ('"""', "'''"):
            quote = text[-3:]
            end = code.find(quote, pos)
            if end < 0:
                tokens.append((STRING, code[found.start() :]))
                return _merged(tokens), quote
            pos = end + 3
            text = code[found.start() : pos]
        if kind == "name":
            cls = DEFINED if defining else KEYWORD if text in _KEYWORDS else PLAIN
            defining = text in ("def", "class")
        else:
            cls = {"com": COMMENT, "str": STRING, "num": NUMBER, "dec": DECORATOR}[kind]
            defining = False
        tokens.append((cls, text))
    return _merged(tokens), open_quote


def _merged(tokens: list[Token]) -> tuple[Token, ...]:
    merged: list[Token] = []
    for cls, text in tokens:
        if merged and merged[-1][0] == cls:
            merged[-1] = (cls, merged[-1][1] + text)
        elif text:
            merged.append((cls, text))
    return tuple(merged)


# Line kinds: also the HTML classes of diff rows.
ADDED, REMOVED, CONTEXT, HEADER, MARKER = "d-add", "d-del", "d-ctx", "d-hunk", "d-note"


@dataclass(frozen=True)
class DiffLine:
    kind: str  # ADDED, REMOVED, CONTEXT, HEADER or MARKER ("… N lines not shown")
    text: str  # the line as `diff -u` prints it, its first character included
    old: int | None  # its number in the old version, when the excerpt lets it be known
    new: int | None
    ran: bool  # a changed line the failing probe ran (in its own version's environment)
    tokens: tuple[Token, ...]  # the code after the first character, highlighted

    @property
    def sign(self) -> str:
        return self.text[:1] if self.kind in (ADDED, REMOVED, CONTEXT) else ""

    @property
    def changed(self) -> bool:
        return self.kind in (ADDED, REMOVED)


def _kind(line: str, first: bool) -> str:
    if first and line.startswith("@@"):
        return HEADER
    if line.startswith("… ") and line.endswith((" lines not shown", " line not shown")):
        return MARKER
    return {"+": ADDED, "-": REMOVED}.get(line[:1], CONTEXT)


def diff_lines(
    excerpt: str, executed_old: frozenset[int], executed_new: frozenset[int]
) -> tuple[DiffLine, ...]:
    """An excerpt (`diff -u` hunk) as lines: kind, numbers in each version, ran or not, tokens.

    Numbers count from the header; past a "lines not shown" marker they are unknown, unless the
    marker comes first and is the only one: then they count back from the header's end."""
    raw = [clip(line, LINE_CHARS_MAX) for line in excerpt.split("\n")[:EXCERPT_LINES_MAX]]
    kinds = [_kind(line, i == 0) for i, line in enumerate(raw)]
    numbers: list[tuple[int | None, int | None]] = [(None, None)] * len(raw)
    header = _HEADER.match(raw[0]) if raw and kinds[0] == HEADER else None
    if header is not None:
        old_start, old_count = int(header[1]), int(header[2] if header[2] is not None else 1)
        new_start, new_count = int(header[3]), int(header[4] if header[4] is not None else 1)
        markers = [i for i, kind in enumerate(kinds) if kind == MARKER]
        if not markers or markers[0] > 1:  # forward, up to the first marker
            stop = markers[0] if markers else len(raw)
            _number(numbers, kinds, range(1, stop), old_start, new_start, 1)
        elif markers == [1]:  # only a leading marker: backward from the hunk's last lines
            last_old, last_new = old_start + old_count - 1, new_start + new_count - 1
            _number(numbers, kinds, range(len(raw) - 1, 1, -1), last_old, last_new, -1)
    lines = []
    quotes: dict[str, str | None] = {"old": None, "new": None}
    for text, kind, (old, new) in zip(raw, kinds, numbers, strict=True):
        tokens: tuple[Token, ...] = ((PLAIN, text),) if kind in (HEADER, MARKER) else ()
        if kind in (ADDED, REMOVED):
            # Each version carries its own open string: a removed line's quote is not the new one's.
            side = "new" if kind == ADDED else "old"
            tokens, quotes[side] = highlight(text[1:], quotes[side])
        elif kind == CONTEXT:  # in both versions: shown as the old one reads it
            quotes["new"] = highlight(text[1:], quotes["new"])[1]
            tokens, quotes["old"] = highlight(text[1:], quotes["old"])
        elif kind == HEADER:
            quotes = {"old": None, "new": None}
        ran = (kind == REMOVED and old in executed_old) or (kind == ADDED and new in executed_new)
        lines.append(DiffLine(kind, text, old, new, ran, tokens))
    return tuple(lines)


def _number(
    numbers: list[tuple[int | None, int | None]],
    kinds: list[str],
    order: range,
    old: int,
    new: int,
    step: int,
) -> None:
    for i in order:
        kind = kinds[i]
        if kind in (HEADER, MARKER):
            return
        numbers[i] = (old if kind != ADDED else None, new if kind != REMOVED else None)
        old += step if kind != ADDED else 0
        new += step if kind != REMOVED else 0


def window(lines: tuple[DiffLine, ...], most: int) -> list[DiffLine]:
    """At most `most` lines of an excerpt for a short view (the terminal, a shrunk summary): the
    header, then the lines around the first changed line that ran, markers saying what is left out."""
    if len(lines) <= most or most < 4:
        return list(lines[: max(most, 0)])
    head = 1 if lines[0].kind == HEADER else 0
    body = lines[head:]
    focus = next((i for i, line in enumerate(body) if line.ran), None)
    if focus is None:
        focus = next((i for i, line in enumerate(body) if line.changed), 0)
    room = most - head - 2  # a marker before and after, when needed
    first = focus  # the change the focus is part of, from its first line, with a line before it
    while first > 0 and body[first - 1].changed and focus - first < room - 2:
        first -= 1
    start = max(0, min(first - 1, len(body) - room))
    end = min(len(body), start + room)
    shown: list[DiffLine] = list(lines[:head])
    if start:
        shown.append(_marker(start))
    shown.extend(body[start:end])
    if end < len(body):
        shown.append(_marker(len(body) - end))
    return shown


def _marker(count: int) -> DiffLine:
    text = f"… {count} line{'s' if count != 1 else ''} not shown"
    return DiffLine(MARKER, text, None, None, False, ((PLAIN, text),))


# ---- Suspects, read defensively ----------------------------------------------------------------


def _text(value: object, limit: int = NAME_CHARS_MAX) -> str | None:
    return clip(value, limit) if isinstance(value, str) else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _lines(value: object) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value[:10_000] if isinstance(v, int) and not isinstance(v, bool))


def _span(value: object) -> tuple[int, int] | None:
    found = _lines(value)
    return (found[0], found[1]) if len(found) == 2 else None


@dataclass(frozen=True)
class SuspectView:
    """One suspect hunk as the views show it."""

    rank: int  # 1 for the most suspicious
    file: str
    function: str
    score: float
    passed: int  # 1: the passing probe ran the changed lines too
    documentation_only: bool
    executed_old: tuple[int, ...]
    executed_new: tuple[int, ...]
    old_lines: tuple[int, int] | None
    new_lines: tuple[int, int] | None
    excerpt: str
    only_in: str | None  # "old" or "new"
    caller: str | None
    old_link: str | None  # checked with `safe_link`
    new_link: str | None

    @property
    def changed_executed(self) -> int:
        return len(self.executed_old) + len(self.executed_new)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.function}"

    @functools.cached_property
    def diff(self) -> tuple[DiffLine, ...]:
        return diff_lines(self.excerpt, frozenset(self.executed_old), frozenset(self.executed_new))

    @classmethod
    def read(cls, rank: int, data: dict[str, Any]) -> SuspectView:
        score = data.get("score")
        only_in = data.get("only_in")
        return cls(
            rank=rank,
            file=_text(data.get("file")) or "?",
            function=_text(data.get("function")) or "?",
            score=float(score) if isinstance(score, int | float) and not isinstance(score, bool) else 0.0,
            passed=_count(data.get("passed")),
            documentation_only=data.get("documentation_only") is True,
            executed_old=_lines(data.get("executed_old")),
            executed_new=_lines(data.get("executed_new")),
            old_lines=_span(data.get("old_lines")),
            new_lines=_span(data.get("new_lines")),
            excerpt=_text(data.get("excerpt"), EXCERPT_LINES_MAX * (LINE_CHARS_MAX + 1)) or "",
            only_in=only_in if only_in in ("old", "new") else None,
            caller=_text(data.get("caller")),
            old_link=safe_link(data.get("old_link")),
            new_link=safe_link(data.get("new_link")),
        )


@dataclass(frozen=True)
class SuspectsView:
    suspects: tuple[SuspectView, ...]  # at most SUSPECTS_KEPT, best first
    total: int  # how many the narrowing found (the log keeps the first SUSPECTS_KEPT)
    files_traced: int
    files_changed: int
    hunks: int
    missing_sources: tuple[str, ...]
    executed_python_changed: bool  # False: no Python the failing probe ran changed (docs aside)


def suspects_of(narrowing: Narrowing) -> SuspectsView | None:
    """The narrowing's suspects, or None when it has none to show (not traced, tracing failed)."""
    data = narrowing.suspects
    if not isinstance(data, dict):
        return None
    listed = data.get("suspects")
    items = [s for s in listed[:SUSPECTS_KEPT] if isinstance(s, dict)] if isinstance(listed, list) else []
    suspects = tuple(SuspectView.read(rank, item) for rank, item in enumerate(items, 1))
    changed = data.get("executed_python_changed")
    missing = data.get("missing_sources")
    return SuspectsView(
        suspects=suspects,
        total=max(_count(data.get("suspects_total")), len(suspects)),
        files_traced=_count(data.get("files_traced")),
        files_changed=_count(data.get("files_changed")),
        hunks=_count(data.get("hunks")),
        missing_sources=tuple(
            clip(m, NAME_CHARS_MAX)
            for m in (missing if isinstance(missing, list) else [])[:100]
            if isinstance(m, str)
        ),
        executed_python_changed=(
            changed if isinstance(changed, bool) else any(not s.documentation_only for s in suspects)
        ),
    )


# ---- The rest of a narrowing --------------------------------------------------------------------


def dependencies_of(narrowing: Narrowing) -> list[DependencyChange]:
    """The dependency changes, those the failing probe imported first, then by name."""
    changes = narrowing.dependencies[:DEPENDENCIES_MAX]
    return sorted(changes, key=lambda change: (not change.imported, change.name))


def notes_of(narrowing: Narrowing) -> list[str]:
    return [clip(note, NOTE_CHARS_MAX) for note in narrowing.notes[:NOTES_MAX]]


def ordered_steps(narrowing: Narrowing) -> list[Step]:
    """The narrowing's steps in version order: the release before, the builds between, the release after."""
    old, new = narrowing.release_range
    place = {version: i for i, version in enumerate(narrowing.candidates)}
    place[old], place[new] = -1, len(place)

    def key(step: Step) -> int:
        return place.get(step.version, len(place) + 1)

    return sorted(narrowing.steps, key=key)
