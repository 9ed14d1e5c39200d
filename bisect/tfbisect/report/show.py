"""Human-readable views for the terminal: stored results, the catalogue, bisections and their
narrowings below the releases.  The command line prints them through `printable`; every field of
free text (a scenario's summaries, messages and names, a log's fields) is also kept to one escaped
line here (`textsafe.one_line`), so that no text from a scenario or a log can forge a line."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

from tfbisect.core.catalogue import Release
from tfbisect.core.cudasets import cuda_plan
from tfbisect.core.outcome import Outcome
from tfbisect.core.record import RunRecord
from tfbisect.core.textsafe import one_line
from tfbisect.core.versions import python_sort_key
from tfbisect.envs.locks import LockSpec, lock_path, preferred_python
from tfbisect.report import findings, narrowdata, style
from tfbisect.search.bisectlog import BisectReport, Status, Step, StepOutcome
from tfbisect.search.narrowlog import NarrowStatus, Proof, TrialKind, Verdict
from tfbisect.search.sweep import Cell

MARK = style.MARK  # outcome -> "✗ reproduced" ...


def record_text(record: RunRecord, path: Path | None = None) -> str:
    o = _one_line
    lines = [f"{o(record.scenario)} on {o(record.spec.label)}: {MARK[record.outcome]}"]
    if path is not None:
        lines.append(f"  stored at      {o(path, LINE_LONG)}")
    env = (record.document or {}).get("environment", {})
    if env.get("tensorflow"):
        keras = env.get("keras") or {}
        lines.append(
            f"  environment    TF {o(env['tensorflow'])} ({o(env.get('git_version'))}), Python {o(env.get('python'))}, "
            f"numpy {o(env.get('numpy'))}, Keras {o(keras.get('version'))} ({o(keras.get('flavour'))})"
        )
        devices = ", ".join(o(d["type"]) for d in env.get("devices", [])) or "none"
        lines.append(
            f"  devices        {devices}; CUDA {o(env.get('cuda') or '-')}, cuDNN {o(env.get('cudnn') or '-')}"
        )
    dependencies = ((record.document or {}).get("script") or {}).get("dependencies")
    if isinstance(dependencies, dict) and dependencies:  # a script's PEP 723 packages, as installed
        shown = ", ".join(f"{name} {version or 'not installed'}" for name, version in dependencies.items())
        lines.append(f"  dependencies   {o(shown, LINE_LONG)}")
    if record.ran_on is not None:
        lines.append(f"  ran on         {o(record.ran_on)}")
    libraries = findings.cuda_libraries(record)
    if libraries is not None:
        lines.append(f"  CUDA libraries {o(libraries, LINE_LONG)}")
    lines.append(f"  verdict        {o(record.verdict_summary, LINE_LONG)}")
    for probe in (record.document or {}).get("probes", []):
        lines.append(f"    {o(probe['name']):<26} {o(probe['outcome']):<9} {o(probe['summary'], LINE_LONG)}")
        # A probe that runs several configurations: each one's own outcome, one line each.
        for name, config in (probe.get("configurations") or {}).items():
            lines.append(f"      {o(name):<24} {o(config['outcome']):<9} {o(config['summary'], LINE_LONG)}")
    if record.outcome in (Outcome.ERROR, Outcome.TIMEOUT) or record.document is None:
        lines.append("  log tail:")  # many lines, each behind its "|": none can pass for tfbisect's
        lines.extend("    | " + one_line(line, LINE_LONG) for line in record.log_tail.splitlines()[-15:])
    lines.append(f"  run took       {record.duration_s:.1f}s, started {o(record.started_at)}")
    if record.extra.get("via"):
        # a run in an environment made elsewhere (tox, or --interpreter): which one
        interpreter = o(record.extra.get("interpreter", "?"), LINE_LONG)
        if record.extra["via"] == "tox":
            where = f" env {o(record.extra['tox_env'])}" if record.extra.get("tox_env") else ""
            lines.append(f"  made through   tox{where}, interpreter {interpreter}")
        else:
            lines.append(f"  made in        the given environment of {interpreter} (--interpreter)")
    if record.extra.get("reproduce"):
        lines.append(f"  reproduce      {o(record.extra['reproduce'], LINE_LONG)}")
    if record.command:
        lines.append(f"  raw command    {o(record.command, LINE_LONG)}")
    if record.extra.get("todo"):
        lines.append(f"  what to do     {o(record.extra['todo'], LINE_LONG)}")
    return "\n".join(lines)


def gpu_check_line(record: RunRecord) -> str:
    """One line of `tfbisect gpu-check`: image, libraries TF's loader opened, GPU seen, verdict."""
    label = f"TF {record.spec.tf_version} py{record.spec.python}"
    if record.infrastructure or "image" not in record.extra:
        reason = (record.failure.message.splitlines() or [""])[0] if record.failure else record.outcome.value
        return f"{label}  no image: {_one_line(reason)}"
    libraries = findings.cuda_libraries(record) or "no loader check in the image"
    if findings.loader_check_passed(record):
        libraries = libraries.split(": ", 1)[0]  # "8 opened by TF's loader"
    return (
        f"{label}  {_one_line(record.extra['image'])}  {_one_line(libraries)}  ran on {_one_line(record.ran_on)}  "
        f"{MARK[record.outcome]}"
    )


