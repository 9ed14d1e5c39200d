"""The suspects: the hunks whose changed lines the failing probe ran, ranked the way spectrum-based
fault localisation ranks statements (Ochiai): what runs on the failing probe's path but not on the
passing one's first, more changed lines that ran before fewer, generated code after hand-written,
documentation-only changes last.  Pure logic: no process, no network."""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import math
import sys
import tokenize
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tfbisect.narrow.analysis import MODULE_LEVEL, Source, SourceVersion, same_code
from tfbisect.narrow.diff import FileDiff, Hunk, diff_sources, excerpt
from tfbisect.narrow.links import GENERATED, suspect_link
from tfbisect.narrow.sources import source_lines
from tfbisect.narrow.traces import ProbeTraces, Trace
from tfbisect.search import narrowlog
from tfbisect.search.narrowlog import SUSPECTS_KEPT, Suspect, Suspects

TOTAL_FAILED = 1  # one failing probe: Ochiai's denominator is sqrt(total_failed * (failed + passed))


def rank_key(suspect: Suspect, ties: TieBreak | None = None) -> tuple[object, ...]:
    """Documentation-only after code, generated code after hand-written, then by score; among
    equal scores (with one failing probe, most are) by what the traces say of the unit
    (`TieBreak`), then more changed lines that ran before fewer.

    The tie-breaks, strongest first, and why in that order:
    1. the unit's own unchanged lines ran differently in the two failing runs (`diverged`): its
       change did something to the run, the most direct evidence the traces hold;
    2. the changed lines that ran over the unit's size (`density`): a small edit in a small
       function before a rewrite spread over a big one;
    3. how early the failing runs part in the unit (`divergence`: how far along the path both
       runs share its first point of divergence lies): what differs first cannot be an effect of
       what differs after it, so the earliest divergence sits nearest the root of the change;
    4. the call depth from the probe's own code (`depth`): a unit the probe calls (nearly) directly
       shapes its answer more plainly than one deep in the machinery beneath;
    5. more changed lines that ran before fewer.
    3 and 4 come after density because on real traces they misled when they came first: in
    tensorflow#55573 (2.7.0rc0..rc1) refactorings of model construction (`Lambda.__init__`,
    `Layer.__init__`) part the runs long before the cause does, and the cause (`predict_step`)
    runs 28 calls deep; ahead of density they moved its best part from #4 to #11 of 29.
    Traces without order or depth (stored before the tracer recorded them, or a thread's lines)
    leave 2 and 3 tied (unknown after known), and the rest decides as before."""
    first = (suspect.new_lines or suspect.old_lines or (0, 0))[0]
    ties = ties or TieBreak(0, 0.0)
    return (
        suspect.documentation_only,
        suspect.generated,
        -suspect.score,
        -min(ties.diverged, 1),
        -ties.density,
        (ties.divergence is None, ties.divergence or 0),
        (ties.depth is None, ties.depth or 0),
        -suspect.changed_executed,
        suspect.file,
        first,
    )


@dataclass(frozen=True)
class TieBreak:
    """What the traces say of a suspect's unit besides its score."""

    # Unchanged lines of the unit that ran in one version's failing run and not in the other's:
    # the unit's own flow diverged there, so its change did something (a function that ran in
    # one version only counts none: its caller diverged).
    diverged: int
    # The changed lines that ran over the unit's size (its function's lines, or the file's at
    # module level): a small edit in a small function before a rewrite spread over a big one.
    density: float
    # How far along the failing runs' shared path the unit's earliest point of divergence lies
    # (`_Divergence`); None when the traces have no execution order or the unit parted nothing.
    divergence: int | None = None
    # The smallest call depth below the probe's frame at which the unit's lines ran; None unknown.
    depth: int | None = None


# The code whose text decides the suspects, hashed into a ranking's key: the whole narrow/
# package and the log's Suspects (what a ranking is kept as), and the host Python's major.minor
# (its tokenize and ast read sources differently).  A ranking kept by another version of any is
# not reused.
RANKED_BY_FOLDER = Path(__file__).parent
RANKED_BY_FILES = (Path(narrowlog.__file__),)


