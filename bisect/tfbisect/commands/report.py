"""`tfbisect report`: the HTML report, the Markdown summary and the matrix PNG and JSON from the
stored results (and a bisection's log), optionally posted as a GitHub comment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tfbisect.commands.common import DONE
from tfbisect.core import scenario, store
from tfbisect.core.argv import Common
from tfbisect.core.errors import ExitCode
from tfbisect.core.fsio import write_text_atomic
from tfbisect.core.progress import Progress
from tfbisect.report import github, htmlreport, matrixpng, mdsummary, reportdata
from tfbisect.search import bisectlog


@dataclass(frozen=True)
class ReportOptions:
    scenario: str | None = None  # None: the --bisect log's, else the default scenario
    bisect: Path | None = None
    out: Path | None = None  # None: the reports folder
    post: str | None = None  # OWNER/REPO#N
    api_url: str = github.API
    common: Common = field(default_factory=Common)


@dataclass(frozen=True)
class Reports:
    """The report files written and what their headline says."""

    headline: str  # "SCENARIO: HEADLINE"
    note: str  # why this bisection answers the headline ("" when there is no choice)
    files: tuple[Path, ...]
    summary: str  # the Markdown summary's text


@dataclass(frozen=True)
class ReportResult:
    reports: Reports
    posted: str | None  # the comment's URL
    exit_code: ExitCode = DONE


def report(options: ReportOptions, progress: Progress) -> ReportResult:
    name = options.scenario
    if name is None and options.bisect is not None:
        name = report_scenario(options.bisect)
    chosen = scenario.find(name or scenario.DEFAULT)
    target = github.Target.parse(options.post) if options.post else None
    # No token: fail before any work, saying that nothing was posted and no file was written.
    token = github.token_from_env() if target else ""
    reports = options.common.reports
    out = options.out or reports
    written = write_reports(reports, chosen, out, bisect=options.bisect)
    url = None
    if target is not None:
        # A failed post says so (PostError, exit 11) and where the written summary is.
        url = github.post_comment(
            target, written.summary, token, api=options.api_url, summary_path=out / "summary.md"
        )
    return ReportResult(written, url)


def report_scenario(log: Path) -> str | None:
    """The scenario a bisection log is about (for `report --bisect LOG` without --scenario)."""
    try:
        found = bisectlog.load_report(log).request.get("scenario")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # collect() says what is wrong with the log
    return str(found) if found else None


def write_reports(
    reports: Path, chosen: scenario.Scenario, out: Path, *, bisect: Path | None = None
) -> Reports:
    """Write the HTML report, the Markdown summary, the matrix PNG and JSON.

    `bisect`: the bisection log the headline answers (default: the scenario's newest)."""
    data = reportdata.collect(store.ResultStore(reports / "results"), chosen, reports / "bisect", bisect)
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "report.html": htmlreport.render(data),
        "summary.md": mdsummary.render(data),
        "matrix.json": reportdata.dump(data),
    }
    for name, text in written.items():
        write_text_atomic(out / name, text)
    matrixpng.render(data, out / "matrix.png")
    return Reports(
        headline=f"{data.scenario}: {data.headline()}",
        note=data.choice_note() or "",
        files=tuple(out / name for name in (*written, "matrix.png")),
        summary=written["summary.md"],
    )
