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


def diff_file(path: str, old: str | None, new: str | None) -> FileDiff:
    """The hunks between two versions of one file (None: the file is absent in that version)."""
    if old == new:
        return FileDiff(path, old, new, ())
    a = source_lines(old) if old is not None else []
    b = source_lines(new) if new is not None else []
    hunks = []
    # The same matcher `difflib.unified_diff` uses, so the hunks are the ones `diff -u` people know.
    for group in difflib.SequenceMatcher(None, a, b).get_grouped_opcodes(CONTEXT_LINES):
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
    return FileDiff(path, old, new, tuple(hunks))


def diff_sources(
    old: Mapping[str, str], new: Mapping[str, str], paths: Iterable[str] | None = None
) -> list[FileDiff]:
    """The files that differ (present in either version), in path order; `paths` narrows them."""
    chosen = sorted(set(paths) if paths is not None else set(old) | set(new))
    diffs = []
    for path in chosen:
        before, after = old.get(path), new.get(path)
        if before != after:
            diffs.append(diff_file(path, before, after))
    return diffs


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
