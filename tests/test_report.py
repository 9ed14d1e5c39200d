"""Reports rendered from recorded result documents: HTML, Markdown (snapshot), PNG."""

from __future__ import annotations

import dataclasses
import hashlib
import html.parser
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tfbisect.core.fsio import write_json_atomic
from tfbisect.core.outcome import Outcome
from tfbisect.core.record import RunRecord
from tfbisect.core.scenario import find
from tfbisect.core.spec import EnvSpec, Flavour, KerasVariant
from tfbisect.core.store import ResultStore
from tfbisect.report import htmlreport, matrixpng, mdsummary, reportdata, style
from tfbisect.search.bisectlog import BisectReport, Status, Step, StepOutcome
from tfbisect.search.state import Class

from conftest import DATA, all_outcomes, recorded

SCENARIO = find("gradient_mismatch")


def report_data(tmp_path: Path, records: list[RunRecord] | None = None) -> reportdata.ReportData:
    store = ResultStore(tmp_path / "results")
    for record in records if records is not None else all_outcomes():
        store.put(dataclasses.replace(record, scenario_sha256=SCENARIO.sha256))
    data = reportdata.collect(store, SCENARIO, tmp_path / "bisect")
    return dataclasses.replace(data, generated_at="2026-01-01T00:00:00+00:00", host="HOST")


def bisect_report(**changes: Any) -> BisectReport:
    """A found bisection by probe gradient_eager_plain (2.3.4 good, 2.4.0 bad), with `changes`."""
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
            Step(1, "2.3.0", StepOutcome("reproduced"), "match", Class("old"), False, 20.0, "s", "k1"),
            Step(1, "2.4.1", StepOutcome("reproduced"), "mismatch", Class("new"), False, 21.0, "s", "k2"),
            Step(2, "2.3.4", StepOutcome("reproduced"), "match", Class("old"), True, 0.0, "s", "k3"),
            Step(3, "2.4.0", StepOutcome("reproduced"), "mismatch", Class("new"), False, 22.0, "s", "k4"),
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
    return dataclasses.replace(report, **changes)


def write_bisect_log(directory: Path, name: str = "b.json", **changes: Any) -> Path:
    path = directory / "bisect" / name
    write_json_atomic(path, bisect_report(**changes).to_dict())
    return path


def test_markdown_snapshot_covers_every_outcome(tmp_path: Path) -> None:
    write_bisect_log(tmp_path)
    text = mdsummary.render(report_data(tmp_path)).replace(SCENARIO.sha256[:12], "SHA12")
    snapshot = DATA / "summary.snapshot.md"
    if os.environ.get("TFBISECT_UPDATE_SNAPSHOTS"):
        snapshot.write_text(text)
    assert text == snapshot.read_text()
    # judged by the bisection's probe, with the verdict beside it; failures are failures
    for word in (
        "- skip",
        "✓ good (verdict: not reproduced)",
        "✓ good (verdict: reproduced)",
        "! failure (error)",
        "! failure (timeout)",
        "✗ bad (verdict: reproduced)",
    ):
        assert word in text
    assert "**Last good:** TF 2.3.4" in text and "[compare](https://github.com/" in text


def test_without_a_bisection_cells_show_the_verdict(tmp_path: Path) -> None:
    data = report_data(tmp_path)
    text = mdsummary.render(data)
    for word in ("✗ reproduced", "✓ not reproduced", "- skip", "! error", "⧗ timeout"):
        assert word in text
    assert data.headline().startswith("reproduced in 2 of 3 tested environments")


