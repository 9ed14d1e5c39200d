"""Links from an installed file's lines to its source on GitHub, at the release's tag or a nightly's commit."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class SourceRepository:
    """Where installed files of a package's releases live on GitHub."""

    installed: str  # the installed path prefix this row covers
    since: tuple[int, ...]  # the first release it covers
    before: tuple[int, ...] | None  # the first release it no longer covers
    repository: str  # owner/name
    in_repository: str  # what the installed prefix is called in the repository


SOURCE_REPOSITORIES = (
    SourceRepository("tensorflow/", (0,), None, "tensorflow/tensorflow", "tensorflow/"),
    # TF 2.0 and 2.1 installed their Python under `tensorflow_core`; the repository says `tensorflow`.
    SourceRepository("tensorflow_core/", (1, 15), (2, 2), "tensorflow/tensorflow", "tensorflow/"),
    SourceRepository("keras/", (2, 6), (3,), "keras-team/keras", "keras/"),
    SourceRepository("keras/src/", (3,), None, "keras-team/keras", "keras/src/"),
    SourceRepository("tf_keras/", (2,), None, "keras-team/tf-keras", "tf_keras/"),
)
# Installed files that a build generates (the API tree, op wrappers): the repository has none.
GENERATED = re.compile(
    r"^(?:tensorflow(?:_core)?/(?:_api/|__init__\.py$|.*/gen_[^/]*\.py$)|keras/api/|tf_keras/api/)"
)


def _release(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split("."):
        digits = part[: len(part) - len(part.lstrip("0123456789"))]
        if not digits:
            break
        numbers.append(int(digits))
        if digits != part:
            break
    return tuple(numbers)


def release_tag(version: str) -> str | None:
    """The git tag of a released version: "2.4.0" -> "v2.4.0", "2.4.0rc1" -> "v2.4.0-rc1" (the
    TensorFlow convention); None for a nightly or dev build, which has a commit, not a tag."""
    found = re.fullmatch(r"(\d+\.\d+\.\d+)(?:(rc)(\d+))?", version)
    if found is None:
        return None
    base, rc, number = found.groups()
    return f"v{base}-rc{number}" if rc else f"v{base}"


def github_link(path: str, version: str, first: int, last: int, ref: str | None = None) -> str | None:
    """A link to lines `first`..`last` of an installed file at the release's tag (or at `ref`, a
    commit), or None when no repository is known for it or the file is generated at build time."""
    if GENERATED.match(path) or first < 1 or last < first:
        return None
    release = _release(version)
    for row in SOURCE_REPOSITORIES:
        if not path.startswith(row.installed) or release < row.since:
            continue
        if row.before is not None and release >= row.before:
            continue
        tag = ref or release_tag(version)
        if tag is None:
            return None
        where = row.in_repository + path[len(row.installed) :]
        return f"https://github.com/{row.repository}/blob/{tag}/{where}#L{first}-L{last}"
    return None


def suspect_link(
    path: str, version: str | None, lines: tuple[int, int] | None, tf_ref: str | None
) -> str | None:
    """A link to the lines at the version's tag; a TensorFlow file of a nightly at its commit."""
    if version is None or lines is None:
        return None
    ref = tf_ref if path.startswith(("tensorflow/", "tensorflow_core/")) else None
    return github_link(path, version, *lines, ref=ref)
