"""Both versions' Python sources: the `.py` members of wheels and the files of installed trees,
read as hostile input (members size-capped and path-checked, links out of a tree ignored)."""

from __future__ import annotations

import io
import re
import tokenize
import zipfile
from collections.abc import Collection, Iterable
from pathlib import Path

MEMBER_MAX_BYTES = 2 * 1024 * 1024  # larger .py members are generated tables, not code to read
SOURCES_MAX_BYTES = 512 * 1024 * 1024  # one environment's traced files (a TF step reads ~20 MB)

# A member stored under the wheel's data folder installs to the same place as a top-level one.
_DATA_FOLDER = re.compile(r"^[^/]+\.data/(?:purelib|platlib)/")


def member_path(name: str) -> str | None:
    """Where a wheel member installs ("keras/src/losses.py"), or None: not a `.py` file, or a
    path that could point outside the installation (absolute, `..`, backslashes, empty parts)."""
    if not name.endswith(".py") or name.startswith("/") or "\\" in name or "\x00" in name:
        return None
    parts = name.split("/")
    if ":" in parts[0] or any(part in ("", ".", "..") for part in parts):
        return None
    return _DATA_FOLDER.sub("", name, count=1)


def decode_source(data: bytes) -> str:
    """Python source text, decoded the way the interpreter would (PEP 263 cookie or UTF-8)."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:  # a malformed cookie: read as UTF-8 rather than lose the file
        encoding = "utf-8"
    try:
        return data.decode(encoding, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def read_wheel_sources(wheel: Path, only: Collection[str] | None = None) -> dict[str, str]:
    """The `.py` members of a wheel, by installed path; with `only`, just those paths.

    Members over `MEMBER_MAX_BYTES` (declared or read) and unsafe paths are left out.  A file that
    is not a zip raises `zipfile.BadZipFile`; a corrupt member raises it too (its CRC)."""
    sources: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir() or info.file_size > MEMBER_MAX_BYTES:
                continue
            path = member_path(info.filename)
            if path is None or (only is not None and path not in only):
                continue
            with archive.open(info) as stream:
                data = stream.read(MEMBER_MAX_BYTES + 1)  # the declared size can lie
            if len(data) > MEMBER_MAX_BYTES:
                continue
            sources[path] = decode_source(data)
    return sources


def read_sources(wheels: Iterable[Path], only: Collection[str] | None = None) -> dict[str, str]:
    """One environment's sources from all its wheels (tensorflow, keras, …), by installed path."""
    sources: dict[str, str] = {}
    for wheel in wheels:
        sources.update(read_wheel_sources(wheel, only))
    return sources


def read_installed(folder: Path, only: Collection[str]) -> dict[str, str]:
    """The `only` files of an installed tree (a site-packages folder), by installed path: regular
    files that resolve inside the folder (no link leads out), at most `MEMBER_MAX_BYTES` each."""
    sources: dict[str, str] = {}
    root = folder.resolve()
    total = 0
    for path in sorted(only):
        if member_path(path) != path:
            continue
        try:
            file = (folder / path).resolve()
            if not file.is_relative_to(root) or not file.is_file():
                continue
            with open(file, "rb") as stream:
                data = stream.read(MEMBER_MAX_BYTES + 1)
        except OSError:
            continue
        total += len(data)
        if len(data) > MEMBER_MAX_BYTES or total > SOURCES_MAX_BYTES:
            continue
        sources[path] = decode_source(data)
    return sources


def read_places(places: Iterable[Path], only: Collection[str]) -> dict[str, str]:
    """One environment's sources of `only` from where it keeps them: folders or wheel files."""
    sources: dict[str, str] = {}
    for place in places:
        if place.is_dir():
            sources.update(read_installed(place, only))
        elif place.suffix == ".whl":
            sources.update(read_wheel_sources(place, only))
    return sources


def source_lines(text: str) -> list[str]:
    """The lines as Python numbers them: only \\n, \\r\\n and \\r end a line (`str.splitlines`
    also splits at form feeds and other characters, and the numbers would drift)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines
