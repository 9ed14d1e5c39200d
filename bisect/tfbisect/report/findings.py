"""What a bisection (and its narrowing below the releases) found, in the words every view uses
(terminal, HTML, Markdown, PNG, JSON).

Rules that hold in each of them: the finding comes first; a first new version that is not
resolved is "one of A, B, C", never one version; a run that failed is a failure, never good,
bad or reproduced; and a run is judged by the question the bisection asked (a probe, the
verdict, or where a failure begins), with the bisection's own names for its two sides.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfbisect.core.catalogue import ReleaseKind
from tfbisect.core.record import RunRecord
from tfbisect.core.timing import Phase
from tfbisect.report.style import KIND_LOOK, Kind, Look
from tfbisect.search.bisectlog import BisectReport, Status
from tfbisect.search.judge import BAD_STATES, state_of
from tfbisect.search.narrowlog import (
    Build,
    DependencyChange,
    Narrowing,
    NarrowNote,
    NarrowStatus,
    NoteCode,
    Proof,
    Suspect,
    Suspects,
    TraceSummary,
    Trial,
    TrialKind,
    Verdict,
)
from tfbisect.search.state import Class
from tfbisect.search.steps import Step


def capital(text: str) -> str:
    """The text as a sentence starts: its first letter upper case (the words here start lower case
    so that they can stand after a colon as well)."""
    return text[:1].upper() + text[1:]


def probe_of(report: BisectReport) -> str | None:
    probe = report.request.get("probe")
    return str(probe) if probe else None


def question(report: BisectReport) -> str:
    """What was asked: "probe gradient_eager_plain", "the scenario's verdict" ..."""
    if report.question:
        return report.question
    probe = probe_of(report)
    return f"probe {probe}" if probe else "the scenario's verdict"


def regress_of(report: BisectReport) -> str:
    if report.regress != "state":
        return report.regress
    return str(report.request.get("regress") or "state")


def one_of(candidates: list[str], single: object) -> str:
    """A version as it may be shown: "one of A, B" when the candidates are several."""
    if len(candidates) > 1:
        return "one of " + ", ".join(candidates)
    if single:
        return str(single)
    return candidates[0] if candidates else "?"


def _is_error(state: str | None) -> bool:
    return bool(state) and str(state).startswith("error")


def _terms(report: BisectReport) -> dict[str, str]:
    """State name -> the bisection's term, when its two ends gave two real answers."""
    old, new = report.old_state, report.new_state
    if not old or not new or old == new or _is_error(old) or _is_error(new):
        return {}
    return {old: report.term_old, new: report.term_new}


def judged_state(report: BisectReport, state: str | None) -> Look:
    """How a state (a step's, or a run's under this question) is shown for this bisection."""
    if state is None:
        return KIND_LOOK[Kind.SKIP]
    if regress_of(report) == "error":
        # The question is failing or not: the sides carry the bisection's names once it has them.
        answered = report.status in (Status.FOUND, Status.AMBIGUOUS, Status.NON_MONOTONIC)
        failing_old = _is_error(report.old_state)
        if _is_error(state):
            word = (report.term_old if failing_old else report.term_new) if answered else "failure"
            return KIND_LOOK[Kind.FAILURE].named(word)
        word = (report.term_new if failing_old else report.term_old) if answered else "working"
        return KIND_LOOK[Kind.GOOD].named(word)
    if _is_error(state):
        return KIND_LOOK[Kind.FAILURE]
    kind = Kind.BAD if state in BAD_STATES else Kind.GOOD
    return KIND_LOOK[kind].named(_terms(report).get(state, state.replace("_", " ")))


def judge(report: BisectReport, record: RunRecord) -> Look:
    """A run as the bisection's question sees it."""
    state = state_of(record, probe_of(report))
    return judged_state(report, state.name if state else None)


def failure_finding_text(report: BisectReport) -> str | None:
    """Where a failure itself began (or went away): a finding of its own, apart from the question."""
    found: dict[str, Any] | None = report.failure_finding
    if not found:
        return None
    candidates = [str(c) for c in found.get("candidates") or []]
    if found.get("direction") == "stops":
        return (
            f"last run with the failure {found.get('last_with') or '?'}, "
            f"first without it {one_of(candidates, found.get('first_without'))}"
        )
    return (
        f"last run without the failure {found.get('last_without') or '?'}, "
        f"first with it {one_of(candidates, found.get('first_with'))}"
    )