def test_markdown_escapes_table_breakers_and_html(tmp_path: Path) -> None:
    record = dataclasses.replace(
        recorded("tf2.2.3"), spec=EnvSpec("2.2.3", "3.8", base="evil|<b>base</b>"), outcome=Outcome.ERROR
    )
    text = mdsummary.render(report_data(tmp_path, [record]))
    row = next(line for line in text.splitlines() if line.startswith("| 2.2.3 |"))
    assert row.count(" | ") == 1 and "evil\\|&lt;b&gt;base" in row and "<b>" not in text
    assert (
        mdsummary.escape("[x](http://e.example)") == "\\[x\\](http:<!-- -->//e.<!-- -->example)"
    )  # no links from records


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        # A code span stays one, unbroken: GitHub would show a break inside it as typed.
        (
            "reverting `tensorflow/python/keras/backend.py:f` to 2.3.4",
            "reverting `tensorflow/python/keras/backend.py:f` to 2.3.4",
        ),
        ("`a|b` and c|d", "`a\\|b` and c\\|d"),  # its pipe still cannot end a table cell
        ("``x`y`` @team", "``x`y`` @<!-- -->team"),
        ("a lone ` and #7", "a lone \\` and #<!-- -->7"),  # no span: escaped as prose
        ("`<b>` <b>", "`<b>` &lt;b&gt;"),
    ],
)
def test_markdown_keeps_code_spans_whole_and_escapes_around_them(text: str, escaped: str) -> None:
    assert mdsummary.escape(text) == escaped


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
    assert "Every run in the table ran in: venv." in text  # said once when the table has to be short


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


def parse(page: str) -> _Collector:
    parsed = _Collector()
    parsed.feed(page)
    return parsed


def page_text(page: str) -> str:
    """The page as a reader sees it: text only, whitespace collapsed."""
    return " ".join(" ".join(parse(page).text).split())


def matrix_cells(page: str) -> list[dict[str, str | None]]:
    return [a for t, a in parse(page).tags if t == "a" and "cell" in (a.get("class") or "").split()]


def test_html_is_self_contained_escaped_and_complete(tmp_path: Path) -> None:
    write_bisect_log(tmp_path)
    data = report_data(tmp_path)
    page = htmlreport.render(data)
    parsed = parse(page)
    tags = [t for t, _ in parsed.tags]
    assert "script" not in tags, "scenario text must never become a script"
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    # nothing that could load: no src, no stylesheet links, only anchors to GitHub or the page
    assert not [a for t, a in parsed.tags if "src" in a or (t == "link")]
    cells = matrix_cells(page)
    assert len(cells) == 6
    # by the probe's answer under the bisection's terms: good, bad, skip, failure
    assert {str(c["class"]).split()[1] for c in cells} == {"good", "bad", "skip", "failure"}
    for cell in cells:
        assert f'id="{str(cell["href"])[1:]}"' in page  # each cell opens its details
    assert page.count("<svg") >= 2 * 3  # loss curves of the two real runs
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert 'id="change-point"' in page and "v2.4.0-rc4-71-g582c8d236cb" in page
    text = page_text(page)
    assert "Changed between 2.3.4 and 2.4.0: probe gradient_eager_plain (good → bad)." in text
    assert "reproduced in" not in text  # the verdict's count never stands in for the answer
    assert "good verdict: reproduced venv" in text and "bad verdict: reproduced venv" in text


def test_a_probe_bisection_colours_cells_by_the_probe_with_the_verdict_beside(tmp_path: Path) -> None:
    write_bisect_log(tmp_path)
    data = report_data(tmp_path, [recorded("tf2.2.3"), recorded("tf2.21.0")])
    old, new = data.cells
    assert old.outcome is new.outcome is Outcome.REPRODUCED  # the verdict: reproduced in both
    assert (data.look(old).word, data.look(old).css) == ("good", "good")  # the probe: match (good)
    assert (data.look(new).word, data.look(new).css) == ("bad", "bad")  # the probe: mismatch (bad)
    assert data.secondary(old) == data.secondary(new) == "verdict: reproduced"
    assert data.headline() == "changed between 2.3.4 and 2.4.0: probe gradient_eager_plain (good → bad)"
    assert data.tally().startswith("Judged by probe gradient_eager_plain: 1 good, 1 bad in 2 environments")
    # the PNG fills each cell with its answer's colour, not the verdict's
    path = matrixpng.render(data, tmp_path / "m.png")
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        colours = {rgb.getpixel((x, y)) for x in range(0, rgb.width, 3) for y in range(0, rgb.height, 3)}
    assert style.KIND_LOOK[style.Kind.GOOD].rgb in colours and style.KIND_LOOK[style.Kind.BAD].rgb in colours
    summary = json.loads(reportdata.dump(data))
    assert [c["answer"] for c in summary["cells"]] == ["good", "bad"]
    assert [c["outcome"] for c in summary["cells"]] == ["reproduced", "reproduced"]
    assert summary["judged_by"] == "probe gradient_eager_plain"


