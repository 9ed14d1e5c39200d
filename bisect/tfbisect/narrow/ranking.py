"""The suspects: the hunks whose changed lines the failing probe ran, ranked the way spectrum-based
fault localisation ranks statements (Ochiai): what runs on the failing probe's path but not on the
passing one's first, more changed lines that ran before fewer, generated code after hand-written,
documentation-only changes last.  Pure logic: no process, no network."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tfbisect.narrow.analysis import MODULE_LEVEL, Source, SourceVersion, Tokens
from tfbisect.narrow.diff import Hunk, diff_sources, excerpt
from tfbisect.narrow.links import GENERATED, suspect_link
from tfbisect.narrow.traces import ProbeTraces, Trace
from tfbisect.search.narrowlog import Suspect, Suspects

TOTAL_FAILED = 1  # one failing probe: Ochiai's denominator is sqrt(total_failed * (failed + passed))


def rank_key(suspect: Suspect) -> tuple[bool, bool, float, int, str, int]:
    """Documentation-only after code, generated code after hand-written, then by score, then more
    changed lines that ran before fewer."""
    first = (suspect.new_lines or suspect.old_lines or (0, 0))[0]
    return (
        suspect.documentation_only,
        suspect.generated,
        -suspect.score,
        -suspect.changed_executed,
        suspect.file,
        first,
    )


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
    found = []
    for diff in diffs:
        ran = _Ran.of(diff.path, old, new, failing, passing)
        for hunk in diff.hunks:
            suspect = _suspect(diff.path, hunk, old, new, failing, ran, tf_refs)
            if suspect is not None:
                found.append(suspect)
    found.sort(key=rank_key)
    return Suspects.of(
        suspects=tuple(found),
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
        path: str,
        old: SourceVersion,
        new: SourceVersion,
        failing: ProbeTraces,
        passing: ProbeTraces | None,
    ) -> _Ran:
        before, after = old.source(path), new.source(path)
        return cls(
            failing_old=frozenset(before.ran(failing.old.lines.get(path, ()))),
            failing_new=frozenset(after.ran(failing.new.lines.get(path, ()))),
            passing_old=frozenset(before.ran(passing.old.lines.get(path, ()))) if passing else frozenset(),
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
    path: str,
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
    before, after = old.source(path), new.source(path)
    function = after.function(executed_new[0]) if executed_new else before.function(executed_old[0])
    only_in = _only_in(path, function, old, new, failing)
    caller = None
    if only_in is not None:
        version, trace = (old, failing.old) if only_in == "old" else (new, failing.new)
        other = before if only_in == "new" else after
        other_line = hunk.old_first if only_in == "new" else hunk.new_first
        caller = _caller(path, function, version, trace) or _other_caller(function, other, other_line)
    old_version, new_version = failing.old.version_of(path), failing.new.version_of(path)
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
        documentation_only=_documentation_only(path, hunk, old, new),
        old_lines=old_lines,
        new_lines=new_lines,
        excerpt=excerpt(hunk, set(executed_old), set(executed_new)),
        only_in=only_in,
        caller=caller,
        old_link=suspect_link(path, old_version, old_lines, tf_refs[0]),
        new_link=suspect_link(path, new_version, new_lines, tf_refs[1]),
        # The build generates these (op wrappers `gen_*.py`, the API tree): their changes follow
        # op registrations in C++, so they rank after the hand-written code that ran.
        generated=bool(GENERATED.match(path)),
    )


def _documentation_only(path: str, hunk: Hunk, old: SourceVersion, new: SourceVersion) -> bool:
    """Whether the code tokens of the changed lines are the same on both sides: then only
    comments, docstrings, blank lines (or the layout) changed.  Unreadable source is code."""
    before = old.tokens(path) if path in old.sources else Tokens((), {})
    after = new.tokens(path) if path in new.sources else Tokens((), {})
    if before is None or after is None:
        return False
    return before.between(hunk.old_changed) == after.between(hunk.new_changed)


def _ran_functions(source: Source, lines: Iterable[int]) -> set[str]:
    return {source.function(line) for line in lines}


def _only_in(
    path: str, function: str, old: SourceVersion, new: SourceVersion, failing: ProbeTraces
) -> str | None:
    """The one version whose environment ran the function ("old" or "new": a call that happens in
    that version only), or None when it ran in both."""
    if function == MODULE_LEVEL:
        return None
    ran_old = function in _ran_functions(old.source(path), failing.old.lines.get(path, ()))
    ran_new = function in _ran_functions(new.source(path), failing.new.lines.get(path, ()))
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