def end_failure_lines(report: BisectReport) -> list[str]:
    """Ends that fail: there the question cannot be judged (not the failure's own question)."""
    if regress_of(report) == "error":
        return []
    found = report.failure_finding or {}
    candidates = [str(c) for c in found.get("candidates") or []]
    lines = []
    for version, failure in report.end_failures.items():
        if found.get("failure") == failure and found.get("direction") == "stops":
            where = f"up to {found.get('last_with') or version}"
        elif found.get("failure") == failure:
            where = f"from {one_of(candidates, found.get('first_with') or version)} on"
        elif version in report.versions and report.versions.index(version) < len(report.versions) / 2:
            where = f"up to {version}"
        else:
            where = f"from {version} on"
        lines.append(f"{where} the scenario fails: {failure}; the question cannot be judged there")
    return lines


def finding(report: BisectReport, *, asked: bool = True) -> str:
    """The answer, first: what changed where, then (unless `asked` is False) for which question."""
    question_text = question(report)
    failure = str((report.failure_finding or {}).get("failure") or "")
    found_failure = failure_finding_text(report)
    answered = report.status in (Status.FOUND, Status.AMBIGUOUS, Status.NON_MONOTONIC)
    if regress_of(report) == "error" and answered and found_failure:
        text = f"{found_failure}: {failure}"
        if report.status is Status.NON_MONOTONIC:
            text += " (not monotonic: " + _changes(report) + ")"
        return text
    if report.status in (Status.FOUND, Status.AMBIGUOUS):
        text = f"changed between {report.last_old} and {report.first_new_text}"
        return text + (f": {question_text}" if asked else "") + f" ({report.term_old} → {report.term_new})"
    if report.status is Status.NON_MONOTONIC:
        return f"changed more than once ({_changes(report)})" + (f": {question_text}" if asked else "")
    if report.status is Status.END_FAILS:
        lines = end_failure_lines(report)
        text = (
            "; ".join(lines) if lines else "the scenario fails at an end; the question cannot be judged there"
        )
        return text + (f" ({question_text})" if asked else "")
    if report.status is Status.NO_CHANGE:
        same = report.old_state if report.old_state and not _is_error(report.old_state) else None
        text = "no change found" + (f": {question_text}" if asked else "")
        return text + (f" gives {same.replace('_', ' ')} at both ends" if same else "")
    if report.status is Status.UNDECIDABLE:
        return "no answer: an end of the range could not be tested" + (f" ({question_text})" if asked else "")
    return "interrupted before an answer" + (f" ({question_text})" if asked else "")


def _changes(report: BisectReport) -> str:
    pairs = report.changes or ([(report.last_old, report.first_new_text)] if report.last_old else [])
    return ", ".join(f"between {a} and {b}" for a, b in pairs) or "see the log"


def explain(report: BisectReport) -> str:
    """The log's message: what the answer means and what to do next, from the log's fields alone
    (the driver writes no prose)."""
    status, ends = report.status, report.ends or ["?", "?"]
    if status is Status.INTERRUPTED:
        return "every finished run is stored; resume with the same command:\n  " + report.command
    if status is Status.UNDECIDABLE:
        return (
            "an end of the range could not be tested (skips at both sides of it too); "
            "`tfbisect bisect log` says why for each version. Give testable ends with --good/--bad."
        )
    if status is Status.END_FAILS:
        return _end_failure_words(report)
    if status is Status.NO_CHANGE:
        if regress_of(report) == "error":
            both = "fails at both ends" if len(report.end_failures) == 2 else "fails at neither end"
            return (
                f"the scenario {both} (TF {ends[0]} and {ends[-1]}): there is no start of a failure to find "
                "between them. Pick other ends, or run `tfbisect sweep`."
            )
        return (
            f"both ends are {report.old_state} (TF {ends[0]} and {ends[-1]}), and so is every stored result "
            "between them: nothing changed as far as this scenario can tell. Pick other ends, narrow the "
            "question with --probe, or run `tfbisect sweep` to see every version."
        )
    text = _answer_words(report)
    if regress_of(report) == "error":
        found = _failure_sentence(report)
        return found + (f". {text}" if status is not Status.FOUND else "")
    return text


