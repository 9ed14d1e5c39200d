"""The narrowing below the releases in every view: the terminal, report.html, summary.md and
matrix.json, for each way a narrowing ends, with hostile text in every field the index, the
wheels and the scenario fill, and summary.md within GitHub's limit however big the suspects."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from test_report import bisect_report, page_text, parse, report_data
from tfbisect.core.catalogue import ReleaseKind
from tfbisect.core.fsio import write_json_atomic
from tfbisect.core.outcome import Outcome
from tfbisect.core.spec import EnvSpec
from tfbisect.narrow.diff import diff_file, excerpt
from tfbisect.report import findings, htmlreport, mdsummary, narrowdata, reportdata, show
from tfbisect.search.bisectlog import BisectReport
from tfbisect.search.narrowlog import (
    Build,
    DependencyChange,
    Narrowing,
    NarrowNote,
    NarrowStatus,
    NoteCode,
    Proof,
    Shrink,
    Suspect,
    Suspects,
    TraceSummary,
    Trial,
    TrialKind,
    Verdict,
)
from tfbisect.search.state import Class
from tfbisect.search.steps import Step, StepOutcome

from conftest import recorded

OLD_SOURCE = '''def grad(x, y):
    """Gradient of the sum."""
    total = x + y  # keep
    return total * 2
'''
NEW_SOURCE = '''def grad(x, y):
    """Gradient of the sum."""
    total = x - y  # changed
    if total > 0x1F:
        return total * 3
    return total * 2
'''
FILE = "tensorflow/python/ops/math_grad.py"
OLD_LINK = f"https://github.com/tensorflow/tensorflow/blob/v2.4.0-rc0/{FILE}#L1-L4"
NEW_LINK = f"https://github.com/tensorflow/tensorflow/blob/v2.4.0-rc1/{FILE}#L1-L6"
COMPARE = "https://github.com/tensorflow/tensorflow/compare/v2.4.0-rc0...v2.4.0-rc1"
HOSTILE = "</details><script>alert(1)</script>\x1b[2J\x1b]0;owned\x07 @team #1 https://evil.example ```` |x|"


def suspect(
    file: str = FILE,
    function: str = "grad",
    old: str = OLD_SOURCE,
    new: str = NEW_SOURCE,
    **changes: Any,
) -> Suspect:
    """A suspect made the way suspects.py makes one: a real hunk, its real excerpt."""
    hunk = diff_file(file, old, new).hunks[0]
    made = Suspect(
        file=file,
        function=function,
        score=1.0,
        failed=1,
        passed=0,
        executed_old=(3,),
        executed_new=(3, 4),
        documentation_only=False,
        old_lines=(hunk.old_first, hunk.old_last),
        new_lines=(hunk.new_first, hunk.new_last),
        excerpt=excerpt(hunk, {3}, {3, 4}),
        old_link=OLD_LINK,
        new_link=NEW_LINK,
    )
    return dataclasses.replace(made, **changes)


def ranked(*found: Suspect, total: int | None = None) -> Suspects:
    """As a narrowing keeps them: cut to what a log keeps, the total beside."""
    made = Suspects.of(found, files_traced=12, files_changed=3, hunks=5, missing_sources=()).cut()
    return dataclasses.replace(made, total=total if total is not None else len(found))


def step(version: str, cls: Class, state: str | None = "match", reused: bool = False) -> Step:
    outcome = StepOutcome.SKIP if cls is Class.SKIP else StepOutcome.REPRODUCED
    return Step(1, version, outcome, state, cls, reused, 0.0 if reused else 30.0, "ran", f"k-{version}")


TRACE = TraceSummary(
    probe="gradient_eager_plain",
    passing_probe="forward_only",
    old="2.4.0rc0",
    new="2.4.0rc1",
    seconds={"failing_old": 41.0, "failing_new": 44.0, "passing_old": 30.0, "passing_new": 33.0},
    untraced_seconds=12.0,
    packages=("tensorflow", "keras"),
)


def narrowing(**changes: Any) -> Narrowing:
    """A narrowing of 2.3.4 (good) .. 2.4.0 (bad) to 2.4.0rc0 .. 2.4.0rc1, traced, one suspect."""
    made = Narrowing(
        release_range=("2.3.4", "2.4.0"),
        status=NarrowStatus.NARROWED,
        candidates=["2.4.0rc0", "2.4.0rc1", "2.4.0rc2"],
        steps=[
            step("2.4.0rc1", Class.NEW, "mismatch"),
            step("2.3.4", Class.OLD, reused=True),
            step("2.4.0rc0", Class.OLD),
        ],
        last_old=Build("2.4.0rc0", ReleaseKind.RC, "2020-10-05T20:00:00Z", "v2.4.0-rc0-1-gabc", "v2.4.0-rc0"),
        first_new=Build("2.4.0rc1", ReleaseKind.RC, "2020-10-14T20:00:00Z", "v2.4.0-rc1", "v2.4.0-rc1"),
        compare_url=COMPARE,
        notes=[
            NarrowNote.of(NoteCode.NIGHTLIES_GONE, start="2026-02-02", version="2.4.0", uploaded="2020-12-14")
        ],
        dependencies=[
            DependencyChange("gast", "0.3.3", "0.4.0", False),
            DependencyChange("numpy", "1.18.5", "1.19.2", True),
            DependencyChange("tb-nightly", None, "2.4.0a1", False),
        ],
        trace=TRACE,
        suspects=ranked(suspect()),
    )
    return dataclasses.replace(made, **changes)


@dataclasses.dataclass(frozen=True)
class Views:
    report: BisectReport
    console: str  # narrowing_text
    bisect: str  # bisect_text
    log: str  # bisect_log_text
    html: str
    markdown: str
    matrix: dict[str, Any]


def views(tmp_path: Path, n: Narrowing, raw: dict[str, Any] | None = None, **changes: Any) -> Views:
    """Every view of a log holding `n` (its narrowing's keys replaced by `raw`'s, as an edited log
    or an older tfbisect could hold them)."""
    report = bisect_report(narrowing=n, **changes)
    log = tmp_path / "bisect" / "b.json"
    kept = report.to_dict()
    kept["narrowing"].update(raw or {})
    write_json_atomic(log, kept)
    report = BisectReport.from_dict(json.loads(log.read_text()))  # as every view reads it: from the log
    data = report_data(tmp_path)
    return Views(
        report=report,
        console=show.narrowing_text(report, log),
        bisect=show.bisect_text(report, log),
        log=show.bisect_log_text(report),
        html=htmlreport.render(data),
        markdown=mdsummary.render(data),
        matrix=json.loads(reportdata.dump(data)),
    )


def narrowing_html(page: str) -> str:
    """The "Where it changed" section's text, as a reader sees it."""
    start = page.index('<section class="narrowing"')
    return page_text(page[start : page.index("</section>", start)])


