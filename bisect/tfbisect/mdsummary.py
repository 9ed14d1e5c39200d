"""The Markdown summary for a GitHub issue comment: short, escaped, and under GitHub's size limit."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from tfbisect.reportdata import OUTCOME_WORDS, ReportData

# GitHub refuses comment bodies over 65,536 characters; stay clear of it.
LIMIT = 60_000
ICON = {"reproduced": "✗", "not reproduced": "✓", "skip": "-", "error": "!", "timeout": "⧗"}


def escape(text: str) -> str:
    """Text safe inside a table cell: no pipes, newlines or raw HTML to break the layout."""
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", " ")
        .replace("\n", " ")
    )


def code(text: str) -> str:
    """An inline code span whatever backticks the text holds."""
    longest = max((len(list(g)) for k, g in itertools.groupby(text) if k == "`"), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text.replace(chr(10), ' ')}{pad}{fence}"


def render(data: ReportData, limit: int = LIMIT) -> str:
    for group, details in ((False, 50), (True, 50), (True, 10), (True, 0)):
        body = _render(data, group_rows=group, max_details=details)
        if len(body) <= limit:
            return body
    return body[: limit - 80] + "\n\n… (cut to fit GitHub's comment limit; see the HTML report)\n"


def _render(data: ReportData, *, group_rows: bool, max_details: int) -> str:
    lines = [f"### tfbisect: {escape(data.headline())}", ""]
    b = data.bisect
    if b is not None and b.first_new:
        what = f"probe {code(b.request['probe'])}" if b.request.get("probe") else "verdict"
        lines.append(
            f"**Last {b.term_old}:** TF {b.last_old} ({code(b.git_versions.get(b.last_old or '') or '?')}) · "
            f"**First {b.term_new}:** TF {b.first_new} ({code(b.git_versions.get(b.first_new or '') or '?')}) · "
            f"[compare]({b.compare_url}) · judged by {what} · {b.runs + b.reused} runs for "
            f"{len(b.versions)} versions"
        )
        if len(b.candidates) > 1:
            lines.append(
                f"First {b.term_new} is one of: {', '.join(b.candidates)} (untestable versions between)."
            )
        lines.append("")
    elif b is not None:
        lines += [f"Bisection: {escape(b.status.value)}: {escape(b.message)}", ""]
    columns = data.columns
    lines.append("| TF | " + " | ".join(escape(c) for c in columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    rows = [(v, [_cell(data, v, c) for c in columns]) for v in data.versions]
    for versions, cells in _group(rows) if group_rows else [([v], c) for v, c in rows]:
        label = versions[0] if len(versions) == 1 else f"{versions[0]} to {versions[-1]}"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "<details><summary>Reproduce, environments, tool</summary>", ""]
    commands = sorted(
        {str(c.record.extra.get("reproduce")) for c in data.cells if c.record.extra.get("reproduce")}
    )
    if commands:
        lines.append("Reproduce any cell:")
        lines.append("")
        lines += [f"- {code(command)}" for command in commands[:max_details]]
        if len(commands) > max_details:
            lines.append(f"- … and {len(commands) - max_details} more (see the HTML report)")
        lines.append("")
    digests = sorted(
        {
            f"{c.record.extra['image']}@{c.record.extra.get('base_digest', '?')}"
            for c in data.cells
            if "image" in c.record.extra
        }
    )
    if digests:
        lines.append("Images: " + ", ".join(code(d) for d in digests[:max_details]))
        lines.append("")
    lines.append(
        f"tfbisect {escape(data.tool_version)} on {escape(data.host)}; scenario {code(data.scenario)} "
        f"sha256 {code(data.scenario_sha256[:12])}; generated {data.generated_at}"
    )
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def _cell(data: ReportData, version: str, column: str) -> str:
    cell = data.cell(version, column)
    if cell is None:
        return ""
    word = OUTCOME_WORDS[cell.outcome]
    probe = data.probe_outcome(cell)
    return f"{ICON[word]} {word}" + (f" ({escape(data.focus_probe or '')}: {probe})" if probe else "")


def _group(rows: Sequence[tuple[str, list[str]]]) -> list[tuple[list[str], list[str]]]:
    """Consecutive versions with identical rows become one range row."""
    grouped: list[tuple[list[str], list[str]]] = []
    for version, cells in rows:
        if grouped and grouped[-1][1] == cells:
            grouped[-1][0].append(version)
        else:
            grouped.append(([version], cells))
    return grouped