def _answer_words(report: BisectReport) -> str:
    changes = "; ".join(f"{a} -> {b}" for a, b in report.changes)
    if report.status is Status.NON_MONOTONIC and report.old_state == report.new_state:
        return (
            f"both ends are {report.old_state}, but the results inside the range are not: "
            f"{len(report.changes)} change points ({changes}). Run `tfbisect sweep` over the range to see every version."
        )
    if report.status is Status.NON_MONOTONIC:
        return (
            f"the results are not monotonic: {len(report.changes)} change points among the runs ({changes}). "
            "The first is reported; run `tfbisect sweep` over the range to see them all."
        )
    if report.status is Status.AMBIGUOUS:
        return (
            f"first {report.term_new} is one of {', '.join(report.candidates)}: the versions between "
            f"{report.last_old} and {report.first_new} could not be tested (see the log)."
        )
    return f"last {report.term_old}: {report.last_old}, first {report.term_new}: {report.first_new}"


def _failure_sentence(report: BisectReport) -> str:
    found = report.failure_finding or {}
    candidates = list(found.get("candidates") or [])
    if found.get("direction") == "stops":
        last, first = found.get("last_with"), found.get("first_without")
        words = "last run with the failure: TF {}, first without it: TF {}"
    else:
        last, first = found.get("last_without"), found.get("first_with")
        words = "last run without the failure: TF {}, first with it: TF {}"
    return words.format(last, one_of(candidates, first)) + f" ({found.get('failure', '')})"


def _end_failure_words(report: BisectReport) -> str:
    failing = list(report.end_failures.items())
    if len(failing) >= 2:
        (v1, t1), (v2, t2) = failing[:2]
        return (
            f"the scenario fails at both ends (TF {v1}: {t1}; TF {v2}: {t2}): the question cannot be judged "
            "there. Pick ends where it runs (--good/--bad), bisect the failure itself with --regress error, "
            "or run `tfbisect sweep`."
        )
    version, text = failing[0] if failing else ("?", "?")
    which = "newer" if _is_error(report.new_state) else "older"
    said = f"the {which} end, TF {version}, fails: {text}; the question cannot be judged there. "
    raised = raised_by_script(report, version)
    if raised:
        # A plain script gives no verdict by raising (but AssertionError): the exception may well
        # be the bug, and --bad-if-raises makes it one, as each such run's own line says.
        return said + (
            f"The script raised {raised}, which is no verdict of its own: if that is the bug, bisect "
            f"again with --bad-if-raises {raised} to count it as bad; else bisect the question where "
            "the script runs by choosing that range with --good/--bad."
        )
    return said + (
        "Where the failure itself begins is reported apart; bisect the question where the scenario "
        "runs by choosing that range with --good/--bad."
    )


def raised_by_script(report: BisectReport, version: str) -> str | None:
    """The exception a plain script (`--script`) raised at `version`, as the harness told it apart
    from its verdicts ("error: ValueError: …; not the bug"), or None: not a script, or a failure of
    another kind there (a timeout, a crash, an exit status that is no verdict)."""
    if report.request.get("script") is not True:
        return None
    failure = str(report.end_failures.get(version) or "")
    name = failure.split(":", 1)[0]
    if not name.isidentifier():
        return None
    for step in report.steps:
        if step.version == version and _is_error(step.state) and step.summary.startswith(f"error: {name}:"):
            return name
    return None


def failure_finding_line(report: BisectReport) -> str | None:
    """ "failure finding: last run without the failure W, first with it X (Type: message)", when a
    bisection of another question found where a failure began (with --regress error it is the answer)."""
    found = failure_finding_text(report)
    if not found or regress_of(report) != "state":
        return None
    return f"failure finding: {found} ({(report.failure_finding or {}).get('failure', '')})"


def loader_check_passed(record: RunRecord) -> bool:
    """The cell's CUDA image carries TF's loader check, and it found no problem."""
    check = record.extra.get("cuda_check")
    return isinstance(check, dict) and not check.get("problems")


