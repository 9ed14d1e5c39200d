"""Where the time went, as the user reads it: the console line's wording, the bisection log's
`time_spent` (written, read back, missing in older logs, damaged ones dropped without costing
the log) and the same numbers in report.html, summary.md and matrix.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_report import bisect_report, report_data, write_bisect_log
from tfbisect.core import timing
from tfbisect.core.timing import Phase
from tfbisect.narrow import wiring
from tfbisect.report import findings, htmlreport, mdsummary, reportdata
from tfbisect.search.bisectlog import LOG_VERSION, BisectReport, load_report
from tfbisect.search.narrowlog import Narrowing

SPENT = {Phase.DOWNLOAD: 41.0, Phase.BUILD: 130.0, Phase.RUN: 63.4, Phase.TRACE: 22.0}
LINE = "41 s downloading, 2 min 10 s building, 1 min 3 s running, 22 s tracing (summed over parallel work)"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0 s"), (0.4, "0 s"), (59.4, "59 s"), (59.6, "1 min"), (130, "2 min 10 s"), (3600, "1 h"),
     (3725, "1 h 2 min"), (-1.0, "0 s")],
)  # fmt: skip
def test_durations_read_as_a_person_says_them(seconds: float, text: str) -> None:
    assert findings.duration_text(seconds) == text


def test_the_line_names_every_phase_in_order_even_at_zero() -> None:
    assert findings.time_line(SPENT) == f"Time: {LINE}"
    nothing = findings.time_line({})
    assert nothing == (
        "Time: 0 s downloading, 0 s building, 0 s running, 0 s tracing (summed over parallel work)"
    )


def test_the_log_keeps_the_time_and_reads_it_back(tmp_path: Path) -> None:
    path = write_bisect_log(tmp_path, time_spent=SPENT)
    data = json.loads(path.read_text())
    assert data["log_version"] == LOG_VERSION == 4
    assert data["time_spent"] == {"download_s": 41.0, "build_s": 130.0, "run_s": 63.4, "trace_s": 22.0}
    assert load_report(path).time_spent == SPENT
    assert BisectReport.from_dict(data).to_dict() == data


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: {k: v for k, v in d.items() if k != "time_spent"},  # a log of version 3
        lambda d: {**d, "log_version": 3, "time_spent": None},
        lambda d: {**d, "time_spent": "lots"},
        lambda d: {**d, "time_spent": {"run_s": -5}},
        lambda d: {**d, "time_spent": {"run_s": True}},
        lambda d: {**d, "time_spent": {"run_s": 1e300}},
        lambda d: {**d, "time_spent": [1, 2]},
    ],
)
def test_an_older_or_damaged_time_costs_nothing_but_itself(tmp_path: Path, damage: object) -> None:
    data = bisect_report(time_spent=SPENT).to_dict()
    assert callable(damage)
    report = BisectReport.from_dict(damage(data))
    assert report.time_spent is None
    assert report.first_new == "2.4.0" and len(report.steps) == 4  # the rest of the log stands


def test_the_reports_say_the_same_numbers(tmp_path: Path) -> None:
    write_bisect_log(tmp_path, time_spent=SPENT)
    data = report_data(tmp_path)
    page = htmlreport.render(data)
    assert f'<span id="time-spent">{LINE}</span>' in page
    assert f"**Time:** {LINE}" in mdsummary.render(data)
    matrix = json.loads(reportdata.dump(data))["bisection"]
    assert matrix["time_spent"] == {"download_s": 41.0, "build_s": 130.0, "run_s": 63.4, "trace_s": 22.0}
    assert matrix["time_spent_text"] == LINE


def test_a_log_without_the_time_shows_none(tmp_path: Path) -> None:
    write_bisect_log(tmp_path)
    data = report_data(tmp_path)
    assert 'id="time-spent"' not in htmlreport.render(data)
    assert "**Time:**" not in mdsummary.render(data)
    matrix = json.loads(reportdata.dump(data))["bisection"]
    assert matrix["time_spent"] is None and matrix["time_spent_text"] is None


def test_a_narrowing_adds_its_time_to_the_bisections_in_the_log(tmp_path: Path) -> None:
    """The log's time covers its bisection and its narrowing: the narrowing's saver adds what
    was spent since it began (the process-wide accumulator) to what the bisection had logged."""
    report = bisect_report(time_spent=dict(SPENT))
    path = tmp_path / "b.json"
    save = wiring.log_saver(report, path)
    timing.SPENT.add(Phase.TRACE, 10.0)
    timing.SPENT.add(Phase.BUILD, 5.0)
    save(Narrowing(release_range=("2.3.4", "2.4.0")))
    saved = load_report(path).time_spent
    assert saved is not None
    assert saved[Phase.TRACE] == pytest.approx(32.0, abs=0.2)  # other tests' threads may add a little
    assert saved[Phase.BUILD] == pytest.approx(135.0, abs=0.2)
    assert saved[Phase.RUN] == pytest.approx(63.4, abs=0.2) and saved[Phase.DOWNLOAD] == 41.0