def test_user_terms_name_the_sides(tmp_path: Path) -> None:
    write_bisect_log(tmp_path, term_old="fast", term_new="slow")
    data = report_data(tmp_path, [recorded("tf2.2.3"), recorded("tf2.21.0")])
    assert [data.look(c).word for c in data.cells] == ["fast", "slow"]
    assert "(fast → slow)" in data.headline()
    assert "✓ fast (verdict: reproduced)" in mdsummary.render(data)


AMBIGUOUS: dict[str, Any] = {
    "status": Status.AMBIGUOUS,
    "versions": ["2.3.0", "2.3.4", "2.4.0rc0", "2.4.0", "2.4.1"],
    "candidates": ["2.4.0rc0", "2.4.0"],
    "message": "first bad is one of 2.4.0rc0, 2.4.0: the versions between 2.3.4 and 2.4.0 could not be tested "
    "(see the log).",
}
# A claim that 2.4.0 alone is the first bad, in any wording the views use.
SINGLE_FIRST_BAD = re.compile(r"first[ _-]?(bad|new)[\W_]*(TF\s*)?2\.4\.0(?!rc)", re.IGNORECASE)


def test_an_ambiguous_first_bad_is_never_shown_as_one_version(tmp_path: Path) -> None:
    from tfbisect.report.show import bisect_log_text, bisect_text

    write_bisect_log(tmp_path, **AMBIGUOUS)
    report = bisect_report(**AMBIGUOUS)
    data = report_data(tmp_path)
    matrix = reportdata.dump(data)
    views = {
        "console": bisect_text(report),
        "bisect log": bisect_log_text(report),
        "html": page_text(htmlreport.render(data)),
        "markdown": mdsummary.render(data),
        "matrix.json": matrix,
    }
    for name, text in views.items():
        assert "one of 2.4.0rc0, 2.4.0" in text, name
        assert SINGLE_FIRST_BAD.search(text) is None, (name, SINGLE_FIRST_BAD.search(text))
    assert data.headline() == (
        "changed between 2.3.4 and one of 2.4.0rc0, 2.4.0: probe gradient_eager_plain (good → bad)"
    )
    assert "first bad:  one of 2.4.0rc0, 2.4.0" in views["console"]
    assert "**First bad:** one of 2.4.0rc0, 2.4.0" in views["markdown"]
    chosen = json.loads(matrix)["bisection"]
    assert chosen["first_new"] == "one of 2.4.0rc0, 2.4.0" and chosen["candidates"] == ["2.4.0rc0", "2.4.0"]
    assert "v2.4.0-rc4-71-g582c8d236cb" not in views["html"] + views["markdown"]  # no commit for "one of"


FAILS = "RuntimeError: shapes (3, 4) <b>and</b> (4,) do not align"
END_FAILS: dict[str, Any] = {
    "status": Status.END_FAILS,
    "versions": ["2.3.0", "2.4.0", "2.4.1", "2.5.0"],
    "old_state": "match",
    "new_state": "error: RuntimeError: shapes (N, N) <b>and</b> (N,) do not align",
    "last_old": None,
    "first_new": None,
    "candidates": [],
    "git_versions": {},
    "compare_url": None,
    "end_failures": {"2.5.0": FAILS},
    "failure_finding": {
        "failure": FAILS,
        "direction": "starts",
        "last_without": "2.4.0",
        "first_with": "2.4.1",
        "last_with": None,
        "first_without": None,
        "candidates": ["2.4.1"],
    },
    "steps": [
        Step(1, "2.3.0", StepOutcome("reproduced"), "match", Class("old"), False, 20.0, "s", "k1"),
        Step(
            1,
            "2.5.0",
            StepOutcome("error"),
            "error: RuntimeError: shapes",
            Class("new"),
            False,
            21.0,
            "s",
            "k2",
        ),
        Step(2, "2.4.0", StepOutcome("reproduced"), "match", Class("old"), False, 20.0, "s", "k3"),
        Step(
            3,
            "2.4.1",
            StepOutcome("error"),
            "error: RuntimeError: shapes",
            Class("new"),
            False,
            21.0,
            "s",
            "k4",
        ),
    ],
    "message": f"from TF 2.5.0 the scenario fails: {FAILS}; the question cannot be judged there.",
}