def cuda_libraries(record: RunRecord) -> str | None:
    """What TF's own loader check found when the cell's CUDA image was built, in one line:
    "8 opened: libcudart.so.11.0 11.8.89, …; TF built for CUDA 11.8, cuDNN 8 (sm_35 … compute_80)".
    None for a cell without that check (CPU, venv, or an image from before the check)."""
    check = record.extra.get("cuda_check")
    if not isinstance(check, dict):
        return None
    libraries = [lib for lib in check.get("libraries") or [] if isinstance(lib, dict)]
    opened = ", ".join(
        f"{lib.get('soname')}" + (f" {lib['version']}" if lib.get("version") else "") for lib in libraries
    )
    found = check.get("build_info")
    info: dict[str, Any] = found if isinstance(found, dict) else {}
    capabilities = info.get("cuda_compute_capabilities") or []
    built = f"TF built for CUDA {info.get('cuda_version') or '?'}, cuDNN {info.get('cudnn_version') or '?'}"
    if isinstance(capabilities, list) and capabilities:
        built += f" ({' '.join(str(c) for c in capabilities)})"
    problems = [str(p) for p in check.get("problems") or []]
    if problems:
        return f"check FAILED: {'; '.join(problems)}; {built}"
    return f"{len(libraries)} opened by TF's loader: {opened or 'none'}; {built}"


# ---- The narrowing: below the releases -----------------------------------------------------------

BUILD_KIND_WORDS = {
    ReleaseKind.RELEASE: "release",
    ReleaseKind.RC: "release candidate",
    ReleaseKind.NIGHTLY: "nightly",
}


def build_text(build: Build) -> str:
    """ "2.13.0rc1 (release candidate, uploaded 2023-05-10, ref v2.13.0-rc1)": a build as people read it."""
    facts = [BUILD_KIND_WORDS.get(build.kind, str(build.kind))]
    if build.uploaded:
        facts.append(f"uploaded {build.uploaded[:10]}")
    if build.ref:
        facts.append(f"ref {build.ref}")
    if build.git_version and build.git_version != build.ref:
        facts.append(f"git {build.git_version}")
    return f"{build.version} ({', '.join(facts)})"


def narrowed_ends(narrowing: Narrowing) -> tuple[str, str]:
    """The narrowest range found: the narrowed builds, or the releases where none is finer."""
    old, new = narrowing.release_range
    return (
        narrowing.last_old.version if narrowing.last_old else old,
        narrowing.first_new.version if narrowing.first_new else new,
    )


def _first_new_of(narrowing: Narrowing) -> str:
    first = narrowed_ends(narrowing)[1]
    return one_of([*narrowing.unresolved, first] if narrowing.unresolved else [], first)


def narrow_changes(report: BisectReport, narrowing: Narrowing) -> list[tuple[str, str]]:
    """The flips among the judged builds, in version order: (last of one side, first of the other)."""
    judged = [s for s in narrowing.ordered_steps() if s.cls in (Class.OLD, Class.NEW)]
    return [(a.version, b.version) for a, b in itertools.pairwise(judged) if a.cls != b.cls]


def narrowing_finding(report: BisectReport) -> str:
    """The narrowing's answer in one line ("" without a narrowing): the narrowed range first."""
    n = report.narrowing
    if n is None:
        return ""
    old, new = n.release_range
    last, first = narrowed_ends(n)
    t_old, t_new = report.term_old, report.term_new
    if n.status is NarrowStatus.NARROWED:
        return f"narrowed: last {t_old} {last}, first {t_new} {_first_new_of(n)}"
    if n.status is NarrowStatus.NOTHING_FINER:
        return f"nothing finer than the releases: last {t_old} {old}, first {t_new} {new} (no build between them to run)"
    if n.status is NarrowStatus.UNRESOLVED:
        narrower = (last, first) != (old, new)
        return f"not resolved below the releases: last {t_old} {last}, first {t_new} {_first_new_of(n)}" + (
            "" if narrower else " (the builds between could not be judged)"
        )
    if n.status is NarrowStatus.NON_MONOTONIC:
        flips = ", ".join(f"{a} -> {b}" for a, b in narrow_changes(report, n)) or "see the steps"
        return f"not narrowed: the builds between {old} and {new} change back and forth ({flips})"
    return f"narrowing interrupted between {old} and {new}" + (
        f" (so far: last {t_old} {last}, first {t_new} {first})" if (last, first) != (old, new) else ""
    )