def summary_block(markdown: str) -> str:
    start = markdown.index("<details><summary>Suspect changes</summary>")
    return markdown[start : markdown.index("\n</details>\n", start)]


# ---- A narrowed range, in every view -----------------------------------------------------------


def test_a_narrowed_range_is_shown_everywhere_the_bisections_answer_is(tmp_path: Path) -> None:
    v = views(tmp_path, narrowing())
    finding = "narrowed: last good 2.4.0rc0, first bad 2.4.0rc1"
    # the terminal: the range with kinds, dates and refs, the builds, notes, dependencies, cost, suspects
    console = v.console
    assert finding in console and COMPARE in console
    assert (
        "2.4.0rc0 (release candidate, uploaded 2020-10-05, ref v2.4.0-rc0, git v2.4.0-rc0-1-gabc)" in console
    )
    assert "builds tried: 2 of the 3 between the releases on the index (2 new runs, 1 stored)" in console
    rows = [line.split()[0] for line in console.splitlines() if line.startswith("  2.")]
    assert rows == ["2.3.4", "2.4.0rc0", "2.4.0rc1"]  # in version order, not run order
    assert (
        "  - nightlies on the index start at 2026-02-02, after this range (2.4.0 was uploaded on "
        "2020-12-14): older nightlies are gone"
    ) in console
    deps = [line for line in console.splitlines() if "→" in line]
    assert deps[0].startswith("  * numpy 1.18.5 → 1.19.2 (imported")  # imported first, marked
    assert "    tb-nightly not installed → 2.4.0a1" in deps
    assert "37 s per traced run against 12 s untraced (3.1 times as long)" in console
    assert f"  1. {FILE}:grad" in console and "score 1.00 (only the failing probe ran it)" in console
    assert "     | +    if total > 0x1F:" in console
    assert f"     old: {OLD_LINK}" in console and f"     new: {NEW_LINK}" in console
    assert console.rstrip().endswith(findings.LIMITS)
    assert "compiled code (kernels, C++ gradients, XLA)" in console
    # the bisection's own text says it in short; `bisect log` has the steps and the rest
    assert f"below the releases: {finding}" in v.bisect
    assert "narrow    2.4.0rc0   good" in v.log and finding in v.log
    # report.html
    section = narrowing_html(v.html)
    assert "Narrowed: last good 2.4.0rc0, first bad 2.4.0rc1." in section
    assert "last good TF 2.3.4 · first bad TF 2.4.0" in section  # the release range beside it
    assert "TF 2.4.0rc1 (release candidate, uploaded 2020-10-14) v2.4.0-rc1" in section
    tags = parse(v.html).tags
    hrefs = {a.get("href") for t, a in tags if t == "a"}
    assert {COMPARE, OLD_LINK, NEW_LINK} <= hrefs
    rows_html = [a.get("class") for t, a in tags if t == "tr" and (a.get("class") or "").startswith("d-")]
    assert rows_html[0] == "d-hunk" and "d-del ran" in rows_html and rows_html.count("d-add ran") == 2
    assert '<span class="t-kw">if</span>' in v.html and '<span class="t-num">0x1F</span>' in v.html
    assert '<span class="t-com"># changed</span>' in v.html
    assert '<tr class="imported"><td>numpy</td>' in v.html
    assert v.html.index('id="change-point"') < v.html.index('id="narrowing"') < v.html.index('id="matrix"')
    # summary.md
    block = summary_block(v.markdown)
    assert f"**Below the releases:** {finding} · [compare]({COMPARE})" in v.markdown
    assert "- `numpy` `1.18.5` → `1.19.2` (**imported**)" in block
    assert block.index("numpy") < block.index("gast")
    assert f"**1.** `{FILE}`:`grad`" in block and f"[old lines]({OLD_LINK})" in block
    assert "```diff\n@@ -1,4 +1,6 @@\n" in block and "\n+    if total > 0x1F:\n" in block
    assert findings.LIMITS in block
    # matrix.json: the chosen bisection's narrowing, as its log keeps it
    bisection = v.matrix["bisection"]
    # (its notes in words: the log keeps their codes)
    kept = v.report.narrowing.to_dict()  # type: ignore[union-attr]
    assert kept["notes"] == [
        {"code": "nightlies_gone", "start": "2026-02-02", "version": "2.4.0", "uploaded": "2020-12-14"}
    ]
    words = "nightlies on the index start at 2026-02-02, after this range (2.4.0 was uploaded on 2020-12-14): older nightlies are gone"
    assert bisection["narrowing"] == {**kept, "notes": [words]}
    assert bisection["narrowing_finding"] == finding