def test_a_failing_end_is_said_with_its_failure_and_its_own_finding(tmp_path: Path) -> None:
    from tfbisect.report.show import bisect_log_text, bisect_text

    write_bisect_log(tmp_path, **END_FAILS)
    report = bisect_report(**END_FAILS)
    data = report_data(tmp_path)
    page = htmlreport.render(data)
    markdown = mdsummary.render(data)
    ends = f"from 2.4.1 on the scenario fails: {FAILS}; the question cannot be judged there"
    apart = "last run without the failure 2.4.0, first with it 2.4.1"
    console, log = bisect_text(report), bisect_log_text(report)
    for name, text in {"console": console, "log": log, "html": page_text(page), "markdown": markdown}.items():
        if name != "markdown":
            assert ends in text, name
        assert apart in text, name
    assert data.headline() == ends + " (probe gradient_eager_plain)"
    assert mdsummary.escape(ends) in markdown
    assert "<b>" not in re.sub(r"`[^`]*`", "", markdown)  # only inside code spans, where it is text
    assert "<b>and</b>" not in page and "&lt;b&gt;and&lt;/b&gt;" in page
    assert "failure finding: " + apart in console
    # a failing run is a failure in every view: never bad, good or reproduced
    assert [line.split()[3] for line in log.splitlines() if line.startswith("round")] == [
        "match",
        "failure",
        "match",
        "failure",
    ]
    failing = [c for c in data.cells if c.outcome in (Outcome.ERROR, Outcome.TIMEOUT)]
    assert failing and all(data.look(c).word == "failure" for c in failing)
    assert "! failure (error)" in markdown and "✗ bad" not in markdown  # no good/bad terms: ends disagree
    assert json.loads(reportdata.dump(data))["bisection"]["end_failures"] == {"2.5.0": FAILS}


def test_two_bisections_each_show_their_question_and_bisect_picks_the_headline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tfbisect.cli import main

    eager = write_bisect_log(tmp_path, "eager.json")
    graph = write_bisect_log(
        tmp_path,
        "graph.json",
        request={**bisect_report().request, "probe": "gradient_graph_plain"},
        command="tfbisect bisect --probe gradient_graph_plain",
        versions=["2.1.0", "2.1.4", "2.2.0", "2.2.3"],
        steps=[  # its own steps: a log whose answer is not among its steps is damaged
            Step(1, "2.1.0", StepOutcome("reproduced"), "match", Class("old"), False, 20.0, "s", "g1"),
            Step(1, "2.2.3", StepOutcome("reproduced"), "mismatch", Class("new"), False, 21.0, "s", "g2"),
            Step(2, "2.1.4", StepOutcome("reproduced"), "match", Class("old"), False, 20.0, "s", "g3"),
            Step(3, "2.2.0", StepOutcome("reproduced"), "mismatch", Class("new"), False, 22.0, "s", "g4"),
        ],
        last_old="2.1.4",
        first_new="2.2.0",
        candidates=["2.2.0"],
        compare_url="https://github.com/tensorflow/tensorflow/compare/v2.1.4...v2.2.0",
        started_at="2026-01-02T00:00:00+00:00",
        finished_at="2026-01-02T00:01:00+00:00",
    )
    records = [recorded("tf2.2.3"), recorded("tf2.21.0")]
    newest = report_data(tmp_path, records)
    assert newest.bisect_log == graph  # the newest, when none is named
    assert newest.headline() == "changed between 2.1.4 and 2.2.0: probe gradient_graph_plain (good → bad)"
    assert [newest.look(c).word for c in newest.cells] == ["bad", "bad"]  # graph/plain: mismatch in both
    text = page_text(htmlreport.render(newest))
    assert (
        "probe gradient_eager_plain: changed between 2.3.4 and 2.4.0" in text
    )  # the other, with its question
    assert f"tfbisect report --bisect {eager}" in text and "2 bisections of this scenario" in text
    markdown = mdsummary.render(newest)
    assert "- probe gradient\\_eager\\_plain" not in markdown
    assert "- probe gradient_eager_plain: changed between 2.3.4 and 2.4.0" in markdown

    assert main(["--reports", str(tmp_path), "report", "--bisect", str(eager)]) == 0
    out = capsys.readouterr().out
    assert "gradient_mismatch: changed between 2.3.4 and 2.4.0: probe gradient_eager_plain" in out
    assert "chosen with --bisect" in out
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("### tfbisect gradient_mismatch: changed between 2.3.4 and 2.4.0")
    assert "- probe gradient_graph_plain: changed between 2.1.4 and 2.2.0" in summary
    matrix = json.loads((tmp_path / "matrix.json").read_text())
    assert matrix["bisection"]["question"] == "probe gradient_eager_plain"
    assert [o["question"] for o in matrix["other_bisections"]] == ["probe gradient_graph_plain"]
    assert [c["answer"] for c in matrix["cells"]] == ["good", "bad"]