def narrowing_explain(report: BisectReport, log: Path | None = None) -> str:
    """What the narrowing's answer means and what to do next (`log`: the bisection log's path)."""
    n = report.narrowing
    if n is None:
        return ""
    again = f"tfbisect narrow {log}" if log else "tfbisect narrow LOG"
    if n.status is NarrowStatus.NARROWED:
        return (
            "the change came in between these two builds: the compare link lists the commits between "
            "them, and the suspects below are the changed Python code the failing probe ran."
        )
    if n.status is NarrowStatus.NOTHING_FINER:
        return (
            "the index publishes nothing between the two releases that runs here (the notes say what it "
            "lacks); the release range is the answer, and the dependency changes and suspects are between "
            "the two releases."
        )
    if n.status is NarrowStatus.UNRESOLVED:
        return (
            "some builds between could not be judged (skipped, or failed another way; see the steps), so "
            "the first new build is one of several; the dependency changes and suspects are between the "
            "ends shown."
        )
    if n.status is NarrowStatus.NON_MONOTONIC:
        return (
            "the builds between the releases do not change once: the behaviour flips back and forth (or a "
            "run is flaky), so the release range stands. Rerun the builds that flip, or sweep them with "
            "`tfbisect sweep --pre`, to see which."
        )
    return f"every finished run is stored; run `{again}` again to resume (stored runs are reused)."


def narrow_step_look(report: BisectReport, step: Step) -> Look:
    """A narrowing's step under the bisection's terms: its class decides (it was judged against the
    two releases), its state only where it has no class."""
    if step.cls in (Class.OLD, Class.NEW):
        old = step.cls is Class.OLD
        state = report.old_state if old else report.new_state
        look = judged_state(report, state) if state else KIND_LOOK[Kind.GOOD if old else Kind.BAD]
        return look.named(report.term_old if old else report.term_new)
    if step.cls is Class.SKIP:
        return KIND_LOOK[Kind.SKIP]
    if step.cls is Class.OTHER:
        return KIND_LOOK[Kind.FAILURE].named("other")
    return judged_state(report, step.state)


# A note's words, its fields filled in (format_map inserts them as they are: a field is never a format).
NOTE_WORDS: dict[NoteCode, str] = {
    NoteCode.LEGACY_TEXT: "{text}",
    NoteCode.NO_RCS: "the index has no release candidates of {version}",
    NoteCode.RCS_DELETED: (
        "the index has no release candidates of {version} (its oldest release candidate is {oldest}, "
        "uploaded {uploaded}): old RCs were deleted"
    ),
    NoteCode.NO_NIGHTLIES: "the index has no tf-nightly builds",
    NoteCode.NIGHTLIES_GONE: (
        "nightlies on the index start at {start}, after this range ({version} was uploaded on {uploaded}): "
        "older nightlies are gone"
    ),
    NoteCode.NO_NIGHTLY_BETWEEN: "no tf-nightly build lies between these two in version order",
    NoteCode.BUILDS_FLIP: "the builds in between flip back and forth, so no pair was compared or traced",
    NoteCode.CANNOT_RUN: "{version} cannot run here, so nothing was compared or traced",
    NoteCode.STOPPED: "the narrowing stopped: {error_type}: {message}",
    NoteCode.NO_LOCKS: "the dependency changes are not listed: {error}",
    NoteCode.NO_PROBE_CHANGED: "no probe changed between the two builds, so none was traced",
    NoteCode.PASSING_UNTRACED: (
        "the passing probe {probe} could not be traced ({error}); the suspects are ranked without it"
    ),
    NoteCode.UNTRACED_FAILED: "the untraced run of {probe} failed: {error}",
    NoteCode.TRACE_FAILED: "{what} (what to do: {todo})",
    NoteCode.PROOF_FAILED: "the suspects were not proven: {what}",
    NoteCode.BACKWARDS_IN_TIME: (
        "the last good release {old} (uploaded {old_uploaded}) was published after the first bad one "
        "{new} (uploaded {new_uploaded}): the dependency changes below run backwards in time"
    ),
}


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:  # a note made without one of its fields
        return "?"