# ---- Each way a narrowing ends ----------------------------------------------------------------

STATUSES: dict[NarrowStatus, tuple[dict[str, Any], str, str]] = {
    NarrowStatus.NOTHING_FINER: (
        dict(
            candidates=[],
            steps=[],
            last_old=None,
            first_new=None,
            compare_url=None,
            notes=[
                NarrowNote.legacy("the index has no release candidates of 2.4.0 (its oldest are 2.6.0rc0)")
            ],
        ),
        "nothing finer than the releases: last good 2.3.4, first bad 2.4.0 (no build between them to run)",
        "the index publishes nothing between the two releases",
    ),
    NarrowStatus.UNRESOLVED: (
        dict(
            steps=[
                step("2.4.0rc0", Class.OLD),
                step("2.4.0rc1", Class.SKIP, None),
                step("2.4.0rc2", Class.NEW),
            ],
            first_new=Build("2.4.0rc2", ReleaseKind.RC, "2020-10-20T00:00:00Z", None, "v2.4.0-rc2"),
            unresolved=["2.4.0rc1"],
        ),
        "not resolved below the releases: last good 2.4.0rc0, first bad one of 2.4.0rc1, 2.4.0rc2",
        "some builds between could not be judged",
    ),
    NarrowStatus.NON_MONOTONIC: (
        dict(
            steps=[
                step("2.4.0rc0", Class.NEW, "mismatch"),
                step("2.4.0rc1", Class.OLD),
                step("2.4.0rc2", Class.NEW),
            ],
            last_old=None,
            first_new=None,
            compare_url=None,
            trace=None,
            suspects=None,
        ),
        "not narrowed: the builds between 2.3.4 and 2.4.0 change back and forth "
        "(2.4.0rc0 -> 2.4.0rc1, 2.4.0rc1 -> 2.4.0rc2)",
        "the release range stands",
    ),
    NarrowStatus.INTERRUPTED: (
        dict(steps=[step("2.4.0rc0", Class.OLD)], last_old=None, first_new=None, trace=None, suspects=None),
        "narrowing interrupted between 2.3.4 and 2.4.0",
        "every finished run is stored; run `tfbisect narrow ",
    ),
}


