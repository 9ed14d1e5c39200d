"""Reading the package index over HTTP: the catalogue's refresh (`tfbisect versions --refresh`),
beside the lock resolver that reads the same index through uv.  The catalogue itself (core/)
only parses what is read here, so nothing below the environments touches the network."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable

from tfbisect.core import jsonread
from tfbisect.core.catalogue import (
    DEFAULT_INDEX,
    OPTIONAL_PROJECTS,
    PROJECTS,
    Catalogue,
    Dist,
    dists_from_simple_json,
)
from tfbisect.core.errors import CatalogueError
from tfbisect.core.fsio import now_iso
from tfbisect.envs import pages

_TODO = (
    "check that --index-url is a PEP 691 simple index that has TensorFlow, or work offline from "
    "the committed snapshot (omit --refresh)."
)


def fetch(
    index_url: str = DEFAULT_INDEX, projects: Iterable[str] = PROJECTS, timeout: float = 60
) -> Catalogue:
    dists: list[Dist] = []
    for project in projects:
        url = f"{index_url.rstrip('/')}/{project}/"
        request = urllib.request.Request(url, headers={"Accept": pages.JSON_PAGE})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                kind = response.headers.get("Content-Type", "")
                chunks = iter(lambda: response.read(pages.CHUNK_BYTES), b"")
                body = pages.bounded(chunks, pages.declared_length(response.headers))
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the error response open
            if exc.code == 404 and project in OPTIONAL_PROJECTS:
                continue
            raise CatalogueError(f"Could not read {url}: {exc}.", _TODO) from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise CatalogueError(
                f"Could not read {url}: {exc}.",
                "check the network or proxy settings, or work offline from the committed snapshot "
                "(omit --refresh).",
            ) from exc
        if "json" not in kind:
            raise CatalogueError(
                f"{url} answered {kind or 'no content type'}, not the PEP 691 JSON simple API.",
                "point --index-url at an index that serves application/vnd.pypi.simple.v1+json.",
            )
        dists.extend(dists_from_simple_json(project, _document(url, body)))
    return Catalogue(dists=tuple(dists), fetched_at=now_iso(), index_url=index_url)


def _document(url: str, body: bytes | None) -> object:
    """The page's JSON, or a two-part error: a page over the bound or not JSON is not read."""
    if body is None:
        raise CatalogueError(pages.too_large(f"the index's page {url}") + ".", _TODO)
    try:
        return jsonread.loads(body)
    except (ValueError, RecursionError) as exc:
        raise CatalogueError(f"The index's page {url} is not JSON ({str(exc)[:120]}).", _TODO) from None