def note_text(note: NarrowNote) -> str:
    """A narrowing's note (or a trace's error) in words."""
    return NOTE_WORDS[note.code].format_map(_Fields(note.fields))


def dependency_text(change: DependencyChange) -> str:
    """ "numpy 1.24.3 → 1.25.0", "keras-nightly not installed → 2.13.0.dev…": one package's change."""
    old = change.old or "not installed"
    new = change.new or "not installed"
    return f"{change.name} {old} → {new}" + (" (imported by the failing probe)" if change.imported else "")


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def trace_cost_text(trace: TraceSummary) -> str:
    """What the traced runs cost: each traced run's time, and the untraced run's for comparison."""
    names = {
        "failing_old": f"{trace.probe} on {trace.old}",
        "failing_new": f"{trace.probe} on {trace.new}",
        "passing_old": f"{trace.passing_probe} on {trace.old}",
        "passing_new": f"{trace.passing_probe} on {trace.new}",
    }
    runs = [(names.get(key, key), seconds) for key, seconds in trace.seconds.items() if seconds >= 0]
    if not runs:
        return "no traced run finished"
    text = "traced runs: " + ", ".join(f"{name} {_seconds(seconds)}" for name, seconds in runs)
    mean = sum(seconds for _, seconds in runs) / len(runs)
    if trace.untraced_seconds:
        ratio = mean / trace.untraced_seconds
        return (
            text + f"; {_seconds(mean)} per traced run against {_seconds(trace.untraced_seconds)} untraced "
            f"({ratio:.1f} times as long)"
        )
    return text + f"; {_seconds(mean)} per traced run"


def trace_probes_text(trace: TraceSummary) -> str:
    """Which probes were traced where, and which packages."""
    passing = (
        f", the passing probe {trace.passing_probe} beside it"
        if trace.passing_probe
        else ", no passing probe beside it (every changed line the failing probe ran ranks alike)"
    )
    packages = ", ".join(trace.packages) or "nothing"
    return f"traced the failing probe {trace.probe} on {trace.old} and {trace.new}{passing}; packages traced: {packages}"


def trace_failed_text(trace: TraceSummary, log: Path | None = None) -> str:
    """Tracing failed: what that leaves, and what to do about it (the error says what failed, and
    usually what to do)."""
    again = f"tfbisect narrow {log}" if log else "tfbisect narrow LOG"
    error = note_text(trace.error) if trace.error else "?"
    return (
        f"tracing failed, so no suspect code is named: {error}. The narrowed range and the "
        f"dependency changes stand; once the cause is dealt with, run `{again}` again (stored runs "
        "are reused)."
    )


LIMITS = (
    "Python tracing sees only Python: a change in compiled code (kernels, C++ gradients, XLA) or in a "
    "package that was not traced leaves no suspect here."
)


def limits_text(report: BisectReport) -> str:
    """What tracing cannot see, and, when nothing the probe ran changed, where the change likely is."""
    n = report.narrowing
    found = n.suspects if n is not None else None
    if found is None or found.executed_python_changed:
        return LIMITS
    traced = (
        ", ".join(n.trace.packages)
        if n is not None and n.trace and n.trace.packages
        else "the traced packages"
    )
    return (
        f"No Python code that the failing probe ran changed between the two builds (documentation aside; "
        f"traced: {traced}): the change is likely in compiled code (kernels, C++ gradients, XLA) or in "
        "a package that was not traced (Python tracing sees only Python)."
    )


def suspects_heading(found: Suspects, shown: int) -> str:
    """ "top 5 of 31 suspects (12 files traced, 4 changed, 9 hunks)"."""
    if not found.suspects:
        head = "no suspects"
    elif shown < found.total:
        head = f"top {shown} of {found.total} suspects"
    else:
        head = f"{found.total} suspect" + ("s" if found.total != 1 else "")
    text = (
        f"{head} ({found.files_traced} files traced, {found.files_changed} of them changed, "
        f"{found.hunks} hunks)"
    )
    if found.missing_sources:
        text += f"; {len(found.missing_sources)} traced files are in neither build's wheels"
    return text