def test_report_bisect_refuses_a_log_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tfbisect.cli import main

    report_data(tmp_path)
    assert main(["--reports", str(tmp_path), "report", "--bisect", str(tmp_path / "none.json")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    other = write_bisect_log(tmp_path, "other.json", request={**bisect_report().request, "scenario": "other"})
    assert (
        main(["--reports", str(tmp_path), "report", "--scenario", SCENARIO.name, "--bisect", str(other)]) == 2
    )
    assert "is of the scenario 'other'" in capsys.readouterr().err
    # without --scenario, the log's own scenario is the one reported (here: one that does not exist)
    assert main(["--reports", str(tmp_path), "report", "--bisect", str(other)]) == 5
    assert "There is no scenario 'other'" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


DOCKER_EXTRA = {
    "image": "tfbisect:tf2.2.3-py3.8-cpu-0123456789ab",
    "image_id": "sha256:" + "a" * 64,
    "image_repo_digest": None,
    "base_image": "python:3.8-slim",
    "base_image_id": "sha256:" + "b" * 64,
    "gpu_visible": False,
}


def test_venv_and_docker_runs_of_a_version_share_a_column_labelled_by_backend(tmp_path: Path) -> None:
    venv = recorded("tf2.2.3")
    docker = dataclasses.replace(
        venv,
        spec=dataclasses.replace(venv.spec, backend="docker"),
        started_at="2026-12-01T00:00:00+00:00",  # newer than the venv run
        extra=DOCKER_EXTRA,
    )
    data = report_data(tmp_path, [venv, docker, recorded("tf2.21.0")])
    assert data.columns == ["cpu"]
    cell = data.cell("2.2.3", "cpu")
    assert (
        cell is not None and cell.backend == "docker" and [r.spec.backend for _, r in cell.others] == ["venv"]
    )
    text = page_text(htmlreport.render(data))
    assert "not reproduced" not in text.split("Matrix")[0]
    assert "reproduced docker (+1 older)" in text and "reproduced venv" in text
    assert "Older runs of this cell" in text
    markdown = mdsummary.render(data)
    assert "| 2.2.3 | ✗ reproduced · docker |" in markdown and "| 2.21.0 | ✗ reproduced · venv |" in markdown
    assert [c["backend"] for c in json.loads(reportdata.dump(data))["cells"]] == ["docker", "venv"]


def test_images_show_their_own_id_and_the_base_id_apart(tmp_path: Path) -> None:
    real = recorded("tf2.2.3")
    new = dataclasses.replace(real, spec=dataclasses.replace(real.spec, backend="docker"), extra=DOCKER_EXTRA)
    old_extra = {k: v for k, v in DOCKER_EXTRA.items() if k not in ("base_image_id", "image_repo_digest")}
    old = dataclasses.replace(
        recorded("tf2.21.0"),
        spec=dataclasses.replace(recorded("tf2.21.0").spec, backend="docker"),
        extra={
            **old_extra,
            "image": "tfbisect:tf2.21.0-old",
            "image_id": "sha256:" + "c" * 64,
            "base_digest": "sha256:" + "d" * 64,
        },  # written before base_digest was renamed
    )
    data = report_data(tmp_path, [new, old])
    markdown = mdsummary.render(data)
    assert (
        f"- `tfbisect:tf2.2.3-py3.8-cpu-0123456789ab` ID `sha256:{'a' * 64}`; "
        f"base `python:3.8-slim` ID `sha256:{'b' * 64}`"
    ) in markdown
    assert (
        f"- `tfbisect:tf2.21.0-old` ID `sha256:{'c' * 64}`; base `python:3.8-slim` ID `sha256:{'d' * 64}`"
        in markdown
    )
    assert "@" not in markdown.split("Images")[1].split("tfbisect 0.1.0")[0]
    rows = dict(reportdata.environment_rows(new))
    assert rows["image ID"] == "sha256:" + "a" * 64 and rows["base image ID"] == "sha256:" + "b" * 64
    assert rows["image repo digest"].startswith("none")
    assert dict(reportdata.environment_rows(old))["base image ID"] == "sha256:" + "d" * 64
    page = htmlreport.render(data)
    assert "sha256:" + "a" * 64 in page and "sha256:" + "b" * 64 in page


def test_probe_configurations_are_listed_under_their_probe(tmp_path: Path) -> None:
    real = recorded("tf2.2.3")
    assert real.document is not None
    document = json.loads(json.dumps(real.document))
    document["probes"][0]["configurations"] = {
        "plain": {
            "outcome": "mismatch",
            "summary": "eager <i>plain</i>",
            "metrics": {"max_relative_error": 0.69},
        },
        "decorated": {"outcome": "match", "summary": "eager decorated", "metrics": {}},
    }
    document["probes"][1]["configurations"] = ["not", "an", "object"]  # malformed: left out
    data = report_data(tmp_path, [dataclasses.replace(real, document=document), recorded("tf2.21.0")])
    page = htmlreport.render(data)
    rows = [a for t, a in parse(page).tags if t == "tr" and a.get("class") == "config"]
    assert len(rows) == 2
    text = page_text(page)
    assert "↳ plain mismatch 0.69 eager <i>plain</i>" in text and "↳ decorated match" in text
    assert "<i>plain</i>" not in page
    markdown = mdsummary.render(data)
    assert "Probes with several configurations:" in markdown
    assert "- TF 2.2.3 cpu · venv: `gradient_eager_plain`: plain mismatch, decorated match" in markdown
    assert markdown.count("- TF ") == 1  # the record without configurations adds nothing


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


def test_one_table_of_looks_behind_every_view() -> None:
    from tfbisect.report import show

    for outcome in Outcome:
        look = style.OUTCOME_LOOK[outcome]
        assert show.MARK[outcome] == f"{look.icon} {look.word}" == look.mark
        assert reportdata.OUTCOME_WORDS[outcome] == look.word
        assert mdsummary.ICON[look.word] == look.icon
        assert matrixpng.FILL[outcome] == look.rgb


def test_report_command_writes_all_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tfbisect.cli import main

    report_data(tmp_path)  # fills tmp_path/results
    assert main(["--reports", str(tmp_path), "report"]) == 0
    out = capsys.readouterr().out
    for name in ("report.html", "summary.md", "matrix.png", "matrix.json"):
        assert (tmp_path / name).is_file() and str(tmp_path / name) in out
    assert json.loads((tmp_path / "matrix.json").read_text())["scenario"] == "gradient_mismatch"


# ---- a plain script's summary: what each end said, and a rerun without tfbisect ----------------


def script_run(repro: Any, version: str, verdict: str, lock: Path | None, **changes: Any) -> RunRecord:
    """A stored run of the plain script `repro` at `version` (py3.8, cpu, venv) whose verdict says
    `verdict`; with `lock`, the run installed that lock (its name and hash kept as a run keeps them)."""
    real = recorded("tf2.2.3")
    document = json.loads(json.dumps(real.document))
    document["verdict"]["summary"] = verdict
    document["script"] = {"name": "repro.py", "dependencies": {"pandas": "1.1.5", "gone": None}}
    extra = {"reproduce": f"tfbisect run --tf {version} --python 3.8 --script {repro.path}"}
    if lock is not None:
        extra["lock"] = lock.name
    run = dataclasses.replace(
        real,
        spec=EnvSpec(version, "3.8"),
        scenario=repro.name,
        scenario_sha256=repro.sha256,
        outcome=Outcome.REPRODUCED if verdict.startswith("reproduced") else Outcome.NOT_REPRODUCED,
        document=document,
        extra=extra,
        lock_sha256=hashlib.sha256(lock.read_bytes()).hexdigest() if lock is not None else "",
    )
    return dataclasses.replace(run, **changes)


def write_lock(folder: Path, name: str, requirements: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(
        "# tfbisect lock (a test's)\n# tensorflow: 2.4.0\n# python: 3.8\n# flavour: cpu\n# keras: default\n"
        f"# requirements: {requirements}\n# exclude-newer: 2020-12-28T00:00:00Z\nabsl-py==0.11.0\n"
    )
    return path


def script_summary(
    tmp_path: Path, runs: list[RunRecord], repro: Any, *, script: bool = True, probe: str | None = None
) -> str:
    store = ResultStore(tmp_path / "results")
    for run in runs:
        store.put(run)
    request = {"scenario": repro.name, "flavour": "cpu", "keras": "default", "backend": "venv"}
    if probe is not None:
        request["probe"] = probe
    keys = {run.spec.tf_version: run.spec.key for run in runs}
    steps = [
        Step(1, "2.3.4", StepOutcome("not_reproduced"), "not_reproduced", Class("old"), False, 9.0, "s", keys["2.3.4"]),
        Step(2, "2.4.0", StepOutcome("reproduced"), "reproduced", Class("new"), False, 9.0, "s", keys["2.4.0"]),
    ]  # fmt: skip
    write_bisect_log(
        tmp_path, request=request, steps=steps, command=f"tfbisect bisect --script {repro.path}",
        old_state="not_reproduced", new_state="reproduced",
    )  # fmt: skip
    data = reportdata.collect(store, repro, tmp_path / "bisect")
    return mdsummary.render(data, source=mdsummary.Source("repro.py", repro.path.read_text(), script))


def test_a_script_summary_says_what_each_end_said_and_how_to_rerun_it_without_tfbisect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock, repro = locked_repro(tmp_path, monkeypatch)
    bad = "reproduced: AssertionError: 50.0 | `a|b` <b>@team</b> (repro.py line 2) " + "x" * 400
    runs = [
        script_run(repro, "2.3.4", "not reproduced: the script ran to its end", None),
        script_run(repro, "2.4.0", bad, lock),
    ]
    text = script_summary(tmp_path, runs, repro)
    assert "- TF 2.3.4 (good) said: not reproduced: the script ran to its end\n" in text
    [said] = [line for line in text.splitlines() if line.startswith("- TF 2.4.0 (bad) said: ")]
    # escaped as Markdown (the code span keeps its text, its pipe escaped), cut to a line
    assert said.startswith(
        "- TF 2.4.0 (bad) said: reproduced: AssertionError: 50.0 \\| `a\\|b` &lt;b&gt;@<!-- -->team&lt;/b&gt;"
    )
    assert said.endswith("x…") and said.count("x") < 200
    command = "python3.8 -m venv v && v/bin/pip install tensorflow-cpu==2.4.0 pandas==1.1.5 && v/bin/python repro.py"
    assert f"Without tfbisect, TF 2.4.0 (bad) as its run had it: `{command}`" in text
    assert "its lock `tf2.4.0-py3.8-cpu.txt`" in text
    assert text.index("Reproduce any cell:") < text.index("Without tfbisect")
    # a scenario (not a plain script) needs tfbisect's arguments: no plain rerun; the ends still say
    scenario_text = script_summary(tmp_path, runs, repro, script=False)
    assert "Without tfbisect" not in scenario_text and "- TF 2.4.0 (bad) said: reproduced" in scenario_text


def locked_repro(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Any]:
    """TF 2.4.0's lock in a locks folder of the test's own, and the plain script `repro.py`."""
    monkeypatch.setenv("TFBISECT_LOCKS", str(tmp_path / "locks"))
    lock = write_lock(tmp_path / "locks", "tf2.4.0-py3.8-cpu.txt", "tensorflow-cpu==2.4.0")
    return lock, find_script_at(tmp_path)


def find_script_at(folder: Path) -> Any:
    from tfbisect.core.scenario import find_script

    path = folder / "repro.py"
    path.write_text("import tensorflow as tf\nassert tf.reduce_sum(tf.ones(50)) == 49, 50.0\n")
    return find_script(str(path))


def test_no_plain_rerun_where_the_runs_own_lock_is_not_known_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock, repro = locked_repro(tmp_path, monkeypatch)
    good = script_run(repro, "2.3.4", "not reproduced: the script ran to its end", None)
    bad = script_run(repro, "2.4.0", "reproduced: AssertionError: 50.0", lock)
    assert reportdata.plain_rerun(bad) is not None
    # the lock changed since the run: its pins may not be the run's
    lock.write_text(lock.read_text() + "numpy==1.19.5\n")
    assert reportdata.plain_rerun(bad) is None
    assert "Without tfbisect" not in script_summary(tmp_path / "changed", [good, bad], repro)
    lock.unlink()  # gone
    assert reportdata.plain_rerun(bad) is None
    # a CUDA run before `and-cuda` had its NVIDIA libraries from elsewhere: pip alone is not it
    gpu = write_lock(tmp_path / "locks", "tf2.4.0-py3.8-cuda.txt", "tensorflow-gpu==2.4.0")
    cuda = script_run(repro, "2.4.0", "x", gpu, spec=EnvSpec("2.4.0", "3.8", Flavour.CUDA))
    assert reportdata.plain_rerun(cuda) is None
    # a Keras 2 run sets the variable it ran with; the lock's names are kept as the shell reads them
    legacy = write_lock(
        tmp_path / "locks", "tf2.16.1-py3.11-cpu-tfkeras.txt", "tensorflow[and-cuda]==2.16.1 tf-keras==2.16.0"
    )
    spec = EnvSpec("2.16.1", "3.11", keras=KerasVariant.LEGACY)
    rerun = reportdata.plain_rerun(script_run(repro, "2.16.1", "x", legacy, spec=spec))
    assert rerun is not None
    command = mdsummary.plain_command(rerun, "my repro.py")
    assert command == (
        "python3.11 -m venv v && v/bin/pip install 'tensorflow[and-cuda]==2.16.1' tf-keras==2.16.0 "
        "pandas==1.1.5 && TF_USE_LEGACY_KERAS=1 v/bin/python 'my repro.py'"
    )
    assert shlex.split(command)[-1] == "my repro.py"
    # a lock whose requirements are no plain pins (a URL, a range) is not offered
    odd = write_lock(tmp_path / "locks", "tf2.4.0-py3.8-cpu.txt", "tensorflow-cpu>=2.4")
    assert reportdata.plain_rerun(script_run(repro, "2.4.0", "x", odd)) is None


def test_an_end_whose_run_the_store_lost_says_nothing(tmp_path: Path) -> None:
    repro = find_script_at(tmp_path)
    good = script_run(repro, "2.3.4", "not reproduced: the script ran to its end", None)
    bad = script_run(repro, "2.4.0", "reproduced: AssertionError: 50.0", None)
    text = script_summary(tmp_path, [good, bad], repro)
    assert "- TF 2.4.0 (bad) said: reproduced: AssertionError: 50.0" in text
    # the step's run is not in the store any more (another key): no line rather than another run's
    other = dataclasses.replace(bad, spec=EnvSpec("2.4.0", "3.9"))
    store = ResultStore(tmp_path / "other" / "results")
    for run in (good, other):
        store.put(run)
    data = reportdata.collect(store, repro, tmp_path / "bisect")
    b = data.bisect
    assert b is not None and reportdata.run_of(data, b, "2.4.0") is None
    assert "(bad) said" not in mdsummary.render(data) and "(good) said" in mdsummary.render(data)


def test_a_probe_bisection_says_what_its_probe_said_not_the_runs_overall_verdict(tmp_path: Path) -> None:
    # TF 2.2.3's real run: gradient_eager_plain matches while the overall verdict is "reproduced"
    # (by gradient_graph_plain); the good end must not read as if it were bad.
    repro = find_script_at(tmp_path)
    good = script_run(repro, "2.3.4", "reproduced: gradient_graph_plain is off", None)
    bad = script_run(repro, "2.4.0", "reproduced: gradient_graph_plain is off", None)
    text = script_summary(tmp_path, [good, bad], repro, probe="gradient_eager_plain")
    [said] = [line for line in text.splitlines() if line.startswith("- TF 2.3.4 (good) said: ")]
    assert said.startswith(
        "- TF 2.3.4 (good) said: probe gradient_eager_plain: match, eager step, plain loss"
    )
    assert "gradient_graph_plain" not in said
    # a probe the run does not have (it failed before it): the run's own line
    other = script_summary(tmp_path / "other", [good, bad], repro, probe="no_such_probe")
    assert "- TF 2.3.4 (good) said: reproduced: gradient_graph_plain is off" in other
