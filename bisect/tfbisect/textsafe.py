"""Text from scenarios, logs and servers made safe to show: no terminal control, bounded size.

A scenario's output and messages end up on the user's terminal, in stored records and in the
HTML report.  Escape sequences in them could retitle or clear the terminal (or worse), and a
single 200 MB line must not become a 200 MB record; these helpers are where both are stopped.
"""

from __future__ import annotations

import re
from typing import Any

from tfbisect.limits import TEXT_MAX_CHARS

# C0 controls but tab and newline, DEL, and the C1 range (which some terminals obey too).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Deeper than this, a document is cut: nothing a scenario reports needs it, and recursion in
# json/jsonschema/jinja2 on a hostile document must stay far below the interpreter's limit.
MAX_DEPTH = 32
MAX_ITEMS = 4096


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, newlines: bool = True) -> str:
    """`text` with control characters shown as `\\xNN` (newlines and tabs kept if asked)."""
    return (_CONTROL if newlines else _CONTROL_ALL).sub(_escape, text)


def clip(text: str, limit: int = TEXT_MAX_CHARS) -> str:
    """At most `limit` characters, the cut said in the text itself."""
    if len(text) <= limit:
        return text
    return text[:limit] + f" … [{len(text) - limit} characters cut by tfbisect]"


def bounded(value: Any, *, depth: int = 0) -> tuple[Any, int]:
    """A copy of a JSON value with long strings clipped, long lists shortened and deep nesting
    cut; returns it with the number of cuts made (0 when it came through whole)."""
    if isinstance(value, str):
        clipped = clip(value)
        return clipped, int(clipped is not value)
    if depth >= MAX_DEPTH and isinstance(value, dict | list):
        return f"[nested deeper than {MAX_DEPTH} levels; cut by tfbisect]", 1
    if isinstance(value, dict):
        cuts = 0
        out: dict[str, Any] = {}
        for key, item in list(value.items())[:MAX_ITEMS]:
            out[clip(str(key), 200)], n = bounded(item, depth=depth + 1)
            cuts += n
        return out, cuts + int(len(value) > MAX_ITEMS)
    if isinstance(value, list):
        cuts = int(len(value) > MAX_ITEMS)
        items = []
        for item in value[:MAX_ITEMS]:
            bounded_item, n = bounded(item, depth=depth + 1)
            items.append(bounded_item)
            cuts += n
        return items, cuts
    return value, 0