def suspect_facts(suspect: Suspect) -> str:
    """Why a hunk is suspect: its score and what ran, in a line."""
    why = "the passing probe ran it too" if suspect.passed else "only the failing probe ran it"
    facts = [f"score {suspect.score:.2f} ({why})", f"{suspect.changed_executed} changed lines ran"]
    if suspect.only_in:
        version = "old" if suspect.only_in == "old" else "new"
        facts.append(f"the function ran in the {version} version only")
    if suspect.caller:
        facts.append(f"called from {suspect.caller}")
    if suspect.documentation_only:
        facts.append("documentation only")
    return "; ".join(facts)


# ---- The proof: what was put back and what it did ------------------------------------------------


def _transition(proof: Proof) -> str:
    return f"{proof.new_state} → {proof.old_state}"


def proof_answer(proof: Proof) -> str:
    """The proof's one sentence: the proven cause, or plainly that nothing flipped."""
    runs = f"{proof.runs} run{'s' if proof.runs != 1 else ''}"
    if proof.proven and proof.cause_kind is TrialKind.REVERT:
        units = ", ".join(f"`{unit}`" for unit in proof.cause)
        also = (
            f"; its {proof.new} text in {proof.old} turns it too ({proof.old_state} → {proof.new_state}): "
            "confirmed necessary and sufficient"
            if proof.sufficient
            else ": confirmed necessary"
        )
        return f"reverting {units} to {proof.old} restores the old behaviour ({_transition(proof)}){also} ({runs})"
    if proof.proven:
        return _transplant_answer(proof, runs)
    if proof.skipped:
        return f"nothing was proven: {proof.skipped}"
    tried = len(proof.trials)
    what = "the old code of the suspects"
    if any(t.kind in (TrialKind.TRANSPLANT_OLD, TrialKind.TRANSPLANT_NEW) for t in proof.trials):
        what = "the changed packages' old versions and the old code of the suspects"
    return (
        f"nothing flipped: putting back {what} ({tried} tr{'ies' if tried != 1 else 'y'}, "
        f"{runs} of a budget of {proof.budget}) left {proof.probe} at {proof.new_state} on {proof.new}"
    )


# The proven patch's paths are the installed ones under `a/` and `b/` (narrow/proof.py `unified`).
PATCH_STRIP = 1


def patch_heading(proof: Proof) -> str:
    """What the shown patch is and how to apply it: "the minimal patch (1 of the revert's 7 changed
    blocks): in the 2.4.0 environment's site-packages, `patch -p1` (or `git apply`) applies it"."""
    how = (
        f"in the {proof.new} environment's site-packages, `patch -p{PATCH_STRIP}` (or `git apply`) applies it"
    )
    shrink = proof.shrink
    if shrink is None:  # a log from before the shrinking (version 2): the whole units' revert
        return f"the patch that restores the old behaviour (the whole revert): {how}"
    if shrink.kept == shrink.blocks:
        return (
            f"the patch that restores the old behaviour (the whole revert: {_blocks(shrink.blocks)}): {how}"
        )
    return (
        f"the minimal patch that restores the old behaviour ({shrink.kept} of the revert's "
        f"{_blocks(shrink.blocks)}): {how}"
    )


def _blocks(count: int) -> str:
    return f"{count} changed block{'s' if count != 1 else ''}"


def shrink_text(proof: Proof) -> str | None:
    """How the patch was shrunk from the whole revert, and what that took; None for a log without it."""
    shrink = proof.shrink
    if shrink is None:
        return None
    units = ", ".join(f"`{unit}`" for unit in proof.cause)
    cost = f"{shrink.tries} tr{'ies' if shrink.tries != 1 else 'y'}, {shrink.runs} run{'s' if shrink.runs != 1 else ''}"
    documentation = (
        f"; {shrink.documentation} changed only docstrings, comments or blank lines and were left out without a run"
        if shrink.documentation
        else ""
    )
    if shrink.kept < shrink.blocks:
        text = f"shrunk from the whole revert of {units} ({_blocks(shrink.blocks)}{documentation}; {cost})"
    elif shrink.minimal:
        text = f"none of the {_blocks(shrink.blocks)} of the revert of {units} can be left out ({cost})"
    else:
        text = f"the whole revert of {units} ({_blocks(shrink.blocks)}{documentation}; {cost})"
    if not shrink.minimal:
        text += (
            f"; the proof's budget of {proof.budget} runs ended while shrinking: this is the smallest "
            "patch proven so far, and it may not be minimal"
        )
    return text