@pytest.mark.parametrize("status", list(STATUSES), ids=lambda s: s.value)
def test_each_status_has_its_own_words_in_every_view(tmp_path: Path, status: NarrowStatus) -> None:
    changes, finding, explained = STATUSES[status]
    v = views(tmp_path, narrowing(status=status, **changes))
    assert findings.narrowing_finding(v.report) == finding
    assert v.console.splitlines()[1] == finding and explained in v.console
    assert f"below the releases: {finding}" in v.bisect
    section = narrowing_html(v.html)
    assert findings.capital(finding) + "." in section and explained[1:] in section
    assert finding in mdsummary.escape(v.markdown) or mdsummary.escape(finding) in v.markdown
    assert v.matrix["bisection"]["narrowing"]["status"] == status.value
    if status is NarrowStatus.INTERRUPTED:  # the advice names this log
        assert f"tfbisect narrow {tmp_path / 'bisect' / 'b.json'}" in v.console
    if status is NarrowStatus.NON_MONOTONIC:  # no trace: no suspect section, no limits sentence
        assert "Suspect changes" not in v.html and findings.LIMITS not in v.console


def test_a_bisection_without_a_narrowing_shows_none(tmp_path: Path) -> None:
    log = tmp_path / "bisect" / "b.json"
    write_json_atomic(log, bisect_report().to_dict())
    data = report_data(tmp_path)
    assert 'id="narrowing"' not in htmlreport.render(data)
    assert "Suspect changes" not in mdsummary.render(data) and "Below the releases" not in mdsummary.render(
        data
    )
    assert json.loads(reportdata.dump(data))["bisection"]["narrowing"] is None
    assert "below the releases" not in show.bisect_text(bisect_report())
    assert show.narrowing_text(bisect_report()) == "no narrowing below the releases in this log"


def test_no_executed_python_change_is_said_plainly(tmp_path: Path) -> None:
    docs = suspect(
        old=OLD_SOURCE.replace("Gradient", "The gradient"), new=OLD_SOURCE, documentation_only=True
    )
    v = views(tmp_path, narrowing(suspects=ranked(docs)))
    plain = "No Python code that the failing probe ran changed between the two builds (documentation aside"
    likely = "the change is likely in compiled code (kernels, C++ gradients, XLA) or in a package that was not traced"
    for text in (v.console, narrowing_html(v.html), summary_block(v.markdown)):
        assert plain in text and likely in text
    assert "documentation only" in v.console
    # with code among the suspects, only the general limit is said
    assert plain not in views(tmp_path, narrowing()).console


def test_failed_tracing_is_shown_with_what_to_do(tmp_path: Path) -> None:
    trace = dataclasses.replace(
        TRACE,
        seconds={},
        untraced_seconds=None,
        error=NarrowNote.of(
            NoteCode.TRACE_FAILED,
            what="the traced run of 2.4.0rc1 wrote no trace",
            todo="run it with --trace-debug",
        ),
    )
    v = views(tmp_path, narrowing(trace=trace, suspects=None))
    for text in (v.console, narrowing_html(v.html), summary_block(v.markdown)):
        assert "racing failed, so no suspect code is named: the traced run of 2.4.0rc1 wrote no trace" in text
        assert "run it with --trace-debug" in text and "tfbisect narrow " in text
    assert "no traced run finished" in v.console
    assert 'id="narrow-trace-error"' in v.html
    error = "the traced run of 2.4.0rc1 wrote no trace (what to do: run it with --trace-debug)"
    assert v.matrix["bisection"]["narrowing"]["trace"]["error"] == error  # in words, as before


# ---- Hostile text ------------------------------------------------------------------------------


def hostile_narrowing() -> Narrowing:
    long_line = "x = '" + "A" * 10_000 + "'"
    old = f"def f():\n    return 1\n    # {HOSTILE}\n"
    new = f"def f():\n    return 2  # {HOSTILE}\n    {long_line}\n"
    evil = suspect(
        file=f"tensorflow/{HOSTILE}\nforged line.py",
        function=f"{HOSTILE}\x1b[31m",
        old=old,
        new=new,
        caller=HOSTILE,
        old_link="javascript:alert(1)",
        new_link=f"https://github.com/x/y/blob/v1/a.py#L1 onmouseover=alert(1) {HOSTILE}",
        executed_old=(2,),
        executed_new=(2,),
    )
    # as an edited log could hold it: lines longer than suspects.py ever writes
    evil = dataclasses.replace(evil, excerpt=evil.excerpt + "\n+" + long_line + "\n+`````` " + HOSTILE)
    build = Build(f"2.4.0rc1{HOSTILE}", ReleaseKind.RC, HOSTILE, HOSTILE, HOSTILE)
    return narrowing(
        first_new=build,
        notes=[
            NarrowNote.legacy(HOSTILE),
            NarrowNote.legacy("y" * 5000),
            NarrowNote.of(NoteCode.UNTRACED_FAILED, probe=HOSTILE, error=HOSTILE),
        ],
        dependencies=[DependencyChange(HOSTILE, HOSTILE, None, True)],
        compare_url="javascript:alert(1)",
        unresolved=[HOSTILE],
        suspects=ranked(evil, suspect()),
        trace=dataclasses.replace(TRACE, error=NarrowNote.legacy(HOSTILE)),
    )