def versions_table(releases: Iterable[Release], have: set[str]) -> str:
    rows = [("version", "released", "wheels for CPython", "here", "locked", "CUDA image (Docker)")]
    for release in releases:
        pythons = release.cpython3
        here = [p for p in pythons if p in have]
        locked = "-"
        if pythons:
            preferred = preferred_python(release, have)
            locked = f"py{preferred}" if lock_path(LockSpec(release.version, preferred)).is_file() else "-"
        rows.append(
            (
                release.version + (" (pre)" if release.prerelease else ""),
                release.date,
                " ".join(sorted(pythons, key=python_sort_key)),
                " ".join(sorted(here, key=python_sort_key)) or "none: use --backend docker",
                locked,
                cuda_plan(release.version).describe(),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def bisect_text(report: BisectReport, log_path: Path | None = None) -> str:
    report = _flat(report)
    request = report.request
    backend = str(request["backend"])
    if request.get("venv_fallback") is True:
        backend += " (venv where no base image fits)"
    variant = f"{request['flavour']}, keras {request['keras']}, {backend}"
    first, last = (report.versions[0], report.versions[-1]) if report.versions else ("?", "?")
    lines = [
        f"searched {len(report.versions)} TF versions ({first} .. {last}) on {findings.question(report)}; {variant}",
    ]
    answered = report.status in (Status.FOUND, Status.AMBIGUOUS, Status.NON_MONOTONIC)
    resolved = len(report.candidates) <= 1
    if answered and findings.regress_of(report) == "state":
        kind = "a fix" if report.term_old == "bad" else "a change"
        where = f"TF {report.first_new}" if resolved else report.first_new_text
        lines.append(f"{kind} in {where}: {report.status.value} ({report.term_old} -> {report.term_new})")
    else:
        lines.append(f"{report.status.value}: {findings.finding(report)}")
    if answered:
        old_label, new_label = f"last {report.term_old}:", f"first {report.term_new}:"
        width = max(12, len(old_label) + 1, len(new_label) + 1)
        git_old = report.git_versions.get(report.last_old or "") or "?"
        lines.append(
            f"  {old_label:<{width}}{report.last_old} ({git_old}), {_state_shown(report, report.last_old, report.old_state)}"
        )
        if resolved:
            git_new = report.git_versions.get(report.first_new or "") or "?"
            lines.append(
                f"  {new_label:<{width}}{report.first_new} ({git_new}), {_state_shown(report, report.first_new, report.new_state)}"
            )
        else:
            lines.append(
                f"  {new_label:<{width}}{report.first_new_text} (untestable versions between), "
                f"{_state_shown(report, None, report.new_state)}"
            )
        lines.append(f"  {'compare:':<{width}}{report.compare_url}")
    found_failure = findings.failure_finding_line(report)
    if found_failure:
        lines.append(f"  {found_failure}")
    lines.append(findings.explain(report))
    if report.narrowing is not None:
        # The narrowing's answer in short; `narrowing_text` (and `bisect log`) has all of it.
        lines.append(f"below the releases: {_one_line(findings.narrowing_finding(report))}")
        if report.narrowing.proof is not None:
            lines.append(f"  proof:      {_one_line(findings.proof_answer(report.narrowing.proof), 1000)}")
        compare = narrowdata.safe_link(report.narrowing.compare_url)
        if compare and report.narrowing.status is NarrowStatus.NARROWED:
            lines.append(f"  compare:    {compare}")
    lines.append(
        f"runs: {report.runs} new, {report.reused} reused, in {report.rounds} "
        f"round{'' if report.rounds == 1 else 's'}; "
        f"a sweep of the range needs {len(report.versions)}"
    )
    if log_path is not None:
        lines.append(f"full sequence: tfbisect bisect log {log_path}")
    return "\n".join(lines)


def bisect_log_text(report: BisectReport) -> str:
    report = _flat(report)
    lines = [
        f"# {report.command}",
        f"# started {report.started_at}, finished {report.finished_at or '-'}",
        f"# question: {findings.question(report)}",
    ]
    for step in report.steps:
        reused = " (stored)" if step.reused else ""
        term = findings.judged_state(report, step.state).word
        lines.append(
            f"round {step.round:>2}  {step.version:<10} {term:<8} {step.outcome:<15} "
            f"{_step_state(step)}{reused}  [{step.seconds:.0f}s]"
        )
    lines.append(f"# {report.status.value}: {findings.finding(report)}")
    found_failure = findings.failure_finding_line(report)
    if found_failure:
        lines.append(f"# {found_failure}")
    lines.append(f"# {findings.explain(report)}")
    n = report.narrowing
    if n is not None:
        lines.append(
            f"# narrowing between {_one_line(n.release_range[0])} and {_one_line(n.release_range[1])}"
        )
        for step in narrowdata.ordered_steps(n):
            reused = " (stored)" if step.reused else ""
            term = findings.narrow_step_look(report, step).word
            lines.append(
                f"narrow    {_one_line(step.version, 24):<10} {term:<8} {step.outcome:<15} "
                f"{_one_line(_step_state(step))}{reused}  [{step.seconds:.0f}s]"
            )
        lines.append(narrowing_text(report, steps=False))
    return "\n".join(lines)


def _step_state(step: Step) -> str:
    """A step's state as people read it: a failure with its real message, never the masked
    signature that only serves to compare failures."""
    if step.state and step.state.startswith("error"):
        return f"failure: {step.summary}"
    if step.state is None and step.summary and step.outcome in (StepOutcome.UNAVAILABLE, StepOutcome.SKIP):
        return f"cannot be tested: {step.summary}"  # why: no wheel for the Python here, exit 125 …
    return step.state or "-"


def _state_shown(report: BisectReport, version: str | None, state: str | None) -> str:
    if not state or not state.startswith("error"):
        return state or "-"
    for step in report.steps:
        if step.version == version and step.state == state:
            return f"failure: {step.summary}"
    same = next((s for s in report.steps if s.state == state), None)
    return f"failure: {same.summary}" if same else "failure"


def sweep_text(cells: Sequence[Cell], probe: str | None = None) -> str:
    columns = sorted({(c.flavour.value, c.keras.value) for c in cells})
    versions = list(dict.fromkeys(c.version for c in cells))
    by_key = {(c.version, c.flavour.value, c.keras.value): c for c in cells}
    header = ["TF"] + [f"{f}/{k}" for f, k in columns]
    rows = [header]
    for version in versions:
        row = [version]
        for flavour, keras in columns:
            cell = by_key.get((version, flavour, keras))
            row.append(_sweep_cell(cell, probe))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _sweep_cell(cell: Cell | None, probe: str | None) -> str:
    if cell is None or cell.record is None:
        return "n/a"
    record = cell.record
    text = MARK[record.outcome]
    if probe and record.outcome in (Outcome.REPRODUCED, Outcome.NOT_REPRODUCED):
        found = record.probe(probe)
        text += f" ({probe}: {found['outcome'] if found else 'absent'})"
    return text


# ---- The narrowing ---------------------------------------------------------------------------

SUSPECTS_SHOWN = 5  # the terminal shows the first few; the HTML report shows every kept one
EXCERPT_SHOWN = 8  # lines of each suspect's diff, its header included
LINE_SHOWN = 160  # characters of any line taken from the data


LINE_LONG = 2000  # a message, a command: longer, but still one line


def _one_line(value: object, limit: int = LINE_SHOWN) -> str:
    """Text from the log (index, wheels, scenario output) on one line of the terminal: no control
    characters (a newline could forge a line of this output), no line a screen cannot hold."""
    return one_line(value, limit)


def _flat(report: BisectReport) -> BisectReport:
    """A copy of `report` to show, each string of the bisection's own fields on one escaped line
    (the narrowing's are kept to one line where they are shown): the words findings.py builds
    from them may then hold line breaks of their own, and only those."""

    def flat(value: object, limit: int = LINE_SHOWN) -> object:
        if isinstance(value, str):
            return one_line(value, limit)
        if isinstance(value, list | tuple):
            return type(value)(flat(item, limit) for item in value)
        if isinstance(value, dict):
            return {flat(key): flat(item, limit) for key, item in value.items()}
        return value

    def text(value: str | None, limit: int = LINE_SHOWN) -> str | None:
        return None if value is None else one_line(value, limit)

    steps = [
        dataclasses.replace(
            s,
            version=one_line(s.version),
            state=text(s.state, LINE_LONG),
            summary=one_line(s.summary, LINE_LONG),
        )
        for s in report.steps
    ]
    return dataclasses.replace(
        report,
        request=flat(report.request),  # type: ignore[arg-type]
        command=one_line(report.command, LINE_LONG),
        versions=[one_line(v) for v in report.versions],
        steps=steps,
        message=one_line(report.message, LINE_LONG),
        old_state=text(report.old_state, LINE_LONG),
        new_state=text(report.new_state, LINE_LONG),
        term_old=one_line(report.term_old),
        term_new=one_line(report.term_new),
        last_old=text(report.last_old),
        first_new=text(report.first_new),
        candidates=[one_line(c) for c in report.candidates],
        changes=[(one_line(a), one_line(b)) for a, b in report.changes],
        git_versions={one_line(k): text(v) for k, v in report.git_versions.items()},
        compare_url=text(report.compare_url, LINE_LONG),
        started_at=one_line(report.started_at),
        finished_at=one_line(report.finished_at),
        question=one_line(report.question, LINE_LONG),
        end_failures={one_line(k): one_line(v, LINE_LONG) for k, v in report.end_failures.items()},
        failure_finding=flat(report.failure_finding, LINE_LONG),  # type: ignore[arg-type]
        ends=[one_line(e) for e in report.ends],
    )


PATCH_LINES_SHOWN = 60  # the proven patch in the terminal; the log and the reports have all of it


def _proof_lines(proof: Proof | None) -> list[str]:
    """The proof first: its answer, the minimal patch that restores the old behaviour (and how it
    was shrunk from the whole revert), what did not flip."""
    if proof is None:
        return []
    lines = [f"proof: {_one_line(findings.proof_answer(proof), 1000)}"]
    for label, link in ((proof.old, proof.old_link), (proof.new, proof.new_link)):
        if link:
            lines.append(f"  at {_one_line(label, 40)}: {link}")
    if proof.patch:
        lines.append(f"  {_one_line(findings.patch_heading(proof), 400)}:")
        patch = proof.patch.split("\n")  # a tab (before a ref in its header) as the terminal shows it
        lines.extend(f"    {_one_line(line.expandtabs(), 300)}" for line in patch[:PATCH_LINES_SHOWN])
        if len(patch) > PATCH_LINES_SHOWN:
            lines.append(
                f"    … {len(patch) - PATCH_LINES_SHOWN} more lines (see the log or the HTML report)"
            )
    shrunk = findings.shrink_text(proof)
    if shrunk:
        lines.append(f"  {_one_line(shrunk, 600)}")
    # The shrink's tries are counted in its line above; the units and packages tried are listed.
    tried = [t for t in proof.trials if t.verdict is not Verdict.FLIPPED and t.kind is not TrialKind.SHRINK]
    if tried:
        lines.append("  tried, did not flip:" if proof.proven else "  tried:")
        lines.extend(f"    - {_one_line(findings.trial_text(t), 400)}" for t in tried[:30])
    return lines


def narrowing_text(report: BisectReport, log_path: Path | None = None, *, steps: bool = True) -> str:
    """The narrowing below the releases, for the terminal: the narrowed range, the builds tried,
    the notes, the dependency changes, the traced runs and the top suspects, then what tracing
    cannot see.  `log_path` names the log in what-to-do advice; `steps=False` leaves the builds
    tried out (`bisect log` lists them as log rows)."""
    n = report.narrowing
    if n is None:
        return "no narrowing below the releases in this log"
    t_old, t_new = report.term_old, report.term_new
    old, new = n.release_range
    width = max(12, len(t_old) + 7, len(t_new) + 8)
    lines = [
        f"below the releases (last {t_old} {_one_line(old)}, first {t_new} {_one_line(new)}): {n.status.value}",
        _one_line(findings.narrowing_finding(report), 1000),
        *_proof_lines(n.proof),
    ]
    for label, build in ((f"last {t_old}:", n.last_old), (f"first {t_new}:", n.first_new)):
        if build is not None:
            lines.append(f"  {label:<{width}}{_one_line(findings.build_text(build), 400)}")
    if n.unresolved:
        listed = ", ".join(_one_line(c, 60) for c in n.unresolved[:20])
        lines.append(f"  {'unresolved:':<{width}}the change may also be at {listed}")
    compare = narrowdata.safe_link(n.compare_url)
    if compare:
        lines.append(f"  {'compare:':<{width}}{compare}")
    lines.append("  " + findings.narrowing_explain(report, log_path))
    if steps and n.steps:
        between = sum(1 for step in n.steps if step.version in n.candidates)
        lines.append(
            f"builds tried: {between} of the {len(n.candidates)} between the releases on the index "
            f"({n.runs} new runs, {len(n.steps) - n.runs} stored):"
        )
        for step in narrowdata.ordered_steps(n):
            look = findings.narrow_step_look(report, step)
            when = "stored" if step.reused else f"{step.seconds:.0f}s"
            lines.append(
                f"  {_one_line(step.version, 40):<20} {look.icon} {look.word:<8} {_one_line(_step_state(step))}  [{when}]"
            )
    notes = narrowdata.notes_of(n)
    if notes:
        lines.append("notes:")
        lines.extend(f"  - {_one_line(note, 400)}" for note in notes)
    changes = narrowdata.dependencies_of(n)
    if changes:
        lines.append(f"dependency changes ({len(changes)}; those the failing probe imported first):")
        lines.extend(
            f"  {'*' if c.imported else ' '} {_one_line(findings.dependency_text(c))}" for c in changes[:40]
        )
        if len(changes) > 40:
            lines.append(f"    … and {len(changes) - 40} more (see the log or the HTML report)")
    if n.trace is not None:
        lines.append(_one_line(findings.trace_probes_text(n.trace), 600))
        lines.append("  " + _one_line(findings.trace_cost_text(n.trace), 600))
        if n.trace.error:
            lines.append(_one_line(findings.trace_failed_text(n.trace, log_path), 2000))
    found = narrowdata.suspects_of(n)
    if found is not None:
        shown = found.suspects[:SUSPECTS_SHOWN]
        lines.append(findings.suspects_heading(found, len(shown)) + (":" if shown else ""))
        for rank, suspect in enumerate(shown, 1):
            lines.append(f"  {rank}. {_one_line(suspect.where, 200)}")
            lines.append(f"     {_one_line(findings.suspect_facts(suspect), 600)}")
            lines.extend(
                f"     | {_one_line(line.text)}"
                for line in narrowdata.window(narrowdata.diff_of(suspect), EXCERPT_SHOWN)
            )
            for side, link in (("old", suspect.old_link), ("new", suspect.new_link)):
                if link:
                    lines.append(f"     {side}: {link}")
    if n.trace is not None or found is not None:
        lines.append(findings.limits_text(report))
    return "\n".join(lines)
