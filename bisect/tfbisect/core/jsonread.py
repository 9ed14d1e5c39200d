"""The one reader of JSON from outside this process: result documents, traces, logs, records,
the catalogue, an image's loader check, a server's answer, the files a swarm task leaves.

Anything read may have been written or edited by someone else, so it is read the strict way:
never more than the reader's size cap, UTF-8 only, no NaN or Infinity (which JSON does not
have and no record can store), no float that overflows to infinity and no integer too long to
format.  What is wrong comes back as the standard exceptions (OSError, `TooLarge` and
UnicodeDecodeError, which are ValueErrors, ValueError, RecursionError), so that each caller
keeps its own words for it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class TooLarge(ValueError):
    """The file is larger than its reader's cap: it is not read."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes, over the cap of {limit}")
        self.size = size
        self.limit = limit


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as inf, which no record can store
        raise ValueError(f"{text[:40]} is too large for a JSON number tfbisect keeps")
    return value


def _small_int(text: str) -> int:
    if len(text.lstrip("-")) > 30:  # 10**4000 is valid JSON, and breaks every formatter downstream
        raise ValueError(f"an integer of {len(text)} digits is too large for tfbisect")
    return int(text)


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON does not have: a record must stay JSON.
    raise ValueError(f"{name} is not a JSON value (write null for a missing number)")


def _null(name: str) -> None:
    return None


def loads(raw: bytes | str, *, constants_as_null: bool = False) -> Any:
    """`raw` (UTF-8 bytes or text) as a JSON value, read strictly; `constants_as_null` reads NaN
    and Infinity as null instead of refusing them (a document reduced to a few fields anyway)."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return json.loads(
        text,
        parse_constant=_null if constants_as_null else _no_constant,
        parse_float=_finite_float,
        parse_int=_small_int,
    )


def read(path: Path, *, max_bytes: int | None) -> Any:
    """The JSON file at `path`, read strictly; `TooLarge` past `max_bytes` (None: the file is
    tfbisect's own, bounded when it was written)."""
    if max_bytes is not None and (size := path.stat().st_size) > max_bytes:
        raise TooLarge(size, max_bytes)
    raw = path.read_bytes()
    if max_bytes is not None and len(raw) > max_bytes:  # it grew after the stat
        raise TooLarge(len(raw), max_bytes)
    return loads(raw)
