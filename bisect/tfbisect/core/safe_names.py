"""Names that become part of a file name: a scenario's, a probe's, a variant's.

A scenario is a file anyone may name (`...py`, `a b$(x).py`) and a probe name is whatever the
user typed, so neither goes into a path as it is. `safe_component` keeps ordinary names
unchanged and turns anything else into one path component that cannot leave its folder,
hide itself, or confuse a terminal or a shell; distinct names stay distinct (a short hash of
the original is appended whenever a name had to change).
"""

from __future__ import annotations

import hashlib
import re

# Longest component: a bisection log name holds two of these plus a time stamp and the variant,
# and stays well under the 255 bytes most file systems allow for one name.
MAX_LENGTH = 80
_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_.-]+")
_DOTS = re.compile(r"\.{2,}")
_HASH_CHARS = 8


def is_safe_component(text: str) -> bool:
    """True when `text` can be one path component as it is (and `safe_component` keeps it)."""
    return len(text) <= MAX_LENGTH and ".." not in text and _SAFE.fullmatch(text) is not None


def safe_component(text: str) -> str:
    """`text` as one safe path component: ASCII letters, digits, `_`, `-` and `.` only, no `..`,
    no leading dot or dash, at most MAX_LENGTH characters. Deterministic; a name that is already
    safe (`gradient_eager_plain`) comes back unchanged, any other gets a hash of the original."""
    if is_safe_component(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    body = _DOTS.sub("_", _UNSAFE_RUN.sub("_", text))
    if body[:1] in (".", "-"):
        body = "_" + body[1:]
    body = body[: MAX_LENGTH - _HASH_CHARS - 1] or "_"
    return f"{body}-{digest}"
