"""`tfbisect report`: the HTML report, the Markdown summary and the matrix PNG and JSON from the
stored results (and a bisection's log), optionally posted as a GitHub comment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tfbisect.commands.common import DONE
from tfbisect.core import scenario, store
from tfbisect.core.argv import Common
from tfbisect.core.errors import ExitCode, ScenarioError
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
    reports = options.common.reports
    log = options.bisect
    if options.scenario is not None:
        chosen = scenario.find(options.scenario)
    elif log is not None:
        chosen = log_scenario(log, progress) or scenario.find(scenario.DEFAULT)
    else:
        # No options: the scenario of the newest readable bisection (the one that just ran),
        # else the default one; its newest bisection is the headline's.
        found = sorted((reports / "bisect").glob("*.json"), key=lambda p: p.stat().st_mtime)
        newest = (log_scenario(path, progress) for path in reversed(found))
        chosen = next((one for one in newest if one is not None), None) or scenario.find(scenario.DEFAULT)
    target = github.Target.parse(options.post) if options.post else None
    # No token: fail before any work, saying that nothing was posted and no file was written.
    token = github.token_from_env() if target else ""
    out = options.out or reports
    written = write_reports(reports, chosen, out, bisect=log)
    url = None
    if target is not None:
        # A failed post says so (PostError, exit 11) and where the written summary is.
        url = github.post_comment(
            target, written.summary, token, api=options.api_url, summary_path=out / "summary.md"
        )
    return ReportResult(written, url)


def log_scenario(log: Path, progress: Progress) -> scenario.Scenario | None:
    """The scenario a bisection log is about (for `report --bisect LOG` without --scenario): found
    as the bisection was given it (by name, or by path for a file of the user's, a plain script
    with its harness options), or None when the log cannot say (collect() says what is wrong)."""
    try:
        request = bisectlog.load_report(log).request
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(request, dict) or not request.get("scenario"):
        return None
    given = str(request.get("scenario_argument") or request["scenario"])
    if request.get("script") is True:
        raises = request.get("bad_if_raises") or []
        if not isinstance(raises, list) or not all(isinstance(r, str) for r in raises):
            return None
        if not Path(given).is_file():
            raise ScenarioError(
                f"The bisection {log.name} ran the script {given}, which is not there any more.",
                "pass --scenario with its new path, or put the script back where it was.",
            )
        chosen = scenario.find_script(given, tuple(raises))
    else:
        chosen = scenario.find(given)
    if chosen.sha256 != request.get("scenario_sha256"):
        progress.say(
            f"note: {chosen.path} changed since the bisection {log.name} ran: its stored results are "
            "those of the old text"
        )
    return chosen


def write_reports(
    reports: Path, chosen: scenario.Scenario, out: Path, *, bisect: Path | None = None
) -> Reports:
    """Write the HTML report, the Markdown summary, the matrix PNG and JSON.

    `bisect`: the bisection log the headline answers (default: the scenario's newest)."""
    data = reportdata.collect(store.ResultStore(reports / "results"), chosen, reports / "bisect", bisect)
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "report.html": htmlreport.render(data),
        "summary.md": mdsummary.render(data, source=source_of(chosen)),
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


def source_of(chosen: scenario.Scenario) -> mdsummary.Source | None:
    """The scenario's text for the summary (None when it cannot be read any more)."""
    try:
        text = chosen.path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return mdsummary.Source(chosen.path.name, text, script=chosen.script)