@functools.cache
def code_digest() -> bytes:
    """The hash of the code a ranking follows from (`RANKED_BY_*`), made once per process."""
    digest = hashlib.sha256(f"python {sys.version_info[0]}.{sys.version_info[1]}".encode())
    for path in (*sorted(RANKED_BY_FOLDER.glob("*.py")), *RANKED_BY_FILES):
        digest.update(json.dumps(path.name).encode("utf-8"))
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.digest()


class RankingMemo(Protocol):
    """Where rankings are kept by the hash of everything they follow from (`ranking_key`)."""

    def ranking(self, key: str) -> Suspects | None: ...
    def keep_ranking(self, key: str, suspects: Suspects) -> None: ...


def ranking_key(
    old_sources: Mapping[str, str],
    new_sources: Mapping[str, str],
    failing: ProbeTraces,
    passing: ProbeTraces | None,
    tf_refs: tuple[str | None, str | None],
) -> str:
    """The hash of all a ranking follows from: both versions' sources, the traces, the refs the
    links name, and the code that ranks (`code_digest`).  A repeated narrowing of the same builds
    finds the same key."""
    digest = hashlib.sha256(code_digest())
    for side, sources in (("old", old_sources), ("new", new_sources)):
        for path in sorted(sources):
            text = sources[path].encode("utf-8", "surrogatepass")
            digest.update(json.dumps([side, path, len(text)]).encode("utf-8") + text)
    traces = [failing.old, failing.new, *((passing.old, passing.new) if passing else ())]
    for trace in traces:
        lines = {path: sorted(found) for path, found in sorted(trace.lines.items())}
        first = {path: sorted(found.items()) for path, found in sorted(trace.first.items())}
        depth = {path: sorted(found.items()) for path, found in sorted(trace.depth.items())}
        digest.update(json.dumps([dict(trace.versions), lines, first, depth], sort_keys=True).encode("utf-8"))
    digest.update(json.dumps(list(tf_refs)).encode("utf-8"))
    return digest.hexdigest()


def kept_suspects(
    memo: RankingMemo,
    old_sources: Mapping[str, str],
    new_sources: Mapping[str, str],
    failing: ProbeTraces,
    passing: ProbeTraces | None = None,
    tf_refs: tuple[str | None, str | None] = (None, None),
) -> Suspects:
    """`find_suspects`, cut to what a log keeps, reused from `memo` when it ranked the same
    inputs before (a repeated bisection: seconds of parsing saved), else ranked and kept."""
    key = ranking_key(old_sources, new_sources, failing, passing, tf_refs)
    found = memo.ranking(key)
    if found is None:
        found = find_suspects(old_sources, new_sources, failing, passing, tf_refs).cut(SUSPECTS_KEPT)
        memo.keep_ranking(key, found)
    return found


def ochiai(failed: int, passed: int, total_failed: int = TOTAL_FAILED) -> float:
    """Ochiai's suspiciousness of one element: 1 for what only failing runs execute, less the more
    passing runs execute it too, 0 for what no failing run executes."""
    if failed == 0:
        return 0.0
    return failed / math.sqrt(total_failed * (failed + passed))


def find_suspects(
    old_sources: Mapping[str, str],
    new_sources: Mapping[str, str],
    failing: ProbeTraces,
    passing: ProbeTraces | None = None,
    tf_refs: tuple[str | None, str | None] = (None, None),
) -> Suspects:
    """The hunks between the two versions whose changed lines the failing probe ran, best first.

    A hunk touches executed code when a changed line of the old version ran in the old
    environment, or one of the new version ran in the new one.  Only files the failing probe
    ran can hold such a hunk, so only those are diffed."""
    old, new = SourceVersion(old_sources), SourceVersion(new_sources)
    traced = sorted(set(failing.old.lines) | set(failing.new.lines))
    missing = tuple(path for path in traced if path not in old_sources and path not in new_sources)
    diffs = diff_sources(old_sources, new_sources, [path for path in traced if path not in missing])
    divergence = _Divergence.of(failing, diffs, old, new)
    found: list[tuple[Suspect, TieBreak]] = []
    for diff in diffs:
        ran = _Ran.of(diff, old, new, failing, passing)
        for hunk in diff.hunks:
            suspect = _suspect(diff, hunk, old, new, failing, ran, tf_refs)
            if suspect is not None and not _moved_unit(diff, suspect, old, new):
                found.append((suspect, _tie_break(diff, suspect, old, new, ran, failing, divergence)))
    found.sort(key=lambda pair: rank_key(*pair))
    return Suspects.of(
        suspects=tuple(suspect for suspect, _ in found),
        files_traced=len(traced),
        files_changed=len(diffs),
        hunks=sum(len(diff.hunks) for diff in diffs),
        missing_sources=missing,
    )