def _transplant_answer(proof: Proof, runs: str) -> str:
    """A package's answer: 'keras 2.7.0 → 2.6.0 in the 2.7.0 environment restores the old behaviour
    …: the change came with keras' (the cause names the package and its two versions)."""
    cause = proof.cause[0]
    name = cause.split(" ", 1)[0]
    parts = cause.split(" ")
    also = ""
    if proof.sufficient and len(parts) == 4:  # "keras 2.7.0 → 2.6.0": its new version in the old too
        also = (
            f"; {name} {parts[3]} → {parts[1]} in {proof.old} turns it too ({proof.old_state} → "
            f"{proof.new_state}): confirmed necessary and sufficient"
        )
    return (
        f"{cause} in the {proof.new} environment restores the old behaviour ({_transition(proof)}): "
        f"the change came with {name}{also} ({runs})"
    )


_VERDICT_WORDS = {
    Verdict.FLIPPED: "flipped",
    Verdict.NO_FLIP: "did not flip",
    Verdict.INCONCLUSIVE: "inconclusive",
    Verdict.NOT_TESTABLE: "not testable",
}


def trial_text(trial: Trial) -> str:
    """One try: "reverting X in 2.4.0: did not flip (mismatch)", "keras 2.7.0 → 2.6.0 in 2.7.0: flipped"."""
    what = ", ".join(trial.units)
    doing = {
        TrialKind.REVERT: f"reverting {what} in {trial.environment}",
        TrialKind.APPLY: f"applying the new {what} in {trial.environment}",
        TrialKind.TRANSPLANT_OLD: f"{what} in {trial.environment}",
        TrialKind.TRANSPLANT_NEW: f"{what} in {trial.environment}",
        TrialKind.SHRINK: f"reverting only {what} in {trial.environment}",
    }[trial.kind]
    if trial.verdict is Verdict.INCONCLUSIVE and trial.outcome == "not installed":  # a timeout, the network
        return f"{doing}: inconclusive: {trial.error or '?'}"
    if trial.verdict is Verdict.INCONCLUSIVE and trial.kind in (
        TrialKind.TRANSPLANT_OLD,
        TrialKind.TRANSPLANT_NEW,
    ):
        return f"{doing}: inconclusive: with {what} the probe fails with {trial.error or trial.outcome}"
    if trial.verdict is Verdict.INCONCLUSIVE and trial.kind is TrialKind.SHRINK:
        return f"{doing}: inconclusive: {trial.error or trial.outcome}"
    if trial.verdict is Verdict.INCONCLUSIVE:
        alone = " alone" if len(trial.units) == 1 else ""
        verb = "applying" if trial.kind is TrialKind.APPLY else "reverting"
        return f"{doing}: inconclusive: {verb} {what}{alone} fails with {trial.error or trial.outcome}"
    if trial.verdict is Verdict.NOT_TESTABLE:
        return f"{doing}: not testable: {trial.error or '?'}"
    stored = ", stored" if trial.reused else ""
    return f"{doing}: {_VERDICT_WORDS[trial.verdict]} ({trial.outcome}{stored})"


# -- where the time went (core/timing.py adds it up) ---------------------------------------------
PHASE_WORDS = {
    Phase.DOWNLOAD: "downloading",
    Phase.BUILD: "building",
    Phase.RUN: "running",
    Phase.TRACE: "tracing",
}


def duration_text(seconds: float) -> str:
    """ "41 s", "2 min 10 s", "1 h 5 min": a duration as a person reads it (whole seconds)."""
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def time_spent_text(spent: Mapping[Phase, float]) -> str:
    """ "41 s downloading, 2 min 10 s building, 1 min 3 s running, 22 s tracing (summed over
    parallel work)": every phase, in their order, even at 0 (a repeat that reused everything)."""
    parts = ", ".join(f"{duration_text(spent.get(phase, 0.0))} {PHASE_WORDS[phase]}" for phase in Phase)
    return f"{parts} (summed over parallel work)"


def time_line(spent: Mapping[Phase, float]) -> str:
    """The line a bisection, sweep or narrowing ends with."""
    return f"Time: {time_spent_text(spent)}"
