"""Bisection state, apart from any runner or printer: which versions to try next, and what was found.

The search works on an ordered list of versions whose two ends have already been classified
as OLD (the state of the older end) and NEW (the state of the newer end).  Each round it
proposes up to `jobs` untried versions that split the remaining interval evenly (n-section),
so that rounds fall with more workers.  Skips and failures of another kind are never
counted as old or new: next to the change point they make the answer a set of candidates.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


class Class(enum.StrEnum):
    OLD = "old"  # same state as the older end
    NEW = "new"  # same state as the newer end
    SKIP = "skip"  # cannot be tested (exit 125, install failed, no wheel here)
    OTHER = "other"  # failed differently from either end: reported, never counted
    UNJUDGED = ""  # a step logged before the ends fixed what old and new mean


@dataclass(frozen=True)
class ChangePoint:
    last_old: int
    first_new: int
    # Versions between the two whose class is unknown: the change is at one of them or at first_new.
    unresolved: tuple[int, ...] = ()

    @property
    def candidates(self) -> tuple[int, ...]:
        return (*self.unresolved, self.first_new)


@dataclass(frozen=True)
class SearchResult:
    change: ChangePoint
    monotonic: bool
    all_changes: tuple[ChangePoint, ...]  # every transition among the decisive results, oldest first


class BisectState:
    def __init__(self, size: int, jobs: int = 1) -> None:
        if size < 2:
            raise ValueError("a bisection needs at least two versions")
        self.size = size
        self.jobs = max(1, jobs)
        self.known: dict[int, Class] = {}

    def record(self, index: int, cls: Class) -> None:
        self.known[index] = cls

    def first_round(self) -> list[int]:
        """Both ends first (they decide whether there is anything to find) plus, with several
        workers, evenly spaced versions in between, so that no worker idles in round one."""
        ends = [0, self.size - 1]
        if self.jobs <= 2:
            return ends
        inner = list(range(1, self.size - 1))
        return sorted({*ends, *_spread(inner, self.jobs - 2)})

    def bounds(self) -> tuple[int, int]:
        """(last OLD before the first NEW, first NEW): the interval still to search."""
        news = [i for i, c in self.known.items() if c is Class.NEW]
        first_new = min(news) if news else self.size - 1
        olds = [i for i, c in self.known.items() if c is Class.OLD and i < first_new]
        return (max(olds) if olds else 0), first_new

    def next_round(self) -> list[int]:
        ends = [e for e in (0, self.size - 1) if e not in self.known]
        if ends:  # nothing is known until both ends are
            return ends[: self.jobs]
        last_old, first_new = self.bounds()
        candidates = [i for i in range(last_old + 1, first_new) if i not in self.known]
        return _spread(candidates, self.jobs)

    def after_round(self, todo: Sequence[int]) -> list[int]:
        """What the round after `todo` would try, for each outcome a monotonic range can give it
        (the first j of `todo` old, the rest new): the versions to prepare while `todo` runs, as
        mozregression prefetches both midpoints.  Nearest-to-even splits first."""
        found: list[int] = []
        for trial in self._outcomes(todo):
            for index in trial.next_round():
                if index not in found and index not in self.known and index not in todo:
                    found.append(index)
        return found

    def rounds_ahead(self, todo: Sequence[int], depth: int = 4) -> list[int]:
        """What the rounds after the next one would try, up to `depth` rounds on (2: the round
        after next), for every outcome of `todo` and of the rounds between: work for a worker
        ahead with nothing nearer to do (the next round's environments are ready, or wait for a
        Debian base being built).  Nearer rounds first (the likelier to be needed), in each the
        nearest-to-even splits first; none of `after_round`'s."""
        found: list[int] = []
        # Each state the rounds so far can leave, once (by what is known), with its next round.
        level = {trial.key(): (trial, trial.next_round()) for trial in self._outcomes(todo)}
        # The next round's (what `after_round` gives: the rounds of the first level) are not again.
        seen = {*self.known, *todo, *(i for _, next_round in level.values() for i in next_round)}
        for _ in range(depth - 1):
            following: dict[tuple[tuple[int, Class], ...], tuple[BisectState, list[int]]] = {}
            for trial, next_round in level.values():
                for outcome in trial._outcomes(next_round):
                    key = outcome.key()
                    if key in following:
                        continue
                    following[key] = (outcome, outcome_round := outcome.next_round())
                    for index in outcome_round:
                        if index not in seen:
                            seen.add(index)
                            found.append(index)
            level = following
        return found

    def key(self) -> tuple[tuple[int, Class], ...]:
        """What is known, as a key (states reached by different outcomes are often the same)."""
        return tuple(sorted(self.known.items()))

    def _outcomes(self, todo: Sequence[int]) -> list[BisectState]:
        """The states `todo` can leave in a monotonic range (the first j of it old, the rest new),
        nearest-to-even split first."""
        ordered = sorted(todo)
        trials = []
        for cut in dict.fromkeys([len(ordered) // 2, *range(len(ordered) + 1)]):  # the even split once
            trial = BisectState(self.size, self.jobs)
            trial.known = dict(self.known)
            for position, index in enumerate(ordered):
                trial.known[index] = Class.OLD if position < cut else Class.NEW
            trials.append(trial)
        return trials

    def result(self) -> SearchResult:
        last_old, first_new = self.bounds()
        unresolved = tuple(i for i in range(last_old + 1, first_new))
        change = ChangePoint(last_old, first_new, unresolved)
        changes = self.transitions()
        monotonic = all(c is not Class.OLD for i, c in self.known.items() if i > first_new)
        return SearchResult(change=change, monotonic=monotonic and len(changes) <= 1, all_changes=changes)

    def transitions(self) -> tuple[ChangePoint, ...]:
        decisive = sorted((i, c) for i, c in self.known.items() if c in (Class.OLD, Class.NEW))
        found = []
        for (i, a), (j, b) in itertools.pairwise(decisive):
            if a is not b:
                found.append(ChangePoint(i, j, tuple(range(i + 1, j))))
        return tuple(found)


def _spread(candidates: Sequence[int], count: int) -> list[int]:
    """`count` members of `candidates` that cut it into `count + 1` nearly equal parts."""
    if not candidates or count <= 0:
        return []
    count = min(count, len(candidates))
    picks = {candidates[(k + 1) * (len(candidates) + 1) // (count + 1) - 1] for k in range(count)}
    return sorted(picks)


def max_runs(size: int) -> int:
    """The promise for one worker: both ends plus a binary search of what lies between."""
    return math.ceil(math.log2(size)) + 2 if size > 1 else 1


def max_rounds(size: int, jobs: int) -> int:
    """The promise for `jobs` workers (n-section)."""
    return math.ceil(math.log(size, jobs + 1) - 1e-9) + 1 if size > 1 else 1
