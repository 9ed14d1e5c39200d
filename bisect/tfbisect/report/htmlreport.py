"""The self-contained HTML report (jinja2, autoescaped: scenario text can never become markup)."""

from __future__ import annotations

import jinja2

from tfbisect.core.record import RunRecord
from tfbisect.core.textsafe import printable
from tfbisect.report import findings, narrowdata, style
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
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tfbisect", "templates"),
        autoescape=True,  # every string from scenarios, logs and environments is escaped
        # … and shown without control characters: `cat report.html` must not drive a terminal.
        finalize=lambda value: printable(value) if isinstance(value, str) else value,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["capital"] = findings.capital  # prose that starts lower case, shown as a sentence
    return env


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
        link=narrowdata.safe_link,  # an href from a log only when it points at GitHub
        # The narrowing (the "Where it changed" section)
        narrowing_finding=findings.narrowing_finding,
        narrowing_explain=findings.narrowing_explain,
        narrowed_ends=findings.narrowed_ends,
        kind_words=findings.BUILD_KIND_WORDS,
        narrow_look=findings.narrow_step_look,
        narrow_steps=narrowdata.ordered_steps,
        narrow_notes=narrowdata.notes_of,
        narrow_dependencies=narrowdata.dependencies_of,
        narrow_suspects=narrowdata.suspects_of,
        diff_of=narrowdata.diff_of,
        trace_probes_text=findings.trace_probes_text,
        trace_cost_text=findings.trace_cost_text,
        trace_failed_text=findings.trace_failed_text,
        limits_text=findings.limits_text,
        suspects_heading=findings.suspects_heading,
        suspect_facts=findings.suspect_facts,
        proof_answer=findings.proof_answer,
        trial_text=findings.trial_text,
        patch_heading=findings.patch_heading,
        shrink_text=findings.shrink_text,
        time_spent_text=findings.time_spent_text,
    )
