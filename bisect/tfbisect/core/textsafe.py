"""Text from scenarios, logs and servers made safe to show: no terminal control, nothing
invisible, bounded size.

A scenario's output and messages end up on the user's terminal, in stored records, in the HTML
report, the Markdown summary and the PNG matrix.  Escape sequences in them could retitle or clear
the terminal (or worse); bidirectional controls and zero-width characters could make text read
other than it is (a "Trojan Source" line, a name that looks like another); a newline in a one-line
field could forge a whole line of output; and a single 200 MB line must not become a 200 MB
record.  These helpers are where all of it is stopped, and every view calls the same ones:
`printable` for text that may keep its lines, `one_line` for a field shown on one line, `clip`
for a bound.
"""

from __future__ import annotations

import re
from typing import Any

from tfbisect.core.limits import TEXT_MAX_CHARS

# Characters that are there but not seen, or that change how the text around them is seen:
# every format character (Unicode category Cf: the bidirectional embeddings, overrides and
# isolates U+202A-202E and U+2066-2069, the marks U+200E/200F/061C, zero-width space, joiners
# and no-break space U+200B-200D/U+2060/U+FEFF, soft hyphen, tags, ...), the line and paragraph
# separators U+2028/2029 (a line break to some viewers) and the Hangul fillers (blank letters).
# A test checks that this covers every Cf, Zl and Zp character of the running Python.
_INVISIBLE = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\u3164\ufeff\uffa0\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
# C0 controls but tab and newline, DEL, and the C1 range (which some terminals obey too).
_CONTROL = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f{_INVISIBLE}]")
_CONTROL_ALL = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f{_INVISIBLE}]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Deeper than this, a document is cut: nothing a scenario reports needs it, and recursion in
# json/jsonschema/jinja2 on a hostile document must stay far below the interpreter's limit.
MAX_DEPTH = 32
MAX_ITEMS = 4096
# About how many characters of JSON a document keeps: real ones are tens of kilobytes.
DOCUMENT_BUDGET = 512 * 1024
CUT = "[cut: the document is larger than tfbisect keeps]"


# A field shown on one line (a probe's name or summary, an error message) is cut to this.
LINE_MAX_CHARS = 2000


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, *, newlines: bool = True) -> str:
    """`text` with control and invisible characters shown as `\\xNN`/`\\uNNNN` (newlines and
    tabs kept if asked) and lone surrogates (which no terminal or file encoding accepts) replaced."""
    return (_CONTROL if newlines else _CONTROL_ALL).sub(_escape, no_surrogates(text))


def one_line(value: object, limit: int = LINE_MAX_CHARS, *, mark: str = "…") -> str:
    """A field of free text (from a scenario, a log, an index) as one line of output: clipped to
    `limit` characters, then every control and invisible character escaped, newlines included,
    so that it can never forge a line of its own."""
    return printable(clip(str(value), limit, mark=mark), newlines=False)


def no_surrogates(text: str) -> str:
    """JSON may carry lone surrogates ("\\ud800"); UTF-8 cannot: they become U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def clip(text: str, limit: int = TEXT_MAX_CHARS, *, mark: str | None = None) -> str:
    """At most `limit` characters, the cut said in the text itself: by how much (stored text,
    where the reader should know what is missing), or, with `mark` ("…"), by that mark within
    `limit` (a label or a line with no room to say more)."""
    if len(text) <= limit:
        return text
    if mark is not None:
        return text[: max(0, limit - len(mark))] + mark
    return text[:limit] + f" … [{len(text) - limit} characters cut by tfbisect]"


def bounded(value: Any, *, budget: int = DOCUMENT_BUDGET) -> Any:
    """A copy of a JSON value with long strings clipped, long lists shortened, deep nesting cut
    and the whole kept within `budget` (about characters of JSON); every cut says so in place."""
    left = [budget]

    def walk(item: Any, depth: int) -> Any:
        if left[0] <= 0:
            return CUT
        if isinstance(item, str):
            clipped = clip(no_surrogates(item))
            left[0] -= len(clipped) + 2
            return clipped
        if isinstance(item, dict | list) and depth >= MAX_DEPTH:
            return f"[nested deeper than {MAX_DEPTH} levels; cut by tfbisect]"
        left[0] -= 2  # every container costs, or nested empty lists would be free
        if isinstance(item, dict):
            out: dict[str, Any] = {}
            for key, inner in list(item.items())[:MAX_ITEMS]:
                name = clip(no_surrogates(str(key)), 200)
                left[0] -= len(name) + 4
                out[name] = walk(inner, depth + 1)
                if left[0] <= 0:
                    break
            return out
        if isinstance(item, list):
            items = []
            for inner in item[:MAX_ITEMS]:
                items.append(walk(inner, depth + 1))
                if left[0] <= 0:
                    break
            return items
        left[0] -= len(repr(item)) + 2
        return item

    return walk(value, 0)
