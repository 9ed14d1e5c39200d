"""Reports rendered from recorded result documents: HTML, Markdown (snapshot), PNG."""

from __future__ import annotations

import dataclasses
import html.parser
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from tfbisect import htmlreport, matrixpng, mdsummary, reportdata
from tfbisect.bisection import BisectReport, Status, Step
from tfbisect.outcome import Outcome
from tfbisect.record import RunRecord
from tfbisect.scenario import find
from tfbisect.spec import EnvSpec
from tfbisect.store import ResultStore, write_json_atomic

from conftest import DATA, all_outcomes, recorded

SCENARIO = find("gradient_mismatch")


def report_data(tmp_path: Path, records: list[RunRecord] | None = None) -> reportdata.ReportData:
    store = ResultStore(tmp_path / "results")
    for record in records if records is not None else all_outcomes():
        store.put(dataclasses.replace(record, scenario_sha256=SCENARIO.sha256))
    data = reportdata.collect(store, SCENARIO, tmp_path / "bisect")
    return dataclasses.replace(data, generated_at="2026-01-01T00:00:00+00:00", host="HOST")


def write_bisect_log(directory: Path) -> None:
    report = BisectReport(
        request={
            "scenario": "gradient_mismatch",
            "probe": "gradient_eager_plain",
            "flavour": "cpu",
            "keras": "default",
            "backend": "venv",
        },
        command="tfbisect bisect --probe gradient_eager_plain",
        versions=["2.3.0", "2.3.4", "2.4.0", "2.4.1"],
        steps=[
            Step(1, "2.3.0", "reproduced", "match", "old", False, 20.0, "s", "k1"),
            Step(1, "2.4.1", "reproduced", "mismatch", "new", False, 21.0, "s", "k2"),
            Step(2, "2.3.4", "reproduced", "match", "old", True, 0.0, "s", "k3"),
            Step(3, "2.4.0", "reproduced", "mismatch", "new", False, 22.0, "s", "k4"),
        ],
        status=Status.FOUND,
        message="last good: 2.3.4, first bad: 2.4.0",
        old_state="match",
        new_state="mismatch",
        last_old="2.3.4",
        first_new="2.4.0",
        candidates=["2.4.0"],
        git_versions={"2.3.4": "v2.3.3-137-gea90cf44f73", "2.4.0": "v2.4.0-rc4-71-g582c8d236cb"},
        compare_url="https://github.com/tensorflow/tensorflow/compare/v2.3.4...v2.4.0",
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:01:00+00:00",
    )
    write_json_atomic(directory / "bisect" / "b.json", report.to_dict())


def test_markdown_snapshot_covers_every_outcome(tmp_path: Path) -> None:
    write_bisect_log(tmp_path)
    text = mdsummary.render(report_data(tmp_path)).replace(SCENARIO.sha256[:12], "SHA12")
    snapshot = DATA / "summary.snapshot.md"
    if os.environ.get("TFBISECT_UPDATE_SNAPSHOTS"):
        snapshot.write_text(text)
    assert text == snapshot.read_text()
    for word in ("✗ reproduced", "✓ not reproduced", "- skip", "! error", "⧗ timeout"):
        assert word in text
    assert "**Last good:** TF 2.3.4" in text and "[compare](https://github.com/" in text


def test_markdown_escapes_table_breakers_and_html(tmp_path: Path) -> None:
    record = dataclasses.replace(
        recorded("tf2.2.3"), spec=EnvSpec("2.2.3", "3.8", base="evil|<b>base</b>"), outcome=Outcome.ERROR
    )
    text = mdsummary.render(report_data(tmp_path, [record]))
    header = next(line for line in text.splitlines() if line.startswith("| TF |"))
    assert header.count(" | ") == 1 and "\\|" in header and "<b>" not in text


def test_markdown_stays_under_githubs_limit_however_many_versions(tmp_path: Path) -> None:
    base = recorded("tf2.2.3")
    many = [
        dataclasses.replace(
            base,
            spec=EnvSpec(f"2.{minor}.{patch}", "3.8"),
            outcome=Outcome.REPRODUCED if patch % 3 else Outcome.NOT_REPRODUCED,
            extra={
                "reproduce": f"tfbisect run --tf 2.{minor}.{patch} --python 3.8 --backend venv --scenario x"
            },
        )
        for minor in range(40)
        for patch in range(60)
    ]
    data = report_data(tmp_path, many)
    text = mdsummary.render(data)
    assert len(text) <= mdsummary.LIMIT
    assert "… and" in text and text.rstrip().endswith("</details>")


def test_code_spans_survive_backticks() -> None:
    assert mdsummary.code("a`b") == "``a`b``"
    assert mdsummary.code("`x`") == "`` `x` ``"


class _Collector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_self_contained_escaped_and_complete(tmp_path: Path) -> None:
    write_bisect_log(tmp_path)
    data = report_data(tmp_path)
    page = htmlreport.render(data)
    parsed = _Collector()
    parsed.feed(page)
    tags = [t for t, _ in parsed.tags]
    assert "script" not in tags, "scenario text must never become a script"
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    # nothing that could load: no src, no stylesheet links, only anchors to GitHub or the page
    assert not [a for t, a in parsed.tags if "src" in a or (t == "link")]
    cells = [a for t, a in parsed.tags if t == "a" and "cell" in (a.get("class") or "")]
    assert len(cells) == 6
    assert {str(c["class"]).split()[1] for c in cells} == {o.value for o in Outcome}
    for cell in cells:
        assert f'id="{str(cell["href"])[1:]}"' in page  # each cell opens its details
    assert page.count("<svg") >= 2 * 3  # loss curves of the two real runs
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert 'id="change-point"' in page and "v2.4.0-rc4-71-g582c8d236cb" in page
    assert "gradient_eager_plain: match" in page  # the bisected probe shows in each cell


def test_png_shows_the_matrix(tmp_path: Path) -> None:
    data = report_data(tmp_path)
    path = matrixpng.render(data, tmp_path / "m.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert height >= 24 * (len(data.versions) + 3) and width > 300
        colours = {image.getpixel((x, y)) for x in range(0, width, 5) for y in range(0, height, 5)}
    for rgb in matrixpng.FILL.values():
        assert rgb in colours


def test_report_command_writes_all_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tfbisect.cli import main

    report_data(tmp_path)  # fills tmp_path/results
    assert main(["--reports", str(tmp_path), "report"]) == 0
    out = capsys.readouterr().out
    for name in ("report.html", "summary.md", "matrix.png", "matrix.json"):
        assert (tmp_path / name).is_file() and str(tmp_path / name) in out
    assert json.loads((tmp_path / "matrix.json").read_text())["scenario"] == "gradient_mismatch"
