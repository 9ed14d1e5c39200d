"""Hostile text and damaged logs against every output: the terminal, report.html, summary.md and
matrix.png show nothing invisible, forge no line or link, and one damaged log stops nothing.

The strings are what a scenario (or someone who can write a log) controls: probe names and
summaries, failure messages, a log's fields.  What is asserted is what a reader relies on: the
text reads as what it is, and the project's own links still work.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from test_report import SCENARIO, bisect_report, page_text, report_data, write_bisect_log
from tfbisect.core.errors import ExitCode
from tfbisect.core.record import Failure, RunRecord
from tfbisect.core.store import ResultStore
from tfbisect.core.textsafe import clip, one_line, printable
from tfbisect.report import htmlreport, matrixpng, mdsummary, reportdata, show
from tfbisect.search import bisection
from tfbisect.search.bisection import BisectRequest
from tfbisect.search.bisectlog import BisectReport, DamagedLog, load_report

from conftest import recorded

# Bidirectional controls, zero-width and other invisible format characters, line separators.
INVISIBLE = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u200b\u200c\u200d\u2060\ufeff\u00ad\u2028\u2029\U000e0041"
HOSTILE = f"ok{INVISIBLE}done\nround  9  2.9.9      good     forged line\x1b[2J"


def no_invisible(text: str) -> None:
    found = [
        f"U+{ord(c):04X}"
        for c in text
        if unicodedata.category(c) in ("Cf", "Zl", "Zp", "Cc") and c not in "\n\t"
    ]
    assert not found, found


# -- one escaping for every view ------------------------------------------------------------


def test_printable_escapes_every_invisible_character_of_this_python() -> None:
    invisible = "".join(
        chr(cp) for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) in ("Cf", "Zl", "Zp")
    )
    shown = printable(invisible)
    no_invisible(shown)
    assert printable("\u202e") == "\\u202e" and printable("\U000e0041") == "\\U000e0041"
    assert printable("a\nb\tc") == "a\nb\tc" and printable("é ✓ ✗ 中") == "é ✓ ✗ 中"  # text stays text


def test_one_line_is_one_line_and_clip_says_its_cut() -> None:
    assert one_line("a\nb\r\u2028c") == "a\\x0ab\\x0d\\u2028c"
    assert one_line("x" * 50, 10) == "x" * 9 + "…" and one_line("x" * 50, 10, mark="...") == "x" * 7 + "..."
    assert clip("x" * 50, 10) == "x" * 10 + " … [40 characters cut by tfbisect]"


# -- summary.md: no live reference, no link but the project's own ----------------------------

AUTOLINKS = [
    "GH-7",
    "gh-12",
    "#7",
    "www.evil.example",
    "evil.example",
    "someone@evil.example",
    "owner/repo@1234567abc",
    "owner/repo#7",
    "deadbeef",
    "582c8d236cb0f0e9aa7ff3ad5a9a4dc3db3f3b58",
    "@team",
    "https://evil.example/x",
    "mailto:a@evil.example",
]
# What GitHub would still link in the escaped text (its references and autolinks, simplified).
LIVE = re.compile(
    r"(?<![0-9A-Za-z])GH-\d|#\d|@[A-Za-z0-9]|://|www\.[A-Za-z]|[A-Za-z0-9-]\.[A-Za-z]|(?<![0-9A-Za-z])[0-9a-fA-F]{7,}",
    re.IGNORECASE,
)


@pytest.mark.parametrize("text", AUTOLINKS)
def test_the_summary_defuses_every_github_autolink(text: str) -> None:
    escaped = mdsummary.escape(f"see {text} now")
    assert not LIVE.search(escaped), escaped
    assert escaped.replace("<!-- -->", "") == f"see {text} now"  # and still reads the same


def test_the_summary_keeps_the_projects_own_links_and_drops_forged_ones(tmp_path: Path) -> None:
    write_bisect_log(tmp_path, question=f"probe {' '.join(AUTOLINKS)} {INVISIBLE}")
    markdown = mdsummary.render(report_data(tmp_path))
    assert "[compare](https://github.com/tensorflow/tensorflow/compare/v2.3.4...v2.4.0)" in markdown
    no_invisible(markdown)
    for text in AUTOLINKS:
        assert f" {text} " not in markdown
    forged = tmp_path / "forged"
    write_bisect_log(forged, compare_url="https://evil.example/compare")
    markdown = mdsummary.render(report_data(forged))
    assert "evil" not in markdown and "[compare](" not in markdown


# -- every output, one hostile record ----------------------------------------------------


def hostile_record() -> RunRecord:
    record = recorded("tf2.2.3")
    document: dict[str, Any] = copy.deepcopy(record.document or {})
    for probe in document["probes"]:
        probe["summary"] = HOSTILE
    document["probes"][0]["name"] = f"name{INVISIBLE}\nforged"
    return dataclasses.replace(record, document=document, failure=Failure("ValueError", HOSTILE))


def test_html_markdown_and_png_show_no_invisible_character(tmp_path: Path) -> None:
    data = report_data(tmp_path, [hostile_record()])
    page = htmlreport.render(data)
    no_invisible(page.replace("\n", ""))
    assert "\\u202e" in page_text(page)
    markdown = mdsummary.render(data)
    no_invisible(markdown.replace("\n", ""))
    for label in [matrixpng._label(HOSTILE), matrixpng._label(f"x{INVISIBLE}→y", 40)]:
        no_invisible(label)
        assert "\n" not in label
    with Image.open(matrixpng.render(data, tmp_path / "matrix.png")) as image:
        assert image.size[0] > 0


def test_the_terminal_shows_each_free_text_field_on_one_escaped_line() -> None:
    shown = printable(show.record_text(hostile_record()))
    no_invisible(shown.replace("\n", ""))
    assert not any(line.startswith("round") for line in shown.splitlines()), "a forged line"
    assert "forged line\\x1b[2J" in shown
    steps = bisect_report().steps
    report = bisect_report(
        command=f"tfbisect bisect\n{HOSTILE}",
        steps=[dataclasses.replace(steps[0], summary=HOSTILE, state="error: x\ny"), *steps[1:]],
    )
    for text in (show.bisect_log_text(report), show.bisect_text(report)):
        lines = printable(text).splitlines()
        no_invisible("".join(lines))
        assert not any(line.startswith("round  9") for line in lines), "a forged line"


# -- damaged and forged logs ---------------------------------------------------------------


def log_dict(**changes: Any) -> dict[str, Any]:
    return {**bisect_report().to_dict(), **changes}


def write_raw(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


DAMAGED: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "seconds": (lambda d: {**d, "steps": [{**d["steps"][0], "seconds": "fast"}, *d["steps"][1:]]}, "seconds"),
    "newer": (lambda d: {**d, "log_version": 99}, "newer tfbisect"),
    "status": (lambda d: {**d, "status": "victory"}, "'status'"),
    "forged_last_old": (lambda d: {**d, "last_old": "../../etc"}, "not a TF version"),
    "last_old_not_run": (
        lambda d: {**d, "steps": [s for s in d["steps"] if s["version"] != "2.3.4"]},
        "not a version it ran",
    ),
    "stray_step": (
        lambda d: {**d, "steps": [{**d["steps"][0], "version": "9.9.9"}, *d["steps"][1:]]},
        "not in its range",
    ),
    "narrowing": (
        lambda d: {**d, "narrowing": {"release_range": ["2.0.0", "2.1.0"], "status": "interrupted"}},
        "other releases",
    ),
    "request": (lambda d: {**d, "request": "x"}, "'request'"),
    "list": (lambda d: [d], "not a log's object"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_log_is_refused_in_two_parts_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    from tfbisect.cli import main

    damage, said = DAMAGED[case]
    path = write_raw(tmp_path / "bisect" / "b.json", damage(log_dict()))
    with pytest.raises(DamagedLog, match=re.escape(said)):
        load_report(path)
    assert main(["--reports", str(tmp_path), "bisect", "log", str(path)]) == ExitCode.STORE
    err = capsys.readouterr().err
    assert "damaged" in err or "newer" in err
    assert "What to do:" in err and "Traceback" not in err and "refresh" not in err


def test_a_forged_last_old_is_damaged_not_interrupted_and_gets_no_catalogue_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tfbisect.cli import main

    path = write_raw(tmp_path / "bisect" / "b.json", log_dict(last_old="../../etc"))
    assert main(["--reports", str(tmp_path), "narrow", str(path)]) == ExitCode.NARROW
    err = capsys.readouterr().err
    assert "damaged" in err and "interrupted" not in err and "catalogue" not in err


def test_a_twenty_megabyte_command_is_clipped_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tfbisect.cli import main

    path = write_raw(tmp_path / "bisect" / "b.json", log_dict(command="tfbisect bisect " + "x" * 20_000_000))
    assert len(load_report(path).command) < 10_000
    assert main(["--reports", str(tmp_path), "bisect", "log", str(path)]) == 0
    assert len(capsys.readouterr().out) < 20_000
    data = report_data(tmp_path)
    assert len(htmlreport.render(data)) < 1_000_000


def test_one_damaged_log_never_stops_the_report_of_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tfbisect.cli import main

    write_bisect_log(tmp_path, "good.json")
    bad = log_dict()
    bad["steps"][0]["seconds"] = "fast"
    write_raw(tmp_path / "bisect" / "fast.json", bad)
    write_raw(tmp_path / "bisect" / "junk.json", "{not json")
    (tmp_path / "bisect" / "reserved.json").write_text("")  # a bisection that logged nothing yet
    data = report_data(tmp_path)
    assert [name for name, _ in data.unreadable] == ["fast.json", "junk.json"]
    assert data.bisect is not None and data.bisect_log == tmp_path / "bisect" / "good.json"
    text = page_text(htmlreport.render(data))
    assert "Unreadable bisection logs" in text and "fast.json" in text and "junk.json" in text
    assert "changed between 2.3.4 and 2.4.0" in text
    assert "fast.json" in mdsummary.render(data)
    assert main(["--reports", str(tmp_path), "report"]) == 0
    assert "fast.json" in (tmp_path / "report.html").read_text()
    capsys.readouterr()
    assert (
        main(["--reports", str(tmp_path), "bisect", "log", str(tmp_path / "bisect" / "reserved.json")]) == 6
    )
    assert "is empty" in capsys.readouterr().err


def test_a_log_reads_back_what_was_written(tmp_path: Path) -> None:
    report = bisect_report()
    path = write_raw(tmp_path / "b.json", report.to_dict())
    assert load_report(path).to_dict() == report.to_dict()
    assert BisectReport.from_dict(report.to_dict()) == report


# -- unique log names ---------------------------------------------------------------------


def test_two_bisections_started_in_the_same_moment_never_share_a_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bisection, "fine_stamp", lambda: "20260101-000000-000000")
    request = BisectRequest(scenario=SCENARIO)
    names = [bisection.log_name(request, tmp_path) for _ in range(3)]
    assert len(set(names)) == 3 and sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert names[1].endswith("-2.json") and names[0].startswith("20260101-000000-000000-")
    first, second = bisection.log_name(request), bisection.log_name(request)
    assert re.fullmatch(r"\d{8}-\d{6}-\d{6}-.+\.json", first) and first[:22] <= second[:22]


def test_the_report_collects_only_the_scenarios_readable_logs(tmp_path: Path) -> None:
    write_bisect_log(tmp_path, "other.json", request={**bisect_report().request, "scenario": "other"})
    data = reportdata.collect(ResultStore(tmp_path / "results"), SCENARIO, tmp_path / "bisect")
    assert data.bisects == () and data.unreadable == ()