def test_hostile_text_stays_text_in_every_view(tmp_path: Path) -> None:
    v = views(tmp_path, hostile_narrowing())
    # terminal: no escape sequence, no forged line, no line a screen cannot hold
    for text in (v.console, v.bisect, v.log):
        assert "\x1b" not in text and "\x07" not in text
        assert "\nforged line.py" not in text
        assert max(len(line) for line in text.splitlines()) < 2_500
    assert "\\x1b[2J" in v.console  # shown, escaped
    # HTML: autoescaped, no script, no href that is not GitHub, no control characters
    tags = parse(v.html).tags
    assert not [t for t, _ in tags if t == "script"]
    assert sum(t == "details" for t, _ in tags) == v.html.count("</details>")  # none forged
    hrefs = [str(a.get("href")) for t, a in tags if t == "a" and a.get("href")]
    assert all(h.startswith(("#", "https://github.com/")) for h in hrefs)
    assert not any("onmouseover" in h or " " in h for h in hrefs)
    assert not [a for _, a in tags if any(k.startswith("on") for k in a)]
    assert "\x1b" not in v.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in v.html
    assert "A" * 400 not in v.html  # long lines cut (suspects.py's own cut is 200)
    # Markdown: fences no line can close, nothing raw outside code but the block's own tags
    md = v.markdown
    assert "\x1b" not in md and "javascript:" not in md and "onmouseover" not in md
    assert_markdown_is_inert(md)
    # JSON: the log's data as it is (JSON escapes it), never the cut views
    assert v.matrix["bisection"]["narrowing"]["notes"][0] == HOSTILE


OWN_TAGS = ("<details>", "<summary>", "</summary>", "</details>", "<!-- -->")


def assert_markdown_is_inert(md: str) -> None:
    """Outside fenced code and code spans, the only raw `<` are the summary's own tags; each fence
    is longer than any backtick run inside it, so nothing in an excerpt can close it."""
    fence: str | None = None
    body: list[str] = []
    for line in md.splitlines():
        if fence is not None:
            if line == fence:
                longest = max((len(run) for text in body for run in re.findall(r"`+", text)), default=0)
                assert longest < len(fence), f"a line inside could close the fence {fence!r}"
                fence, body = None, []
            else:
                body.append(line)
            continue
        opening = re.match(r"(`{3,})(\w*)$", line)
        if opening:
            fence = opening.group(1)
            continue
        outside = _without_code_spans(line)
        for found in re.finditer("<", outside):
            assert outside.startswith(OWN_TAGS, found.start()), f"raw HTML in the summary: {line[:200]!r}"
    assert fence is None, "a fence was left open"


def _without_code_spans(line: str) -> str:
    """The line with its inline code spans taken out (CommonMark: a run of N backticks to the next run of N)."""
    out, pos = [], 0
    while pos < len(line):
        found = re.compile(r"`+").search(line, pos)
        if found is None:
            out.append(line[pos:])
            break
        out.append(line[pos : found.start()])
        closing = re.compile(r"(?<!`)" + found.group() + r"(?!`)").search(line, found.end())
        if closing is None:
            out.append(line[found.start() :])
            break
        pos = closing.end()
    return "".join(out)


def test_links_are_kept_only_when_they_point_at_github() -> None:
    assert narrowdata.safe_link(COMPARE) == COMPARE
    for bad in (
        "javascript:alert(1)",
        "http://github.com/x",
        "https://github.com.evil.example/x",
        "https://github.com/x y",
        'https://github.com/x"onclick=1',
        "https://github.com/x)[y](z",
        None,
        5,
    ):
        assert narrowdata.safe_link(bad) is None, bad


def test_a_malformed_suspects_dict_renders_what_it_can(tmp_path: Path) -> None:
    broken = {
        "suspects": [1, "x", {"file": 5, "score": "high", "excerpt": None, "executed_new": ["3", True, 4]}],
        "files_traced": "many",
        "missing_sources": "all",
        "suspects_total": -3,
    }
    v = views(tmp_path, narrowing(), raw={"suspects": broken})
    found = narrowdata.suspects_of(v.report.narrowing)  # type: ignore[arg-type]
    assert found is not None and len(found.suspects) == 1
    only = found.suspects[0]
    assert (only.file, only.score, only.executed_new, narrowdata.diff_of(only)) == (
        "?",
        0.0,
        (4,),
        (narrowdata.DiffLine("d-ctx", "", None, None, False, ()),),
    )
    assert "1 suspect (0 files traced" in v.console and 'id="suspect-1"' in v.html


