"""The Markdown summary for a GitHub issue comment: short, escaped, and under GitHub's size limit."""

from __future__ import annotations

import itertools
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tfbisect.core.record import RunRecord
from tfbisect.core.textsafe import clip, printable
from tfbisect.report import findings, narrowdata, style
from tfbisect.report.reportdata import (
    Cell,
    PlainRerun,
    ReportData,
    configurations,
    image_facts,
    plain_rerun,
    run_of,
    summary_of,
)
from tfbisect.search.bisectlog import BisectReport, Status
from tfbisect.search.narrowlog import DependencyChange, Proof, Suspect

# GitHub refuses comment bodies over 65,536 characters; stay clear of it.
LIMIT = 60_000
_CUT_MARK = "\n\n… (cut to fit GitHub's comment limit; see the HTML report)\n"
# How the "Suspect changes" block shrinks to fit LIMIT, before anything else is left out:
# (suspects shown, diff lines of each), the last entry leaving the suspects to the HTML report.
SUSPECT_LEVELS = ((10, 40), (5, 40), (5, 20), (3, 12), (1, 8), (0, 0))
NOTES_SHOWN, NOTE_CHARS = 10, 300
DEPENDENCIES_SHOWN, NAME_CHARS = 30, 100
ICON = style.ICON  # word -> mark, from the one table of looks
SOURCE_CHARS = 20_000  # the most of a scenario's (or script's) text the summary carries
NAMED_BY_PATH = ("--scenario", "--script")
SAID_CHARS = 200  # what an end's run said (its verdict or failure), cut to a line


@dataclass(frozen=True)
class Source:
    """The scenario's (or plain script's) file, so that others can rerun what the summary says."""

    file_name: str
    text: str
    script: bool = False


def shareable(command: str) -> str:
    """A command as others can run it with the scenario's file saved beside them: a scenario or
    script given by path is named by its file name (never a local path)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    out = [
        Path(word).name if i > 0 and words[i - 1] in NAMED_BY_PATH and os.sep in word else word
        for i, word in enumerate(words)
    ]
    return shlex.join(out)


def source_block(source: Source | None) -> list[str]:
    """The scenario's text in a folded block, bounded (the cut said)."""
    if source is None:
        return []
    what = "script" if source.script else "scenario"
    text = clip(source.text, SOURCE_CHARS)
    return [
        f"<details><summary>The {what} {code(source.file_name)} (save it as {code(source.file_name)} "
        "to run the commands)</summary>",
        "",
        *fenced(text.splitlines(), "python"),
        "",
        "</details>",
        "",
    ]


# What GitHub turns into a link or a reference in plain text, each defused by an empty HTML
# comment that splits the text node GitHub's filters read (the text still reads the same):
# `GH-7` (an issue), `owner/repo#7` and `#7` (the `#` rule), `owner/repo@sha`, `@team` and
# e-mail addresses (the `@` rule), `https://…` (the `://` rule), `www.…` and bare domains (every
# dot of a name ending in letters), and commit SHAs (7 to 40 hex digits on their own: broken
# every 4 digits, so that no piece is long enough to be one).
_BREAK = "<!-- -->"
_ISSUE = re.compile(r"(?<![0-9A-Za-z_])(GH-)(?=\d)", re.IGNORECASE)
_DOMAIN = re.compile(r"(?<![0-9A-Za-z_-])(?:[0-9A-Za-z_-]+\.)+[A-Za-z][0-9A-Za-z-]*")
_SHA = re.compile(r"(?<![0-9A-Za-z_])[0-9A-Fa-f]{7,}(?![0-9A-Za-z_])")


def escape(text: str) -> str:
    """Text safe inside a table cell: no pipes, newlines, links or raw HTML to break the layout,
    no control or invisible characters, and nothing GitHub would turn into a mention (@team), an
    issue reference (#123, GH-123, owner/repo#123), a commit link (a SHA, owner/repo@sha) or a
    link (https://…, www.…, a bare domain, an e-mail address) when the summary is posted.  The
    summary's own links are written as Markdown links by their makers, never through here.

    A code span in the text (`backend.py:categorical_crossentropy`) stays one: GitHub links and
    renders nothing inside it, and would show a break or an entity there as typed, so inside it
    only its pipes are escaped (a table cell ends at any unescaped pipe, code or not)."""
    text = printable(text.replace("\r", " ").replace("\n", " "), newlines=False)
    pieces = []
    start = 0
    for span in _CODE_SPAN.finditer(text):
        pieces.append(_escape_prose(text[start : span.start()]))
        pieces.append(span.group().replace("|", "\\|"))
        start = span.end()
    pieces.append(_escape_prose(text[start:]))
    return "".join(pieces)


