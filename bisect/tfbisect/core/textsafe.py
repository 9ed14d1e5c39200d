"""Text from scenarios, logs and servers made safe to show: no terminal control, bounded size.

A scenario's output and messages end up on the user's terminal, in stored records and in the
HTML report.  Escape sequences in them could retitle or clear the terminal (or worse), and a
single 200 MB line must not become a 200 MB record; these helpers are where both are stopped.
"""

from __future__ import annotations

import re
from typing import Any

from tfbisect.core.limits import TEXT_MAX_CHARS

# C0 controls but tab and newline, DEL, and the C1 range (which some terminals obey too).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Deeper than this, a document is cut: nothing a scenario reports needs it, and recursion in
# json/jsonschema/jinja2 on a hostile document must stay far below the interpreter's limit.
MAX_DEPTH = 32
MAX_ITEMS = 4096
# About how many characters of JSON a document keeps: real ones are tens of kilobytes.
DOCUMENT_BUDGET = 512 * 1024
CUT = "[cut: the document is larger than tfbisect keeps]"


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, newlines: bool = True) -> str:
    """`text` with control characters shown as `\\xNN` (newlines and tabs kept if asked) and
    lone surrogates (which no terminal or file encoding accepts) replaced."""
    return (_CONTROL if newlines else _CONTROL_ALL).sub(_escape, no_surrogates(text))


def no_surrogates(text: str) -> str:
    """JSON may carry lone surrogates ("\\ud800"); UTF-8 cannot: they become U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def clip(text: str, limit: int = TEXT_MAX_CHARS) -> str:
    """At most `limit` characters, the cut said in the text itself."""
    if len(text) <= limit:
        return text
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