# ---- summary.md within GitHub's limit ------------------------------------------------------------


def big_suspect(rank: int) -> Suspect:
    """A hunk as big as suspects.py makes them: 40 lines of 200 characters, backticks in them."""
    old = "".join(f"v{i} = '{'`' * (rank % 7)}{'o' * 180}'\n" for i in range(60))
    new = "".join(f"v{i} = '{'`' * (rank % 7)}{'n' * 180}'\n" for i in range(60))
    return suspect(
        file=f"tensorflow/python/ops/big_{rank}.py",
        function=f"f{rank}",
        old=old,
        new=new,
        executed_old=(30,),
        executed_new=(30,),
    )


def test_summary_shrinks_the_suspects_to_fit_before_anything_else(tmp_path: Path) -> None:
    many = ranked(*(big_suspect(i) for i in range(25)), total=140)
    v = views(tmp_path, narrowing(suspects=many))
    md = v.markdown
    assert len(md) <= mdsummary.LIMIT
    assert_markdown_is_inert(md)
    block = summary_block(md)
    shown = len(re.findall(r"^\*\*\d+\.\*\* ", block, flags=re.MULTILINE))
    assert 1 <= shown < 10
    assert f"Top {shown} of 140 suspects" in block and "the HTML report has them" in block
    # nothing else was left out: every version has its row, every reproduce command is there
    full = mdsummary._render(report_data(tmp_path), group_rows=False, max_details=50, suspects=0, excerpt=0)
    assert md.count("\n| ") == full.count("\n| ")
    assert md.count("- `tfbisect run") == full.count("- `tfbisect run")
    assert md.rstrip().endswith("</details>")
    # the HTML report keeps all 25 the log holds, each with its whole excerpt
    assert v.html.count('<div class="suspect"') == 25


def test_a_long_table_is_grouped_before_the_suspects_go(tmp_path: Path) -> None:
    base = recorded("tf2.2.3")
    records = [
        dataclasses.replace(
            base,
            spec=EnvSpec(f"2.{minor}.{patch}", "3.8"),
            outcome=Outcome.REPRODUCED if patch % 3 else Outcome.NOT_REPRODUCED,
        )
        for minor in range(25)
        for patch in range(60)
    ]
    many = ranked(*(big_suspect(i) for i in range(25)))
    write_json_atomic(
        tmp_path / "bisect" / "b.json", bisect_report(narrowing=narrowing(suspects=many)).to_dict()
    )
    md = mdsummary.render(report_data(tmp_path, records))
    assert len(md) <= mdsummary.LIMIT and "cut to fit" not in md
    assert_markdown_is_inert(md)
    assert re.search(r"^\| 2\.\d+\.\d+ to 2\.\d+\.\d+ \|", md, flags=re.MULTILINE)  # grouped rows
    assert "```diff" in summary_block(md) and md.rstrip().endswith("</details>")


# ---- The pieces --------------------------------------------------------------------------------


def test_fences_are_longer_than_any_backtick_run() -> None:
    assert mdsummary.fenced(["a"], "diff") == ["```diff", "a", "```"]
    assert mdsummary.fenced(["x ````` y", "``"]) == ["``````", "x ````` y", "``", "``````"]
    assert mdsummary.fenced(["\x1b[31m"])[1] == "\\x1b[31m"


def test_diff_lines_are_numbered_marked_and_highlighted() -> None:
    lines = narrowdata.diff_lines(suspect().excerpt, frozenset({3}), frozenset({3, 4}))
    assert [(line.kind, line.old, line.new, line.ran) for line in lines] == [
        ("d-hunk", None, None, False),
        ("d-ctx", 1, 1, False),
        ("d-ctx", 2, 2, False),
        ("d-del", 3, None, True),
        ("d-add", None, 3, True),
        ("d-add", None, 4, True),
        ("d-add", None, 5, False),
        ("d-ctx", 4, 6, False),
    ]
    for line in lines[1:]:  # highlighting loses nothing
        assert line.sign + "".join(text for _, text in line.tokens) == line.text
    assert ("fn", "grad") in lines[1].tokens and ("kw", "def") in lines[1].tokens


def test_numbers_count_back_from_the_end_after_a_leading_marker() -> None:
    text = "@@ -10,5 +10,4 @@\n… 2 lines not shown\n-a\n b\n c"
    lines = narrowdata.diff_lines(text, frozenset({12}), frozenset())
    assert [(line.old, line.new) for line in lines] == [
        (None, None),
        (None, None),
        (12, None),
        (13, 12),
        (14, 13),
    ]
    assert lines[2].ran
    both = "@@ -10,5 +10,4 @@\n… 2 lines not shown\n-a\n… 1 lines not shown"
    assert all(line.old is None for line in narrowdata.diff_lines(both, frozenset(), frozenset()))


