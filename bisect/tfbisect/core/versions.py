"""Version strings: parsing, TF minor lines and the GitHub tag a release was cut from."""

from __future__ import annotations

from packaging.version import InvalidVersion, Version


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


def git_tag(version: str) -> str:
    """The tag in tensorflow/tensorflow a PyPI release corresponds to.

    PyPI `2.15.0.post1` was a packaging fix of the `v2.15.0` tag; PEP 440 spells release
    candidates `2.16.0rc0` where the tags say `v2.16.0-rc0`.
    """
    parsed = Version(version)
    base = ".".join(str(part) for part in parsed.release)
    if parsed.pre is not None:
        letter, number = parsed.pre
        return f"v{base}-{letter}{number}"
    return f"v{base}"
