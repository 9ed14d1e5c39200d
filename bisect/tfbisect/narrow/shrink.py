"""Shrinking a proven revert to the minimal patch: the whole units' old text put back is split into
its changed blocks (line level, as `diff` finds them, without context), and a subset of them is
put back alone.  A block whose code tokens are the same on both sides (only docstrings, comments,
blank lines or the layout changed) is left out without a run; delta debugging (`proof.ddmin`, run
by `proof.Prover.shrink`) finds the fewest of the others that still restore the old behaviour.

Pure: texts in, texts out.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tfbisect.core.textsafe import one_line
from tfbisect.narrow.analysis import SourceVersion, same_code
from tfbisect.narrow.sources import source_lines


@dataclass(frozen=True, order=True)
class Change:
    """One changed block of a revert: the base's lines `start` to `end` (0-based, end excluded;
    equal for lines only added) replaced by `lines`."""

    path: str  # the installed path
    start: int
    end: int
    lines: tuple[str, ...]
    documentation: bool = False  # only docstrings, comments, blank lines or the layout change

    @property
    def label(self) -> str:
        """Where it is in the base (the first new version), as a person finds it there."""
        if self.end == self.start:
            return f"{self.path} after line {self.start}"
        if self.end == self.start + 1:
            return f"{self.path} line {self.start + 1}"
        return f"{self.path} lines {self.start + 1}-{self.end}"


def changes(base: Mapping[str, str], patched: Mapping[str, str]) -> list[Change]:
    """The changed blocks that turn each base file into its patched text, in path and line order,
    each marked when only documentation changes (the code tokens alike on both sides)."""
    found: list[Change] = []
    for path in sorted(patched):
        before, after = base.get(path, ""), patched[path]
        a, b = source_lines(before), source_lines(after)
        # The same matcher `diff -u` uses (narrow/diff.py), each change on its own (no context).
        opcodes = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
        versions = (SourceVersion({path: before}), SourceVersion({path: after}))
        for tag, i1, i2, j1, j2 in opcodes:
            if tag == "equal":
                continue
            lines = (range(i1 + 1, i2 + 1), range(j1 + 1, j2 + 1))
            documentation = same_code(versions, (path, path), lines)
            found.append(Change(path, i1, i2, tuple(b[j1:j2]), documentation))
    return found


def apply(base: Mapping[str, str], chosen: Iterable[Change]) -> dict[str, str]:
    """The base files the chosen blocks change, with only those blocks applied (the others as the
    base has them); files none of them touch are left out."""
    by_path: dict[str, list[Change]] = {}
    for change in chosen:
        by_path.setdefault(change.path, []).append(change)
    texts: dict[str, str] = {}
    for path, mine in sorted(by_path.items()):
        lines = source_lines(base.get(path, ""))
        for change in sorted(mine, reverse=True):  # from the end: the earlier lines keep their numbers
            lines[change.start : change.end] = change.lines
        texts[path] = "\n".join(lines) + "\n"
    return texts


def compile_error(texts: Mapping[str, str]) -> str | None:
    """Why one of the texts does not compile here ("SyntaxError: … (path, line 12)"), or None."""
    for path, text in sorted(texts.items()):
        try:
            with warnings.catch_warnings():  # an old escape like "\d" warns on stderr, mid-proof
                warnings.simplefilter("ignore")
                compile(text, path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            where = f" ({path}, line {exc.lineno})" if isinstance(exc, SyntaxError) else f" ({path})"
            return one_line(f"{type(exc).__name__}: {exc.args[0] if exc.args else exc}{where}", 300)
    return None


LABELS_SHOWN = 12  # a try's blocks named in its log entry; the rest counted


def labels(chosen: Sequence[Change]) -> tuple[str, ...]:
    """A try's blocks as its log entry names them: the first LABELS_SHOWN, then how many more."""
    shown = tuple(change.label for change in chosen[:LABELS_SHOWN])
    more = len(chosen) - LABELS_SHOWN
    return (*shown, f"{more} more changed blocks") if more > 0 else shown
