"""The diff of two versions of the traced files, as `diff -u` shows it, and its excerpts."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from tfbisect.core.textsafe import clip
from tfbisect.narrow.sources import source_lines

CONTEXT_LINES = 3  # as `diff -u`
EXCERPT_MAX_LINES = 40
EXCERPT_LINE_MAX_CHARS = 200


@dataclass(frozen=True)
class Hunk:
    """One hunk of `diff -u`, with its changed lines numbered in each version."""

    old_first: int  # the hunk's first line in the old version, context included (1-based)
    old_last: int  # its last; below old_first when the hunk has no old lines
    new_first: int
    new_last: int
    old_changed: tuple[int, ...]  # old lines the hunk removes or replaces
    new_changed: tuple[int, ...]  # new lines it adds or puts in their place
    body: tuple[str, ...]  # " context", "-old", "+new", as `diff -u` prints them

    @property
    def header(self) -> str:
        return f"@@ -{_unified_range(self.old_first, self.old_last)} +{_unified_range(self.new_first, self.new_last)} @@"


def _unified_range(first: int, last: int) -> str:
    """`diff -u`'s range: "start,count", "start" for one line, the line before for none."""
    count = last - first + 1
    if count == 1:
        return str(first)
    return f"{first - 1 if count == 0 else first},{count}"


@dataclass(frozen=True)
class FileDiff:
    path: str  # the installed path, "keras/src/losses.py"
    old: str | None  # the old version's text; None when the file is new
    new: str | None  # the new version's text; None when the file is gone
    hunks: tuple[Hunk, ...]
    # Where the old text was when the file moved (`keras/losses.py` -> `keras/src/losses.py`): the
    # hunks are then those of the move's two texts, and the old line numbers are that file's.
    old_path: str | None = None
    # The unchanged lines: (old first, new first, count) blocks, 1-based, as the matcher found them.
    same: tuple[tuple[int, int, int], ...] = ()

    @property
    def old_at(self) -> str:
        """The path of the old version's text."""
        return self.old_path or self.path


def diff_file(path: str, old: str | None, new: str | None, old_path: str | None = None) -> FileDiff:
    """The hunks between two versions of one file (None: the file is absent in that version)."""
    if old == new:
        return FileDiff(path, old, new, (), old_path)
    a = source_lines(old) if old is not None else []
    b = source_lines(new) if new is not None else []
    hunks = []
    # The same matcher `difflib.unified_diff` uses, so the hunks are the ones `diff -u` people know.
    matcher = difflib.SequenceMatcher(None, a, b)
    same = tuple((i1 + 1, j1 + 1, i2 - i1) for tag, i1, i2, j1, _ in matcher.get_opcodes() if tag == "equal")
    for group in matcher.get_grouped_opcodes(CONTEXT_LINES):
        body: list[str] = []
        old_changed: list[int] = []
        new_changed: list[int] = []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                body.extend(" " + line for line in a[i1:i2])
                continue
            body.extend("-" + line for line in a[i1:i2])
            body.extend("+" + line for line in b[j1:j2])
            old_changed.extend(range(i1 + 1, i2 + 1))
            new_changed.extend(range(j1 + 1, j2 + 1))
        first, last = group[0], group[-1]
        hunks.append(
            Hunk(
                old_first=first[1] + 1,
                old_last=last[2],
                new_first=first[3] + 1,
                new_last=last[4],
                old_changed=tuple(old_changed),
                new_changed=tuple(new_changed),
                body=tuple(body),
            )
        )
    return FileDiff(path, old, new, tuple(hunks), old_path, same)


def diff_sources(
    old: Mapping[str, str], new: Mapping[str, str], paths: Iterable[str] | None = None
) -> list[FileDiff]:
    """The files that differ (present in either version), in path order; `paths` narrows them.
    A file moved (or renamed) between the versions is diffed against its old self, under its
    new path: its unchanged text is unchanged, not every line removed and added."""
    chosen = sorted(set(paths) if paths is not None else set(old) | set(new))
    moved = moves(
        {path: old[path] for path in chosen if path in old and path not in new},
        {path: new[path] for path in chosen if path in new and path not in old},
    )
    gone = set(moved.values())
    diffs = []
    for path in chosen:
        if path in gone:
            continue
        before, after = old.get(path), new.get(path)
        if path in moved:
            diffs.append(diff_file(path, old[moved[path]], after, moved[path]))
        elif before != after:
            diffs.append(diff_file(path, before, after))
    return diffs


