"""The time-spent accumulator: phases nest without counting twice, threads nest on their own,
and the stored form reads back (and hostile stored forms are refused)."""

from __future__ import annotations

import threading
import time

from tfbisect.core.timing import Phase, TimeSpent, as_stored, from_dict, to_dict, total


def test_a_nested_phase_is_taken_off_the_one_around_it() -> None:
    spent = TimeSpent()
    with spent.measure(Phase.BUILD):
        time.sleep(0.05)
        with spent.measure(Phase.DOWNLOAD):
            time.sleep(0.4)
    totals = spent.totals()
    assert 0.39 <= totals[Phase.DOWNLOAD] < 1.0
    # The download's 0.4 s not counted again (bounds wide enough for a loaded CI machine).
    assert 0.04 <= totals[Phase.BUILD] < 0.4


def test_threads_nest_apart_and_add_up() -> None:
    spent = TimeSpent()

    def build() -> None:
        with spent.measure(Phase.BUILD):
            time.sleep(0.1)

    with spent.measure(Phase.RUN):
        worker = threading.Thread(target=build)
        worker.start()
        time.sleep(0.1)
        worker.join()
    totals = spent.totals()
    assert totals[Phase.RUN] >= 0.09  # the other thread's build is not taken off this run
    assert totals[Phase.BUILD] >= 0.09


def test_since_and_stored_form_round_trip() -> None:
    spent = TimeSpent()
    spent.add(Phase.TRACE, 2.0)
    before = spent.totals()
    spent.add(Phase.TRACE, 3.0)
    spent.add(Phase.RUN, 1.25)
    stored = to_dict(spent.since(before))
    assert stored == {"download_s": 0.0, "build_s": 0.0, "run_s": 1.2, "trace_s": 3.0}
    assert from_dict(stored) == {Phase.DOWNLOAD: 0.0, Phase.BUILD: 0.0, Phase.RUN: 1.2, Phase.TRACE: 3.0}


def test_a_damaged_stored_form_is_refused() -> None:
    assert from_dict(None) is None
    assert from_dict({"run_s": "1"}) is None
    assert from_dict({"run_s": True}) is None
    assert from_dict({"run_s": -1}) is None
    assert from_dict({"run_s": float("nan")}) is None


def test_the_last_line_adds_up_the_logs_numbers_rounded_one_way() -> None:
    # CI once printed "7 s running" over a log holding 6.5: the line had rounded 6.54 itself.
    from tfbisect.report.findings import duration_text

    measured = {Phase.RUN: 6.54, Phase.BUILD: 0.04}
    logged = from_dict(to_dict(measured))
    assert logged is not None
    line_total = total([measured, None])
    assert duration_text(line_total[Phase.RUN]) == duration_text(logged[Phase.RUN]) == "6 s"
    assert total([measured, measured])[Phase.RUN] == 13.0  # tenths as stored, added up
    assert as_stored(measured)[Phase.DOWNLOAD] == 0.0
