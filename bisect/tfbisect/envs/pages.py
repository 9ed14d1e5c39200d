"""An index's answer read within a bound: the one reader of PEP 691 pages, for the catalogue's
refresh (envs/index.py, through urllib) and the wheel cache's fetch (envs/wheelfetch.py,
through requests).  A server is not trusted to keep its page small: the declared length is
checked before anything is read, and the body is read in chunks that stop one past the bound,
so a hostile or broken index costs at most PAGE_MAX_BYTES of memory, never the machine's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# PyPI's largest page a lock or the catalogue reads (tf-nightly's, every nightly's files) is
# about 1.1 MB; a bound thirty times that leaves room for a mirror's longer history.
PAGE_MAX_BYTES = 32 * 1024 * 1024
CHUNK_BYTES = 1 << 16
JSON_PAGE = "application/vnd.pypi.simple.v1+json"


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The Content-Length a server declared, when it is a plain count."""
    value = (headers.get("Content-Length") or "").strip()
    return int(value) if value.isdigit() and len(value) < 20 else None


def bounded(chunks: Iterable[bytes], declared: int | None) -> bytes | None:
    """The whole body when it fits in PAGE_MAX_BYTES, else None; past the bound (or when the
    server declared more than it), nothing more is read."""
    limit = PAGE_MAX_BYTES  # read at each call, so a test can lower it
    if declared is not None and declared > limit:
        return None
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def too_large(what: str) -> str:
    """The first half of the message for a page over the bound."""
    return f"{what} is over {PAGE_MAX_BYTES // 2**20} MiB: not read"
