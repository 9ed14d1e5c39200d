"""What the views show of a narrowing beyond its log model: the notes in words (findings.py has
them), the dependency changes in reading order, and each suspect's diff excerpt cut into lines with
their kind, numbers and simple Python highlighting, so the HTML template only prints fixed class
names around escaped text.

The log model (`search.narrowlog`) is read defensively once, where the log is read: the suspects'
sizes are bounded there and their links kept only when they point at GitHub.  The excerpts are
bounded again here, line by line, for the views.
"""

from __future__ import annotations

import functools
import keyword
import re
from dataclasses import dataclass

from tfbisect.core.textsafe import clip
from tfbisect.report.findings import note_text
from tfbisect.search.narrowlog import (
    EXCERPT_LINES_MAX,
    LINE_CHARS_MAX,
    DependencyChange,
    Narrowing,
    Suspect,
    Suspects,
)
from tfbisect.search.narrowlog import safe_link as safe_link
from tfbisect.search.steps import Step

# Bounds for what a (possibly edited) log can put in front of a reader.
NOTES_MAX = 50
NOTE_CHARS_MAX = 1000
DEPENDENCIES_MAX = 500

_HEADER = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


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
    raw = [clip(line, LINE_CHARS_MAX, mark="…") for line in excerpt.split("\n")[:EXCERPT_LINES_MAX]]
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


# ---- Suspects -----------------------------------------------------------------------------------


def suspects_of(narrowing: Narrowing) -> Suspects | None:
    """The narrowing's suspects, or None when it has none to show (not traced, tracing failed)."""
    return narrowing.suspects


@functools.lru_cache(maxsize=256)
def diff_of(suspect: Suspect) -> tuple[DiffLine, ...]:
    """A suspect's excerpt as diff lines (the HTML report, the terminal and the summary each ask)."""
    return diff_lines(suspect.excerpt, frozenset(suspect.executed_old), frozenset(suspect.executed_new))


# ---- The rest of a narrowing --------------------------------------------------------------------


def dependencies_of(narrowing: Narrowing) -> list[DependencyChange]:
    """The dependency changes, those the failing probe imported first, then by name."""
    changes = narrowing.dependencies[:DEPENDENCIES_MAX]
    return sorted(changes, key=lambda change: (not change.imported, change.name))


def notes_of(narrowing: Narrowing) -> list[str]:
    """The notes in words, as many and as long as a view shows."""
    return [clip(note_text(note), NOTE_CHARS_MAX, mark="…") for note in narrowing.notes[:NOTES_MAX]]


def ordered_steps(narrowing: Narrowing) -> list[Step]:
    """The narrowing's steps in version order: the release before, the builds between, the release after."""
    return narrowing.ordered_steps()