MOVE_MIN_SHARED = 0.5  # the share of a moved file's distinct lines that both texts hold
# A file only the new version has is compared with at most this many of the old version's files of
# its name, those with the longest common tail of folders first: a release that moves hundreds of
# `__init__.py` files costs hundreds of comparisons, not their square.
MOVE_CANDIDATES = 4


def moves(gone: Mapping[str, str], added: Mapping[str, str]) -> dict[str, str]:
    """New path -> old path, for the files only the new version has that are a file only the old
    one has, moved: the same name, the longest common tail of folders among those (the first
    MOVE_CANDIDATES of them), and at least half of the lines shared.  Each old file is paired
    once."""
    found: dict[str, str] = {}
    by_tail: dict[tuple[str, ...], list[str]] = {}  # a tail of folders and the name -> old paths
    for path in sorted(gone):
        parts = path.split("/")
        for size in range(1, len(parts) + 1):
            by_tail.setdefault(tuple(parts[-size:]), []).append(path)
    taken: set[str] = set()
    lines: dict[str, frozenset[str]] = {}  # each old file's distinct lines, made once
    for path in sorted(added):
        mine: frozenset[str] | None = None
        for candidate in _candidates(by_tail, path, taken):
            mine = mine if mine is not None else _distinct_lines(added[path])
            if candidate not in lines:
                lines[candidate] = _distinct_lines(gone[candidate])
            if _shared(lines[candidate], mine) >= MOVE_MIN_SHARED:
                found[path] = candidate
                taken.add(candidate)
                break
    return found


def _candidates(by_tail: Mapping[tuple[str, ...], list[str]], path: str, taken: set[str]) -> list[str]:
    """The old files of `path`'s name not yet paired, the longest common tail of folders first
    (then by path), at most MOVE_CANDIDATES of them."""
    parts = path.split("/")
    chosen: list[str] = []
    for size in range(len(parts), 0, -1):
        for candidate in by_tail.get(tuple(parts[-size:]), ()):
            if candidate not in taken and candidate not in chosen:
                chosen.append(candidate)
                if len(chosen) == MOVE_CANDIDATES:
                    return chosen
    return chosen


def _distinct_lines(text: str) -> frozenset[str]:
    return frozenset(line.strip() for line in source_lines(text) if line.strip())


def _shared(first: frozenset[str], second: frozenset[str]) -> float:
    """The share of the distinct non-blank lines of the larger text that the other text holds."""
    return len(first & second) / max(len(first), len(second), 1)


def excerpt(hunk: Hunk, executed_old: Collection[int], executed_new: Collection[int]) -> str:
    """The hunk as `diff -u` prints it, at most EXCERPT_MAX_LINES lines, centred on the first
    changed line that ran when the hunk is longer; long lines are cut."""
    body = list(hunk.body)
    budget = EXCERPT_MAX_LINES - 1  # the header
    start, end = 0, len(body)
    if len(body) > budget:
        budget -= 2  # room for a marker before and after
        focus = _first_executed(hunk, executed_old, executed_new)
        start = max(0, min(focus - CONTEXT_LINES, len(body) - budget))
        end = start + budget
    lines = [hunk.header]
    if start:
        lines.append(f"… {start} lines not shown")
    lines.extend(clip(line, EXCERPT_LINE_MAX_CHARS, mark="…") for line in body[start:end])
    if end < len(body):
        lines.append(f"… {len(body) - end} lines not shown")
    return "\n".join(lines)


def _first_executed(hunk: Hunk, executed_old: Collection[int], executed_new: Collection[int]) -> int:
    """The index in the hunk's body of the first changed line that ran (0 when none did)."""
    old_line, new_line = hunk.old_first, hunk.new_first
    for index, line in enumerate(hunk.body):
        kind = line[:1]
        if (kind == "-" and old_line in executed_old) or (kind == "+" and new_line in executed_new):
            return index
        if kind != "+":
            old_line += 1
        if kind != "-":
            new_line += 1
    return 0