def test_triple_quoted_strings_carry_over_lines_per_version() -> None:
    text = '@@ -1,3 +1,3 @@\n-x = """old\n+x = 1\n still"""'
    lines = narrowdata.diff_lines(text, frozenset(), frozenset())
    # the context line is read as the old version reads it: inside the old string
    assert lines[3].tokens[0] == ("str", 'still"""')
    tokens, open_quote = narrowdata.highlight("s = '''a # not a comment")
    assert open_quote == "'''" and tokens[-1] == ("str", "'''a # not a comment")
    assert narrowdata.highlight("y = 'it''s' # c")[0][-1] == ("com", "# c")


def test_a_short_window_centres_on_the_first_changed_line_that_ran() -> None:
    body = "\n".join([" c"] * 20 + ["-gone", "+here"] + [" c"] * 20)
    lines = narrowdata.diff_lines("@@ -1,41 +1,41 @@\n" + body, frozenset(), frozenset({21}))
    shown = narrowdata.window(lines, 8)
    assert len(shown) == 8 and shown[0].kind == "d-hunk"
    assert [line.text for line in shown][1:] == [
        "… 19 lines not shown",
        " c",
        "-gone",
        "+here",
        " c",
        " c",
        "… 18 lines not shown",
    ]


# ---- The proof opens the section ---------------------------------------------------------------

PROVEN = Proof(
    probe="gradient_eager_plain",
    old="2.3.4",
    new="2.4.0",
    old_state="match",
    new_state="mismatch",
    trials=(
        Trial(
            TrialKind.REVERT,
            ("tensorflow/python/ops/nn_ops.py:softmax",),
            "2.4.0",
            "mismatch",
            Verdict.NO_FLIP,
        ),
        Trial(
            TrialKind.REVERT,
            ("tensorflow/python/keras/backend.py:categorical_crossentropy",),
            "2.4.0",
            "match",
            Verdict.FLIPPED,
        ),
    ),
    runs=2,
    budget=30,
    cause=("tensorflow/python/keras/backend.py:categorical_crossentropy",),
    cause_kind=TrialKind.REVERT,
    patch="--- a/tensorflow/python/keras/backend.py (v2.4.0)\n+++ b/tensorflow/python/keras/backend.py (v2.3.4)\n"
    "@@ -1,2 +1,1 @@\n-  if hasattr(output, '_keras_logits'):\n   output = output",
    old_link="https://github.com/tensorflow/tensorflow/blob/v2.3.4/tensorflow/python/keras/backend.py#L4800",
)
ANSWER = (
    "reverting `tensorflow/python/keras/backend.py:categorical_crossentropy` to 2.3.4 restores the old "
    "behaviour (mismatch → match)"
)


def test_the_proven_cause_opens_every_view_with_its_patch(tmp_path: Path) -> None:
    seen = views(tmp_path, narrowing(proof=PROVEN))
    assert seen.report.narrowing is not None and seen.report.narrowing.proof == PROVEN  # through the log
    console = seen.console.splitlines()
    assert console[2].startswith(f"proof: {ANSWER}")
    assert "-  if hasattr(output, '_keras_logits'):" in seen.console
    assert (
        "reverting tensorflow/python/ops/nn_ops.py:softmax in 2.4.0: did not flip (mismatch)" in seen.console
    )
    assert f"proof:      {ANSWER}" in seen.bisect
    html = narrowing_html(seen.html)
    assert html.index("Proof: reverting") < html.index("Suspect changes")
    assert 'id="narrow-proof-patch"' in seen.html and str(PROVEN.old_link) in seen.html
    assert "**Proof:** reverting" in seen.markdown and "```diff" in seen.markdown
    assert seen.matrix["bisection"]["narrowing"]["proof_answer"].startswith(ANSWER)
    assert seen.matrix["bisection"]["narrowing"]["proof"]["cause"] == list(PROVEN.cause)


def test_nothing_flipped_is_said_plainly(tmp_path: Path) -> None:
    nothing = dataclasses.replace(
        PROVEN, cause=(), cause_kind=None, patch="", trials=PROVEN.trials[:1], runs=1
    )
    seen = views(tmp_path, narrowing(proof=nothing))
    assert (
        "proof: nothing flipped: putting back the old code of the suspects (1 try, 1 run of a budget of 30)"
        in seen.console
    )
    assert "Proof: nothing flipped" in narrowing_html(seen.html)


