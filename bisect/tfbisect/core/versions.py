"""Version strings: parsing, TF minor lines, nightlies, and where in git a build comes from
(the tag a release was cut from, the commit in a build's `tf.version.GIT_VERSION`)."""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

# `git describe` output as TF builds stamp it: `<tag>-<commits since>-g<abbreviated sha>`, e.g.
# "v1.12.1-123456-gabcdef0123" (nightlies describe master from an old tag), or a bare full sha.
# GIT_VERSION comes from a scenario's output, so it is read strictly and with bounded lengths:
# anything else (a plain tag such as "v2.4.0-rc4", "unknown", garbage) names no commit.
_DESCRIBE = re.compile(r"[0-9A-Za-z._+-]{1,100}?-[0-9]{1,9}-g(?P<sha>[0-9a-f]{7,40})(?:-dirty)?", re.ASCII)
_FULL_SHA = re.compile(r"[0-9a-f]{40}", re.ASCII)
_GIT_VERSION_MAX = 200
# PEP 440 spells TF's pre-release tags short: `2.0.0a0` was tagged `v2.0.0-alpha0`.
_TAG_WORDS = {"a": "alpha", "b": "beta", "rc": "rc"}


def parse(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def minor_line(version: str) -> str:
    """`2.10.1` -> `2.10`."""
    parsed = Version(version)
    return f"{parsed.major}.{parsed.minor}"


def tox_factor(line: str) -> str:
    """`2.10` -> `tf210`, the tox env of that line."""
    major, minor = line.split(".")[:2]
    return f"tf{major}{minor}"


def python_tag(python: str) -> str:
    """`3.10` -> `cp310`."""
    major, minor = python.split(".")[:2]
    return f"cp{major}{minor}"


def python_sort_key(python: str) -> tuple[int, int]:
    major, minor = python.split(".")[:2]
    return int(major), int(minor)


def is_nightly(version: str) -> bool:
    """A PEP 440 dev release (`2.23.0.dev20261012`): how tf-nightly numbers its daily builds."""
    parsed = parse(version)
    return parsed is not None and parsed.is_devrelease


def git_tag(version: str) -> str:
    """The tag in tensorflow/tensorflow a PyPI release corresponds to.

    PyPI `2.15.0.post1` was a packaging fix of the `v2.15.0` tag; PEP 440 spells release
    candidates `2.16.0rc0` where the tags say `v2.16.0-rc0`.  A nightly was built from a
    commit on master, not from a tag: it raises ValueError (use `commit_of` on its GIT_VERSION).
    """
    parsed = Version(version)
    if parsed.is_devrelease:
        raise ValueError(
            f"{version} is a nightly build: no tag names it; its commit is in tf.version.GIT_VERSION"
        )
    base = ".".join(str(part) for part in parsed.release)
    if parsed.pre is not None:
        letter, number = parsed.pre
        return f"v{base}-{_TAG_WORDS.get(letter, letter)}{number}"
    return f"v{base}"


def commit_of(git_version: object) -> str | None:
    """The commit a `tf.version.GIT_VERSION` names: "v1.12.1-123456-gabcdef0123" -> "abcdef0123",
    a full 40-hex sha -> itself; a tag alone ("v2.4.0-rc4"), "unknown" or anything else -> None.

    Typed `object` on purpose: the value is read from a run's JSON output and may be anything."""
    if not isinstance(git_version, str) or len(git_version) > _GIT_VERSION_MAX:
        return None
    if _FULL_SHA.fullmatch(git_version):
        return git_version
    match = _DESCRIBE.fullmatch(git_version)
    return match["sha"] if match else None