# A code span as CommonMark reads one: a run of backticks, then the shortest text up to a run of
# the same length (a lone backtick is prose, and escaped as such).
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")


def _escape_prose(text: str) -> str:
    text = (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("[", "\\[")
        .replace("]", "\\]")
        .replace("`", "\\`")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )
    text = _SHA.sub(lambda m: _BREAK.join(re.findall(".{1,4}", m.group())), text)
    text = _DOMAIN.sub(lambda m: m.group().replace(".", "." + _BREAK), text)
    text = _ISSUE.sub(rf"\1{_BREAK}", text)
    return text.replace("@", "@" + _BREAK).replace("#", "#" + _BREAK).replace("://", ":" + _BREAK + "//")


def _longest_run(text: str) -> int:
    return max((len(list(g)) for k, g in itertools.groupby(text) if k == "`"), default=0)


def code(text: str) -> str:
    """An inline code span whatever backticks (or control characters) the text holds."""
    text = printable(text.replace("\r", " ").replace("\n", " "), newlines=False)
    fence = "`" * (_longest_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def fenced(lines: Sequence[str], info: str = "") -> list[str]:
    """A fenced code block that no line inside can close: its fence is longer than any run of
    backticks in the lines (and at least three)."""
    shown = [printable(line.replace("\r", " ").replace("\n", " ")) for line in lines]
    fence = "`" * max(3, 1 + max((_longest_run(line) for line in shown), default=0))
    return [fence + info, *shown, fence]


def render(data: ReportData, limit: int = LIMIT, source: Source | None = None) -> str:
    """The summary; with `source`, the scenario's text at its end (the rest shrinks around it)."""
    block = "\n".join(source_block(source))
    script = source.file_name if source is not None and source.script else None
    return _fitted(data, limit - len(block), script) + block


def _fitted(data: ReportData, limit: int, script: str | None = None) -> str:
    b = data.bisect
    levels = SUSPECT_LEVELS if b is not None and b.narrowing is not None else SUSPECT_LEVELS[-1:]
    shrinking = levels[:-1] or levels
    # The suspects shrink first (the table only groups equal rows meanwhile, losing nothing); then
    # the lists in the details are cut; the suspects' diffs go last of all.
    attempts = [(group, 50, level) for group in (False, True) for level in shrinking]
    attempts += [(True, 10, shrinking[-1]), (True, 0, shrinking[-1]), (True, 0, levels[-1])]
    for group, details, (suspects, excerpt) in dict.fromkeys(attempts):
        body = _render(
            data, group_rows=group, max_details=details, suspects=suspects, excerpt=excerpt, script=script
        )
        if len(body) <= limit:
            return body
    # The mark keeps 80 characters of room below `limit`, as it always has.
    return clip(body, limit - 80 + len(_CUT_MARK), mark=_CUT_MARK)


def _render(
    data: ReportData,
    *,
    group_rows: bool,
    max_details: int,
    suspects: int = 10,
    excerpt: int = 40,
    script: str | None = None,
) -> str:
    lines = [f"### tfbisect {escape(data.scenario)}: {escape(data.headline())}", ""]
    b = data.bisect
    if b is not None:
        lines += _bisection(b)
        lines += _said(data, b)
        lines += _suspect_changes(b, suspects, excerpt)
    tally = data.tally()
    if tally:
        lines += [escape(tally) + ".", ""]
    note = data.choice_note()
    if note:
        lines += [escape(note), ""]
    others = data.other_bisects()
    if others:
        lines.append("Other bisections of this scenario:")
        lines.append("")
        for log, other in others[: max(max_details, 3)]:
            name = f" ({code(log.name)})" if log else ""
            question, found = findings.question(other), findings.finding(other, asked=False)
            lines.append(f"- {escape(question)}: {escape(found)}{name}")
        lines.append("")
    columns = data.columns
    backends = sorted({c.backend for c in data.cells})
    # Each cell says where it ran; a long table that ran all in one place says it once instead.
    in_cells = not group_rows or len(backends) > 1
    if not in_cells:
        lines += [f"Every run in the table ran in: {escape(backends[0])}.", ""]
    lines.append("| TF | " + " | ".join(escape(c) for c in columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    rows = [(v, [_cell(data, v, c, backend=in_cells) for c in columns]) for v in data.versions]
    for versions, cells in _group(rows) if group_rows else [([v], c) for v, c in rows]:
        label = versions[0] if len(versions) == 1 else f"{versions[0]} to {versions[-1]}"
        lines.append(f"| {escape(label)} | " + " | ".join(cells) + " |")
    unreadable = [f"{code(name)}: {escape(why)}" for name, why in data.unreadable]
    lines += [
        "",
        *_listed("Bisection logs that could not be read (left out):", unreadable, max(max_details, 3)),
    ]
    lines += ["<details><summary>Reproduce, environments, tool</summary>", ""]
    commands = sorted(
        {str(c.record.extra.get("reproduce")) for c in data.cells if c.record.extra.get("reproduce")}
    )
    if b is not None and b.command:
        lines += [f"Bisect again: {code(shareable(b.command))}", ""]
    lines += _listed("Reproduce any cell:", [code(shareable(command)) for command in commands], max_details)
    lines += _plain(data, script)
    images = sorted({_image_line(c) for c in data.cells if image_facts(c.record)})
    lines += _listed("Images (each with its own ID; the base image apart, with its ID):", images, max_details)
    configured = [line for c in data.cells if (line := _configurations(c))]
    lines += _listed("Probes with several configurations:", configured, max_details)
    lines.append(
        f"tfbisect {escape(data.tool_version)} on {escape(data.host)}; scenario {code(data.scenario)} "
        f"sha256 {code(data.scenario_sha256[:12])}; generated {data.generated_at}"
    )
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def _said(data: ReportData, b: BisectReport) -> list[str]:
    """What the runs at both ends said (the HTML report's line for each: the verdict, or the
    failure's own message), so that the summary shows what good and bad looked like."""
    if b.status not in (Status.FOUND, Status.AMBIGUOUS, Status.NON_MONOTONIC) or not b.first_new:
        return []
    lines = []
    for term, version in ((b.term_old, b.last_old), (b.term_new, b.first_new)):
        record = run_of(data, b, version) if version else None
        if record is not None:
            said = escape(clip(_said_by(record, findings.probe_of(b)), SAID_CHARS, mark="…"))
            lines.append(f"- TF {escape(record.spec.tf_version)} ({escape(term)}) said: {said}")
    return [*lines, ""] if lines else []


def _said_by(record: RunRecord, probe: str | None) -> str:
    """The run's own line, or for a bisection of one probe that probe's outcome and words: the
    run's overall verdict may name another probe (2.3.4 is good for gradient_eager_plain while
    gradient_graph_plain fails in it), which would read as the good end being bad."""
    found = record.probe(probe) if probe else None
    if found is None:
        return summary_of(record)
    return f"probe {probe}: {found.get('outcome', '?')}, {found.get('summary', '')}".rstrip(", ")


def _plain(data: ReportData, script: str | None) -> list[str]:
    """The first new version's run repeated with pip and a venv alone (plain scripts only: a
    scenario needs tfbisect's arguments), from the lock that run installed."""
    b = data.bisect
    if script is None or b is None or not b.first_new:
        return []
    record = run_of(data, b, b.first_new)
    rerun = plain_rerun(record) if record is not None else None
    if record is None or rerun is None:
        return []
    return [
        f"Without tfbisect, TF {escape(record.spec.tf_version)} ({escape(b.term_new)}) as its run had it: "
        f"{code(plain_command(rerun, script))} (the exact set, hashes and all, is its lock "
        f"{code(rerun.lock)}: `pip install -r` it)",
        "",
    ]


def plain_command(rerun: PlainRerun, script: str) -> str:
    """`python3.8 -m venv v && v/bin/pip install tensorflow-cpu==2.4.0 && v/bin/python repro.py`."""
    setting = "".join(f"{name}={shlex.quote(value)} " for name, value in rerun.env)
    return (
        f"python{rerun.python} -m venv v && v/bin/pip install {shlex.join(rerun.requirements)} && "
        f"{setting}v/bin/python {shlex.quote(script)}"
    )


def _bisection(b: BisectReport) -> list[str]:
    """The chosen bisection's answer: both sides, a first new that is "one of …" when unresolved."""
    asked = findings.question(b)
    what = (
        f"probe {code(findings.probe_of(b) or '')}"
        if findings.probe_of(b) and not b.question
        else escape(asked)
    )
    runs = f"{b.runs + b.reused} runs for {len(b.versions)} versions"
    if b.status in (Status.FOUND, Status.AMBIGUOUS, Status.NON_MONOTONIC) and b.first_new:
        old_git = code(b.git_versions.get(b.last_old or "") or "?")
        if len(b.candidates) > 1:
            first = f"{escape(b.first_new_text)} (untestable versions between)"
        else:
            first = f"TF {escape(b.first_new)} ({code(b.git_versions.get(b.first_new) or '?')})"
        # The project's own link (tensorflow/tensorflow's compare view), checked like every link
        # read back from a log: only a plain https link into GitHub is made clickable.
        own = narrowdata.safe_link(b.compare_url)
        compare = f" · [compare]({own})" if own else ""
        lines = [
            f"**Last {escape(b.term_old)}:** TF {escape(b.last_old or '?')} ({old_git}) · "
            f"**First {escape(b.term_new)}:** {first}{compare} · judged by {what} · {runs}"
        ]
        if b.status is Status.NON_MONOTONIC:
            lines.append(f"Not monotonic: {escape(findings.explain(b))}")
    else:
        lines = [
            f"Bisection ({escape(b.status.value)}, judged by {what}, {runs}): {escape(findings.explain(b))}"
        ]
    found_failure = findings.failure_finding_text(b)
    if found_failure and findings.regress_of(b) == "state":
        failure = str((b.failure_finding or {}).get("failure", ""))
        lines.append(f"**Failure finding:** {escape(found_failure)} ({code(failure)})")
    if b.narrowing is not None:
        below = narrowdata.safe_link(b.narrowing.compare_url)
        link = f" · [compare]({below})" if below else ""
        lines.append(f"**Below the releases:** {escape(findings.narrowing_finding(b))}{link}")
        lines += _proof(b.narrowing.proof)
    if b.time_spent is not None:
        lines.append(f"**Time:** {escape(findings.time_spent_text(b.time_spent))}")
    return [*lines, ""]


# The whole revert the minimal patch was shrunk from, folded in the summary up to this size (the
# HTML report and the log have it whole).
WHOLE_PATCH_CHARS = 12_000


def _proof(proof: Proof | None) -> list[str]:
    """The proven cause (or that nothing flipped), with the minimal patch that restores the old
    behaviour, and the whole revert it was shrunk from (folded)."""
    if proof is None:
        return []
    links = [
        f"[{escape(label)}]({link})"
        for label, link in ((proof.old, proof.old_link), (proof.new, proof.new_link))
        if link
    ]
    at = f" · {' · '.join(links)}" if links else ""
    lines = [f"**Proof:** {escape(findings.proof_answer(proof))}{at}"]
    if not proof.patch:
        return lines
    heading = findings.patch_heading(proof)
    lines += ["", f"{escape(findings.capital(heading))}:", "", *fenced(proof.patch.split("\n"), "diff")]
    shrunk = findings.shrink_text(proof)
    if shrunk:
        lines += ["", f"_{escape(findings.capital(shrunk))}._"]
    whole = proof.shrink.whole_patch if proof.shrink else ""
    if whole and len(whole) <= WHOLE_PATCH_CHARS:
        lines += [
            "",
            "<details><summary>The whole revert it was shrunk from</summary>",
            "",
            *fenced(whole.split("\n"), "diff"),
            "",
            "</details>",
        ]
    elif whole:
        lines += ["", "_The whole revert it was shrunk from is in the HTML report and the log._"]
    return lines


def _suspect_changes(b: BisectReport, most: int, excerpt: int) -> list[str]:
    """The narrowing in a folded block: the narrowed range, the builds tried, the dependency changes
    and the `most` top suspects with `excerpt` lines of their diffs (fewer of both as space runs out)."""
    n = b.narrowing
    if n is None:
        return []
    lines = ["<details><summary>Suspect changes</summary>", ""]
    ends = [
        f"**{label}:** TF {escape(findings.build_text(build))}"
        for label, build in ((f"Last {b.term_old}", n.last_old), (f"First {b.term_new}", n.first_new))
        if build is not None
    ]
    compare = narrowdata.safe_link(n.compare_url)
    if compare:
        ends.append(f"[compare]({compare})")
    if ends:
        lines += [" · ".join(ends), ""]
    lines += [
        f"Releases: last {escape(b.term_old)} TF {escape(n.release_range[0])}, first {escape(b.term_new)} "
        f"TF {escape(n.release_range[1])}. {escape(findings.capital(findings.narrowing_explain(b)))}",
        "",
    ]
    if n.unresolved:
        lines += [f"The change may also be at: {escape(', '.join(n.unresolved[:20]))}.", ""]
    tried = [
        f"{escape(s.version)} {findings.narrow_step_look(b, s).icon} {escape(findings.narrow_step_look(b, s).word)}"
        for s in narrowdata.ordered_steps(n)
    ]
    if tried:
        lines += [f"Builds tried: {', '.join(tried[:40])}" + (" …" if len(tried) > 40 else ""), ""]
    notes = [escape(clip(note, NOTE_CHARS, mark="…")) for note in narrowdata.notes_of(n)]
    lines += _listed("Notes:", notes, NOTES_SHOWN)
    changes = [_dependency(c) for c in narrowdata.dependencies_of(n)]
    lines += _listed(
        "Dependency changes (those the failing probe imported first):",
        changes,
        DEPENDENCIES_SHOWN if most else 10,
    )
    if n.trace is not None:
        lines += [escape(findings.capital(findings.trace_probes_text(n.trace))) + ".", ""]
        if n.trace.error:
            lines += [f"**{escape(findings.capital(findings.trace_failed_text(n.trace)))}**", ""]
    found = narrowdata.suspects_of(n)
    if found is not None:
        shown = found.suspects[:most]
        heading = findings.suspects_heading(found, len(shown))
        more = "; the HTML report has them with their diffs" if len(shown) < len(found.suspects) else ""
        lines += [
            f"{escape(heading[:1].upper() + heading[1:])}{more}:" if shown else escape(heading) + more,
            "",
        ]
        for rank, suspect in enumerate(shown, 1):
            lines += _suspect(rank, suspect, excerpt)
    if n.trace is not None or found is not None:
        lines += [f"_{escape(findings.limits_text(b))}_", ""]
    return [*lines, "</details>", ""]


def _dependency(change: DependencyChange) -> str:
    name = code(clip(change.name, NAME_CHARS, mark="…"))
    old = code(clip(change.old, NAME_CHARS, mark="…")) if change.old else "not installed"
    new = code(clip(change.new, NAME_CHARS, mark="…")) if change.new else "not installed"
    return f"{name} {old} → {new}" + (" (**imported**)" if change.imported else "")


def _suspect(rank: int, suspect: Suspect, excerpt: int) -> list[str]:
    links = [
        f"[{side} lines]({link})"
        for side, link in (("old", suspect.old_link), ("new", suspect.new_link))
        if link is not None
    ]
    head = (
        f"**{rank}.** {code(suspect.file)}:{code(suspect.function)} · "
        f"{escape(findings.suspect_facts(suspect))}"
    )
    lines = [" · ".join([head, *links]), ""]
    diff = [line.text for line in narrowdata.window(narrowdata.diff_of(suspect), excerpt)]
    return [*lines, *fenced(diff, "diff"), ""] if diff else lines


def _listed(title: str, items: list[str], most: int) -> list[str]:
    """A titled bullet list of at most `most` items, saying how many more the HTML report has."""
    if not items:
        return []
    lines = [title, "", *(f"- {item}" for item in items[:most])]
    if len(items) > most:
        lines.append(f"- … and {len(items) - most} more (see the HTML report)")
    return [*lines, ""]


def _cell(data: ReportData, version: str, column: str, *, backend: bool = True) -> str:
    cell = data.cell(version, column)
    if cell is None:
        return ""
    look = data.look(cell)
    secondary = data.secondary(cell)
    text = f"{look.icon} {escape(look.word)}" + (f" ({escape(secondary)})" if secondary else "")
    return text + (f" · {escape(cell.backend)}" if backend else "")


def _image_line(cell: Cell) -> str:
    facts = image_facts(cell.record)
    line = f"{code(facts['image'] or '?')} ID {code(facts['image_id'] or '?')}"
    if facts["image_repo_digest"]:
        line += f" (repo digest {code(facts['image_repo_digest'])})"
    return line + f"; base {code(facts['base_image'] or '?')} ID {code(facts['base_image_id'] or '?')}"


def _configurations(cell: Cell) -> str:
    parts = []
    for probe in ((cell.record.document or {}).get("probes") or [])[:64]:
        if not isinstance(probe, dict):
            continue
        configs = configurations(probe)
        if configs:
            listed = ", ".join(f"{escape(name)} {escape(outcome)}" for name, outcome, _, _ in configs)
            parts.append(f"{code(str(probe.get('name', '?')))}: {listed}")
    if not parts:
        return ""
    return f"TF {escape(cell.version)} {escape(cell.column)} · {escape(cell.backend)}: " + "; ".join(parts)


def _group(rows: Sequence[tuple[str, list[str]]]) -> list[tuple[list[str], list[str]]]:
    """Consecutive versions with identical rows become one range row."""
    grouped: list[tuple[list[str], list[str]]] = []
    for version, cells in rows:
        if grouped and grouped[-1][1] == cells:
            grouped[-1][0].append(version)
        else:
            grouped.append(([version], cells))
    return grouped