WHOLE = (
    "--- a/tensorflow/python/keras/backend.py\tv2.4.0\n+++ b/tensorflow/python/keras/backend.py\tv2.3.4\n"
    '@@ -1,4 +1,3 @@\n   """Categorical crossentropy between an output tensor and a target tensor."""\n'
    "-  if hasattr(output, '_keras_logits'):\n   output = output"
)
SHRUNK = dataclasses.replace(
    PROVEN,
    trials=(
        *PROVEN.trials,
        Trial(
            TrialKind.SHRINK,
            ("tensorflow/python/keras/backend.py line 4788",),
            "2.4.0",
            "mismatch",
            Verdict.NO_FLIP,
        ),
        Trial(
            TrialKind.SHRINK,
            ("tensorflow/python/keras/backend.py lines 4834-4840",),
            "2.4.0",
            "match",
            Verdict.FLIPPED,
        ),
    ),
    runs=4,
    patch="--- a/tensorflow/python/keras/backend.py\tv2.4.0\n+++ b/tensorflow/python/keras/backend.py\tv2.3.4\n"
    "@@ -1,2 +1,1 @@\n-  if hasattr(output, '_keras_logits'):\n   output = output",
    shrink=Shrink(WHOLE, blocks=7, documentation=4, kept=1, tries=2, runs=2, minimal=True),
)


def test_the_minimal_patch_comes_first_then_the_whole_revert_it_was_shrunk_from(tmp_path: Path) -> None:
    seen = views(tmp_path, narrowing(proof=SHRUNK))
    assert seen.report.narrowing is not None and seen.report.narrowing.proof == SHRUNK  # through the log
    heading = (
        "the minimal patch that restores the old behaviour (1 of the revert's 7 changed blocks): in the "
        "2.4.0 environment's site-packages, `patch -p1` (or `git apply`) applies it"
    )
    shrunk = (
        "shrunk from the whole revert of `tensorflow/python/keras/backend.py:categorical_crossentropy` "
        "(7 changed blocks; 4 changed only docstrings, comments or blank lines and were left out without "
        "a run; 2 tries, 2 runs)"
    )
    console = seen.console
    assert console.index(heading) < console.index("-  if hasattr") < console.index(shrunk)
    # The header's tab as a terminal shows it: spaces, never escaped.
    assert "--- a/tensorflow/python/keras/backend.py  " in console and "\\x09" not in console
    assert "line 4788" not in console  # the shrink's tries are counted, not listed, in the terminal
    html = narrowing_html(seen.html)
    assert (
        html.index(findings.capital(heading))
        < html.index("_keras_logits")
        < html.index(findings.capital(shrunk))
    )
    assert 'id="narrow-proof-whole"' in seen.html and "Categorical crossentropy between" in html
    assert "reverting only tensorflow/python/keras/backend.py line 4788 in 2.4.0: did not flip" in html
    markdown = seen.markdown
    patch_at = markdown.index("```diff\n--- a/tensorflow/python/keras/backend.py\tv2.4.0")
    assert patch_at < markdown.index("The whole revert it was shrunk from") < markdown.index("Categorical")
    assert "`patch -p1`" in markdown
    found = seen.matrix["bisection"]["narrowing"]
    assert found["proof_patch"] == heading and found["proof_shrink"] == shrunk
    assert found["proof"]["patch"] == SHRUNK.patch and found["proof"]["shrink"]["whole_patch"] == WHOLE


def test_a_version_2_proof_shows_its_whole_revert_as_the_patch(tmp_path: Path) -> None:
    """A log from before the shrinking: no `shrink`, its patch the whole revert; it still renders."""
    seen = views(tmp_path, narrowing(proof=PROVEN), raw={"version": 2})
    assert seen.report.narrowing is not None and seen.report.narrowing.proof == PROVEN
    assert "the patch that restores the old behaviour (the whole revert): in the 2.4.0" in seen.console
    assert "shrunk from" not in seen.console and 'id="narrow-proof-whole"' not in seen.html
    assert seen.matrix["bisection"]["narrowing"]["proof_shrink"] is None


def test_a_shrink_the_budget_ended_says_the_patch_may_not_be_minimal() -> None:
    cut = dataclasses.replace(SHRUNK, shrink=Shrink(WHOLE, 7, 4, 2, 3, 3, minimal=False))
    text = findings.shrink_text(cut)
    assert text is not None and text.endswith(
        "the proof's budget of 30 runs ended while shrinking: this is the smallest patch proven so far, "
        "and it may not be minimal"
    )
    whole = dataclasses.replace(SHRUNK, shrink=Shrink("", 3, 0, 3, 2, 2, minimal=True))
    assert findings.shrink_text(whole) == (
        "none of the 3 changed blocks of the revert of "
        "`tensorflow/python/keras/backend.py:categorical_crossentropy` can be left out (2 tries, 2 runs)"
    )
    assert "(the whole revert: 3 changed blocks)" in findings.patch_heading(whole)
