"""The pure search: sequences of probes and the promised bounds, with scripted outcomes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tfbisect.search.state import BisectState, Class, max_rounds, max_runs


def drive(size: int, truth: Callable[[int], Class], jobs: int = 1) -> tuple[BisectState, list[list[int]]]:
    state = BisectState(size, jobs)
    rounds = []
    todo = state.first_round()
    while todo:
        rounds.append(todo)
        for i in todo:
            state.record(i, truth(i))
        todo = state.next_round()
    return state, rounds


def step_at(change: int) -> Callable[[int], Class]:
    return lambda i: Class.OLD if i < change else Class.NEW


def test_binary_sequence_is_ends_then_midpoints() -> None:
    state, rounds = drive(9, step_at(6))
    assert rounds == [[0, 8], [4], [6], [5]]
    result = state.result()
    assert (result.change.last_old, result.change.first_new) == (5, 6) and result.monotonic


def test_n_section_probes_several_per_round() -> None:
    state, rounds = drive(20, step_at(13), jobs=3)
    assert rounds[0] == [0, 9, 19]  # the ends and one inner version, no worker idle
    assert all(len(r) <= 3 for r in rounds)
    assert state.result().change.first_new == 13


@pytest.mark.parametrize("jobs", [1, 2, 3, 4, 8])
def test_promised_bounds_for_every_change_position(jobs: int) -> None:
    for size in range(2, 90):
        for change in range(1, size):
            state, rounds = drive(size, step_at(change), jobs)
            result = state.result()
            assert (result.change.last_old, result.change.first_new) == (change - 1, change)
            runs = sum(len(r) for r in rounds)
            if jobs == 1:
                assert runs <= max_runs(size), (size, change, runs)
            else:
                assert len(rounds) <= max_rounds(size, jobs), (size, change, jobs, len(rounds))


def test_skips_next_to_the_change_give_candidates_not_a_guess() -> None:
    def truth(i: int) -> Class:
        return Class.SKIP if i in (5, 6) else step_at(7)(i)

    state, _ = drive(12, truth)
    change = state.result().change
    assert change.last_old == 4 and change.first_new == 7
    assert change.candidates == (5, 6, 7)


def test_other_failures_are_never_counted() -> None:
    def truth(i: int) -> Class:
        return Class.OTHER if i == 5 else step_at(6)(i)

    state, _ = drive(10, truth)
    change = state.result().change
    assert change.candidates == (5, 6) and state.known[5] is Class.OTHER


def test_non_monotonic_is_reported_with_every_change_point() -> None:
    pattern = [Class.OLD, Class.OLD, Class.NEW, Class.NEW, Class.OLD, Class.OLD, Class.NEW, Class.NEW]
    state, _ = drive(len(pattern), lambda i: pattern[i], jobs=8)  # sees everything in round one
    result = state.result()
    assert not result.monotonic
    assert [(c.last_old, c.first_new) for c in result.all_changes] == [(1, 2), (3, 4), (5, 6)]
    assert (result.change.last_old, result.change.first_new) == (1, 2)  # the earliest, like git


def test_needs_two_versions() -> None:
    with pytest.raises(ValueError, match="at least two"):
        BisectState(1)


@pytest.mark.parametrize("jobs", [1, 2, 4])
def test_what_is_prepared_ahead_holds_every_next_round(jobs: int) -> None:
    """For every single change point, the round that follows is among what `after_round`
    proposed while the round before it ran (so prefetching it is never a miss), and 1 worker
    gets at most the two midpoints mozregression prefetches."""
    for size in (2, 5, 17, 71):
        for change in range(1, size):
            state = BisectState(size, jobs)
            todo = state.first_round()
            while todo:
                ahead = state.after_round(todo)
                assert not set(ahead) & set(todo) and not set(ahead) & set(state.known)
                if jobs == 1:
                    assert len(ahead) <= 2
                for i in todo:
                    state.record(i, Class.OLD if i < change else Class.NEW)
                todo = state.next_round()
                assert set(todo) <= set(ahead), (size, change, todo, ahead)
