"""The self-contained HTML report (jinja2, autoescaped: scenario text can never become markup)."""

from __future__ import annotations

import jinja2

from tfbisect.core.record import RunRecord
from tfbisect.core.textsafe import printable
from tfbisect.report import findings, style
from tfbisect.report.charts import Chart, chart
from tfbisect.report.reportdata import (
    OUTCOME_WORDS,
    ReportData,
    configurations,
    curves_of,
    environment_rows,
    summary_of,
)


def charts_of(record: RunRecord) -> list[Chart]:
    found = []
    for probe, curves in curves_of(record):
        drawn = chart(probe.replace("_", " "), curves)
        if drawn is not None:
            found.append(drawn)
    return found


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("tfbisect", "templates"),
        autoescape=True,  # every string from scenarios, logs and environments is escaped
        # … and shown without control characters: `cat report.html` must not drive a terminal.
        finalize=lambda value: printable(value) if isinstance(value, str) else value,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(data: ReportData) -> str:
    template = environment().get_template("report.html.j2")
    return template.render(
        data=data,
        words=OUTCOME_WORDS,
        looks=style.CSS,
        env_rows=environment_rows,
        summary_of=summary_of,
        charts_of=charts_of,
        configurations=configurations,
        question=findings.question,
        finding=findings.finding,
        explain=findings.explain,
        failure_finding_text=findings.failure_finding_text,
        step_look=findings.judged_state,
        regress_of=findings.regress_of,
    )