@dataclass(frozen=True)
class _Ran:
    """The lines of one file that ran (widened to whole statements), per probe and version."""

    failing_old: frozenset[int]
    failing_new: frozenset[int]
    passing_old: frozenset[int]
    passing_new: frozenset[int]

    @classmethod
    def of(
        cls,
        diff: FileDiff,
        old: SourceVersion,
        new: SourceVersion,
        failing: ProbeTraces,
        passing: ProbeTraces | None,
    ) -> _Ran:
        path, old_path = diff.path, diff.old_at
        before, after = old.source(old_path), new.source(path)
        return cls(
            failing_old=frozenset(before.ran(failing.old.lines.get(old_path, ()))),
            failing_new=frozenset(after.ran(failing.new.lines.get(path, ()))),
            passing_old=frozenset(before.ran(passing.old.lines.get(old_path, ())))
            if passing
            else frozenset(),
            passing_new=frozenset(after.ran(passing.new.lines.get(path, ()))) if passing else frozenset(),
        )


def _changed_that_ran(
    hunk: Hunk, ran_old: frozenset[int], ran_new: frozenset[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (
        tuple(line for line in hunk.old_changed if line in ran_old),
        tuple(line for line in hunk.new_changed if line in ran_new),
    )


def _suspect(
    diff: FileDiff,
    hunk: Hunk,
    old: SourceVersion,
    new: SourceVersion,
    failing: ProbeTraces,
    ran: _Ran,
    tf_refs: tuple[str | None, str | None] = (None, None),
) -> Suspect | None:
    executed_old, executed_new = _changed_that_ran(hunk, ran.failing_old, ran.failing_new)
    if not executed_old and not executed_new:
        return None
    passed = int(
        all(line in ran.passing_old for line in executed_old)
        and all(line in ran.passing_new for line in executed_new)
    )
    path, old_path = diff.path, diff.old_at
    before, after = old.source(old_path), new.source(path)
    function = after.function(executed_new[0]) if executed_new else before.function(executed_old[0])
    only_in = _only_in((old_path, path), function, old, new, failing)
    caller = None
    if only_in is not None:
        version, trace = (old, failing.old) if only_in == "old" else (new, failing.new)
        other = before if only_in == "new" else after
        other_line = hunk.old_first if only_in == "new" else hunk.new_first
        where = old_path if only_in == "old" else path
        caller = _caller(where, function, version, trace) or _other_caller(function, other, other_line)
    old_version, new_version = failing.old.version_of(old_path), failing.new.version_of(path)
    old_lines = (hunk.old_first, hunk.old_last) if hunk.old_last >= hunk.old_first else None
    new_lines = (hunk.new_first, hunk.new_last) if hunk.new_last >= hunk.new_first else None
    return Suspect(
        file=path,
        function=function,
        score=ochiai(1, passed),
        failed=1,
        passed=passed,
        executed_old=executed_old,
        executed_new=executed_new,
        documentation_only=_documentation_only((old_path, path), hunk, old, new),
        old_lines=old_lines,
        new_lines=new_lines,
        excerpt=excerpt(hunk, set(executed_old), set(executed_new)),
        only_in=only_in,
        caller=caller,
        old_link=suspect_link(old_path, old_version, old_lines, tf_refs[0]),
        new_link=suspect_link(path, new_version, new_lines, tf_refs[1]),
        # The build generates these (op wrappers `gen_*.py`, the API tree): their changes follow
        # op registrations in C++, so they rank after the hand-written code that ran.
        generated=bool(GENERATED.match(path)),
    )


def _tie_break(
    diff: FileDiff,
    suspect: Suspect,
    old: SourceVersion,
    new: SourceVersion,
    ran: _Ran,
    failing: ProbeTraces,
    divergence: _Divergence,
) -> TieBreak:
    """The suspect's `TieBreak`, from its unit on the side whose changed lines ran (the new first);
    its divergence and depth from the unit's lines on both sides."""
    side_new = bool(suspect.executed_new)
    source = new.source(diff.path) if side_new else old.source(diff.old_at)
    line = (suspect.executed_new or suspect.executed_old)[0]
    unit = source.function_at[line] if 0 <= line < len(source.function_at) else -1
    lines = [at for at, found in enumerate(source.function_at) if found == unit and at > 0]
    # At module level the unit is the file: its size is the file's, its own lines those outside functions.
    size = len(lines) if unit >= 0 else max(len(source.function_at) - 2, 1)
    density = suspect.changed_executed / max(size, 1)
    units = _unit_lines(diff, suspect, old, new)
    earliest = divergence.earliest(diff, units)
    depth = _depth(diff, units, failing)
    if suspect.only_in is not None:
        return TieBreak(0, density, earliest, depth)
    own = set(lines)
    diverged = 0
    ran_old = ran_new = False
    for old_first, new_first, count in diff.same:
        for offset in range(count):
            if (new_first if side_new else old_first) + offset in own:
                before, after = old_first + offset in ran.failing_old, new_first + offset in ran.failing_new
                diverged += before != after
                ran_old, ran_new = ran_old or before, ran_new or after
    # A unit whose unchanged lines ran in one version only (a module imported in one only) did
    # not diverge itself: what ran it did.
    return TieBreak(diverged if ran_old and ran_new else 0, density, earliest, depth)


def _unit_lines(
    diff: FileDiff, suspect: Suspect, old: SourceVersion, new: SourceVersion
) -> tuple[frozenset[int], frozenset[int]]:
    """The lines of the suspect's unit (its function, by name; the lines outside functions at
    module level) in the old text and the new one, each empty where the version lacks the file."""
    found: list[frozenset[int]] = []
    for version, path in ((old, diff.old_at), (new, diff.path)):
        if path not in version.sources:
            found.append(frozenset())
            continue
        source = version.source(path)
        index = source.functions.index(suspect.function) if suspect.function in source.functions else -1
        if index < 0 and suspect.function != MODULE_LEVEL:
            found.append(frozenset())
            continue
        found.append(frozenset(at for at, unit in enumerate(source.function_at) if unit == index and at > 0))
    return found[0], found[1]


def _depth(diff: FileDiff, units: tuple[frozenset[int], frozenset[int]], failing: ProbeTraces) -> int | None:
    """The smallest call depth at which the unit's lines ran in either failing run; None unknown."""
    depths = [
        depth
        for lines, known in (
            (units[0], failing.old.depth.get(diff.old_at)),
            (units[1], failing.new.depth.get(diff.path)),
        )
        if known
        for line, depth in known.items()
        if line in lines
    ]
    return min(depths) if depths else None


@dataclass(frozen=True)
class _Divergence:
    """Where the failing runs of the two versions differ, in the order their lines first ran: a
    line of one run whose counterpart did not run in the other (its unchanged twin in the other
    version's text, or the lines that replace it there), or that has none (a line added or
    removed, a file of one version only).  Each point is numbered by the lines its run had run
    before it that the other run ran too: how far along the path both share the runs parted
    there, a measure both runs' points compare by (0: before anything they share)."""

    old: Mapping[str, Mapping[int, int]]  # old path -> line -> its number among the old run's
    new: Mapping[str, Mapping[int, int]]

    @classmethod
    def of(
        cls, failing: ProbeTraces, diffs: Iterable[FileDiff], old: SourceVersion, new: SourceVersion
    ) -> _Divergence:
        """None known (empty) unless both failing traces recorded the order."""
        if not failing.old.first or not failing.new.first:
            return cls({}, {})
        by_new = {diff.path: diff for diff in diffs}
        twins_old = {d.old_at: (d.path, _Twins(d, True, _statements(old, d.old_at))) for d in by_new.values()}
        twins_new = {p: (d.old_at, _Twins(d, False, _statements(new, p))) for p, d in by_new.items()}
        return cls(_points(failing.old, failing.new, twins_old), _points(failing.new, failing.old, twins_new))

    def earliest(self, diff: FileDiff, units: tuple[frozenset[int], frozenset[int]]) -> int | None:
        """The first of the unit's divergence points in either run; None when it has none known."""
        found = [
            number
            for points, lines in ((self.old.get(diff.old_at), units[0]), (self.new.get(diff.path), units[1]))
            if points
            for line, number in points.items()
            if line in lines
        ]
        return min(found) if found else None


class _Twins:
    """Where a changed file's line stands in the other version: its unchanged twin, or, for a
    line the change replaced, the lines that replace it there (the same statement's place, its
    text changed); None for a line added or removed with nothing in its place.  A statement that
    spans lines stands where all its lines do: the tracer reports it at one of them, and the
    change may lie on another."""

    def __init__(self, diff: FileDiff, to_new: bool, statement: Mapping[int, tuple[int, int]]) -> None:
        self.identical = diff.old == diff.new  # moved, unchanged: every line is its own twin
        blocks = sorted((old, new, count) if to_new else (new, old, count) for old, new, count in diff.same)
        # The changed stretches between the unchanged blocks, on both sides: (here, there) ranges.
        # The matcher's blocks cover both texts in order, so a gap here faces the gap there.
        sizes = [len(source_lines(text)) if text is not None else 0 for text in (diff.old, diff.new)]
        here_size, there_size = sizes if to_new else sizes[::-1]
        end = (1, 1)
        gaps: list[tuple[int, int, range]] = []
        for here, there, count in [*blocks, (here_size + 1, there_size + 1, 0)]:
            if here > end[0]:
                gaps.append((end[0], here, range(end[1], there)))
            end = (here + count, there + count)
        self.blocks, self.starts = blocks, [start for start, _, _ in blocks]
        self.gaps, self.gap_starts = gaps, [start for start, _, _ in gaps]
        self.statement = statement

    def of(self, line: int) -> range | None:
        """The other version's lines standing where `line` does; None where none do."""
        if self.identical:
            return range(line, line + 1)
        first, last = self.statement.get(line, (line, line))
        low, high = None, None
        for at in range(first, last + 1):
            there = self.one(at)
            if there is None:
                return None
            low = there.start if low is None else min(low, there.start)
            high = there.stop if high is None else max(high, there.stop)
        return range(low, high) if low is not None and high is not None else None

    def one(self, line: int) -> range | None:
        at = bisect.bisect_right(self.starts, line) - 1
        if at >= 0:
            start, other, count = self.blocks[at]
            if line < start + count:
                return range(other + line - start, other + line - start + 1)
        at = bisect.bisect_right(self.gap_starts, line) - 1
        if at >= 0:
            start, end, there = self.gaps[at]
            if line < end and there:
                return there
        return None


def _statements(version: SourceVersion, path: str) -> Mapping[int, tuple[int, int]]:
    return version.source(path).statement if path in version.sources else {}


def _points(
    trace: Trace, other: Trace, changed: Mapping[str, tuple[str, _Twins]]
) -> dict[str, dict[int, int]]:
    """`trace`'s divergence points (`_Divergence`), each numbered by how far the run had come
    along the path both runs share: the lines it had run that the other run ran too."""
    steps: list[tuple[int, bool, str, int]] = []  # (order, a divergence point, path, line)
    for path, lines in trace.lines.items():
        order = trace.first.get(path)
        if not order:
            continue
        other_path, twins = changed.get(path, (path, None))
        ran = other.lines.get(other_path, frozenset())
        for line in lines:
            if line not in order:
                continue
            there = twins.of(line) if twins is not None else range(line, line + 1)
            steps.append((order[line], there is None or not any(at in ran for at in there), path, line))
    steps.sort()
    numbered: dict[str, dict[int, int]] = {}
    shared = 0
    for _, point, path, line in steps:
        if point:
            numbered.setdefault(path, {})[line] = shared
        else:
            shared += 1
    return numbered


def _moved_unit(diff: FileDiff, suspect: Suspect, old: SourceVersion, new: SourceVersion) -> bool:
    """Whether the suspect's function left its file and is the same code in the other version
    under another path (moved to a file of its own, or out of one, or out of a class; its layout,
    comments and docstrings aside): then it is one unchanged unit, no suspect."""
    if suspect.function == MODULE_LEVEL:
        return False
    side_new = bool(suspect.executed_new)
    here, here_path = (new, diff.path) if side_new else (old, diff.old_at)
    there, there_path = (old, diff.old_at) if side_new else (new, diff.path)
    if there_path in there.sources and suspect.function in there.source(there_path).functions:
        return False  # still in its file in the other version: changed in place
    code = _function_code(here, here_path, suspect.function)
    name = suspect.function.rsplit(".", 1)[-1]
    for path, text in there.sources.items():
        if code is None or f"def {name}" not in text:
            continue
        functions = there.source(path).functions
        if any(_function_code(there, path, f) == code for f in functions if f.rsplit(".", 1)[-1] == name):
            return True
    return False


def _function_code(version: SourceVersion, path: str, function: str) -> tuple[tuple[int, str], ...] | None:
    """A function's code tokens (`Tokens`: no comments, docstrings or layout), without the
    indentation around it, so that a method moved out of its class reads the same."""
    source, tokens = version.source(path), version.tokens(path)
    if tokens is None or function not in source.functions:
        return None
    index = source.functions.index(function)
    found = tokens.between(at for at, unit in enumerate(source.function_at) if unit == index)
    edges = (tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE)
    while found and found[0][0] in edges:
        found.pop(0)
    while found and found[-1][0] in edges:
        found.pop()
    return tuple(found) or None


def _documentation_only(paths: tuple[str, str], hunk: Hunk, old: SourceVersion, new: SourceVersion) -> bool:
    """Whether the code tokens of the changed lines are the same on both sides: then only
    comments, docstrings, blank lines (or the layout) changed.  Unreadable source is code.
    `paths`: the file's old path and its new one (the same unless it moved)."""
    return same_code((old, new), paths, (hunk.old_changed, hunk.new_changed))


def _ran_functions(source: Source, lines: Iterable[int]) -> set[str]:
    return {source.function(line) for line in lines}


def _only_in(
    paths: tuple[str, str], function: str, old: SourceVersion, new: SourceVersion, failing: ProbeTraces
) -> str | None:
    """The one version whose environment ran the function ("old" or "new": a call that happens in
    that version only), or None when it ran in both.  `paths`: the file's old and new path."""
    if function == MODULE_LEVEL:
        return None
    ran_old = function in _ran_functions(old.source(paths[0]), failing.old.lines.get(paths[0], ()))
    ran_new = function in _ran_functions(new.source(paths[1]), failing.new.lines.get(paths[1], ()))
    if ran_old == ran_new:
        return None
    return "old" if ran_old else "new"


def _caller(path: str, function: str, version: SourceVersion, trace: Trace) -> str | None:
    """Where the function was called from in the version where it ran: an executed call of its
    name, in its own file first, then in the other files the probe ran."""
    name = function.rsplit(".", 1)[-1]
    for candidate in [path, *sorted(set(trace.lines) - {path})]:
        if candidate not in version.sources:
            continue
        lines = version.calls(candidate).get(name)
        if not lines:
            continue
        source = version.source(candidate)
        ran = source.ran(trace.lines.get(candidate, ()))
        for line in lines:
            caller = source.function(line)
            if line in ran and not (candidate == path and caller == function):
                return f"{candidate}:{caller} (line {line})"
    return None


def _other_caller(function: str, other: Source, line: int) -> str | None:
    """The approximation when no call was found: the function around the hunk in the other version."""
    found = other.function(line)
    return None if found in (function, MODULE_LEVEL) else found
