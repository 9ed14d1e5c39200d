"""What a report shows, gathered from the result store and bisection logs (no rendering here)."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from tfbisect import __version__
from tfbisect.core.errors import LockError, UsageError
from tfbisect.core.fsio import now_iso
from tfbisect.core.outcome import Outcome
from tfbisect.core.record import RunRecord
from tfbisect.core.scenario import Scenario
from tfbisect.core.spec import EnvSpec, Flavour, KerasVariant
from tfbisect.core.store import ResultStore
from tfbisect.core.timing import to_dict as spent_to_dict
from tfbisect.envs import locks
from tfbisect.report import findings, style
from tfbisect.report.style import Look
from tfbisect.search.bisectlog import BisectReport, DamagedLog, load_report
from tfbisect.search.narrowlog import Narrowing

OUTCOME_WORDS = style.OUTCOME_WORDS  # outcome -> "not reproduced" ...


def column_of(spec: EnvSpec) -> str:
    """A matrix column: the base (cpu, cuda) and the Keras variant; the backend is not one."""
    return spec.flavour.value + (" tf-keras" if spec.keras is KerasVariant.LEGACY else "")


def backend_of(spec: EnvSpec) -> str:
    """Where a run ran, as a label inside its cell: venv, or docker (with its own base image if any)."""
    return spec.backend + (f" {spec.base}" if spec.base else "")


@dataclass(frozen=True)
class Cell:
    id: str
    version: str
    column: str
    record: RunRecord  # the newest run of this version, base and Keras variant, on any backend
    path: Path
    others: tuple[tuple[Path, RunRecord], ...] = ()  # older runs of the same cell, newest first

    @property
    def outcome(self) -> Outcome:
        return self.record.outcome

    @property
    def backend(self) -> str:
        via = self.record.extra.get("via")  # a run in an environment made elsewhere (tox)
        return backend_of(self.record.spec) + (
            f" via {str(via)[:40]}" if isinstance(via, str) and via else ""
        )


@dataclass(frozen=True)
class ReportData:
    scenario: str
    scenario_sha256: str
    description: str
    cells: tuple[Cell, ...]
    bisects: tuple[BisectReport, ...]  # oldest first
    generated_at: str
    tool_version: str
    host: str
    notes: tuple[str, ...] = ()
    # Bisection logs under reports/bisect/ that could not be read (file name, what is wrong with
    # it): listed in the report, so that one damaged log never stops the report of the others.
    unreadable: tuple[tuple[str, str], ...] = ()
    bisect_logs: tuple[Path, ...] = ()  # the log file of each of `bisects`
    chosen: int | None = None  # which of `bisects` the headline is about
    chosen_explicitly: bool = False  # named with `report --bisect`, not just the newest

    @property
    def columns(self) -> list[str]:
        return sorted({c.column for c in self.cells})

    @property
    def versions(self) -> list[str]:
        return sorted({c.version for c in self.cells}, key=Version)

    @functools.cached_property
    def _by_place(self) -> dict[tuple[str, str], Cell]:
        return {(cell.version, cell.column): cell for cell in self.cells}

    def cell(self, version: str, column: str) -> Cell | None:
        return self._by_place.get((version, column))

    @property
    def bisect(self) -> BisectReport | None:
        """The bisection the headline and the matrix answer (`report --bisect`, else the newest)."""
        return self.bisects[self.chosen] if self.chosen is not None else None

    @property
    def bisect_log(self) -> Path | None:
        if self.chosen is None or self.chosen >= len(self.bisect_logs):
            return None
        return self.bisect_logs[self.chosen]

    def other_bisects(self) -> list[tuple[Path | None, BisectReport]]:
        """Every bisection but the chosen one, newest first."""
        logs: list[Path | None] = [*self.bisect_logs, *([None] * (len(self.bisects) - len(self.bisect_logs)))]
        pairs = [(logs[i], b) for i, b in enumerate(self.bisects) if i != self.chosen]
        return sorted(pairs, key=lambda pb: _when(pb[1]), reverse=True)

    def choice_note(self) -> str | None:
        """Which bisection the headline is about, when there is more than one to choose from."""
        b, log = self.bisect, self.bisect_log
        if b is None or len(self.bisects) < 2:
            return None
        how = "chosen with --bisect" if self.chosen_explicitly else "the newest"
        name = log.name if log else "?"
        return (
            f"{len(self.bisects)} bisections of this scenario; the headline and the matrix answer {name} "
            f"({findings.question(b)}, {how}). Pick another with `tfbisect report --bisect LOG`."
        )

    @property
    def focus_probe(self) -> str | None:
        """The probe the chosen bisection judged by: each cell shows that probe's answer."""
        b = self.bisect
        return findings.probe_of(b) if b is not None else None

    def look(self, cell: Cell) -> Look:
        """A cell as the chosen bisection's question sees it; without a bisection, the verdict."""
        b = self.bisect
        return findings.judge(b, cell.record) if b is not None else style.OUTCOME_LOOK[cell.outcome]

    def secondary(self, cell: Cell) -> str:
        """What a cell says beside its answer: the scenario's verdict, or why there is none."""
        if cell.outcome is Outcome.SKIP:
            return ""
        word = OUTCOME_WORDS[cell.outcome]
        if not cell.outcome.decisive:
            return word if self.bisect is not None else ""
        return f"verdict: {word}" if self.focus_probe else ""

    def legend(self) -> list[Look]:
        """The looks the matrix uses, each once (every outcome when cells show the verdict)."""
        if self.bisect is None:
            return list(style.OUTCOME_LOOK.values())
        found = {(look.css, look.word): look for look in (self.look(c) for c in self.cells)}
        return sorted(found.values(), key=self._order)

    def _order(self, look: Look) -> tuple[int, str]:
        """The older end's side first, then the newer end's, then skips and failures."""
        b = self.bisect
        sides = [b.term_old, b.term_new] if b is not None else []
        if look.css in ("good", "bad") and look.word in sides:
            return sides.index(look.word), look.word
        return 2 + list(style.Kind).index(style.Kind(look.css)), look.word

    def counts(self) -> dict[Outcome, int]:
        counts = dict.fromkeys(Outcome, 0)
        for cell in self.cells:
            counts[cell.outcome] += 1
        return counts

    def headline(self) -> str:
        """The finding first: what changed where for the question asked; else the verdicts."""
        b = self.bisect
        if b is not None:
            return findings.finding(b)
        if not self.cells:
            return "no stored results yet"
        counts = self.counts()
        versions = self.versions
        decisive = counts[Outcome.REPRODUCED] + counts[Outcome.NOT_REPRODUCED]
        text = (
            f"reproduced in {counts[Outcome.REPRODUCED]} of {decisive} tested environments "
            f"(TF {versions[0]} to {versions[-1]})"
        )
        others = [f"{n} {OUTCOME_WORDS[o]}" for o, n in counts.items() if n and not o.decisive]
        return text + (f"; {', '.join(others)}" if others else "")

    def tally(self) -> str:
        """How the stored runs answer the chosen question (never the verdict's count in its place)."""
        b = self.bisect
        if b is None or not self.cells:
            return ""
        counted: dict[str, int] = {}
        for look in sorted((self.look(c) for c in self.cells), key=self._order):
            counted[look.word] = counted.get(look.word, 0) + 1
        versions = self.versions
        also = "; each cell also shows the scenario's verdict" if self.focus_probe else ""
        return (
            f"Judged by {findings.question(b)}: "
            + ", ".join(f"{n} {word}" for word, n in counted.items())
            + f" in {len(self.cells)} environments (TF {versions[0]} to {versions[-1]}){also}"
        )


def _when(report: BisectReport) -> str:
    return report.finished_at or report.started_at


def collect(
    store: ResultStore, scenario: Scenario, bisect_dir: Path, chosen_log: Path | None = None
) -> ReportData:
    notes = []
    records = [(p, r) for p, r in store.records(scenario.name) if r.scenario_sha256 == scenario.sha256]
    if not records:
        older = list(store.records(scenario.name))
        if older:
            notes.append(
                "No results exist for the current text of the scenario; showing results of earlier versions of it."
            )
            records = older
    # One cell per version, base and Keras variant: the newest run of it, whichever backend ran it.
    by_cell: dict[tuple[str, str], list[tuple[Path, RunRecord]]] = {}
    for path, record in records:
        by_cell.setdefault((record.spec.tf_version, column_of(record.spec)), []).append((path, record))
    ordered = sorted(by_cell.items(), key=lambda item: (Version(item[0][0]), item[0][1]))
    cells = []
    for i, (key, runs) in enumerate(ordered):
        runs.sort(key=lambda pr: (pr[1].started_at, pr[1].spec.key), reverse=True)
        path, record = runs[0]
        cells.append(
            Cell(
                id=f"cell-{i}",
                version=key[0],
                column=key[1],
                record=record,
                path=path,
                others=tuple(runs[1:]),
            )
        )
    logs: list[tuple[Path, BisectReport]] = []
    unreadable: list[tuple[str, str]] = []
    for path in sorted(bisect_dir.glob("*.json")) if bisect_dir.is_dir() else []:
        try:
            if path.stat().st_size == 0:
                continue  # a bisection that logged nothing yet (or never will): nothing to show
            report = load_report(path)
        except OSError:
            continue  # gone since the folder was listed
        except DamagedLog as exc:  # its scenario is unknown: listed whichever it was about
            unreadable.append((path.name, exc.what))
            continue
        if report.request.get("scenario") == scenario.name:
            logs.append((path, report))
    logs.sort(key=lambda pb: (_when(pb[1]), pb[0].name))
    chosen: int | None = len(logs) - 1 if logs else None
    if chosen_log is not None:
        chosen = _choose(logs, chosen_log, scenario)
    description = next(
        (c.record.document["scenario"].get("description", "") for c in cells if c.record.document), ""
    )
    return ReportData(
        scenario=scenario.name,
        scenario_sha256=scenario.sha256,
        description=description or _docstring(scenario.path),
        cells=tuple(cells),
        bisects=tuple(b for _, b in logs),
        bisect_logs=tuple(p for p, _ in logs),
        chosen=chosen,
        chosen_explicitly=chosen_log is not None,
        generated_at=now_iso(),
        tool_version=__version__,
        host=f"{platform.system()}-{platform.machine()} Python {platform.python_version()}",
        notes=tuple(notes),
        unreadable=tuple(unreadable),
    )


def _choose(logs: list[tuple[Path, BisectReport]], chosen_log: Path, scenario: Scenario) -> int:
    """The index of the log named with `report --bisect` (read and added when it lies elsewhere)."""
    for i, (path, _) in enumerate(logs):
        if path.resolve() == chosen_log.resolve():
            return i
    try:
        report = load_report(chosen_log)
    except DamagedLog as exc:  # missing, unreadable, not a log, or damaged: it says which
        raise UsageError(
            exc.what,
            "give the path of a log under reports/bisect/ (`tfbisect bisect log` prints the newest).",
        ) from exc
    found = str(report.request.get("scenario"))
    if found != scenario.name:
        raise UsageError(
            f"The bisection log {chosen_log} is of the scenario {found!r}, not {scenario.name!r}.",
            f"add --scenario {found} (or its path), or give a log of {scenario.name}.",
        )
    logs.append((chosen_log, report))
    return len(logs) - 1


def _docstring(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    for quote in ('"""', "'''"):
        if quote in text:
            return text.split(quote)[1].strip().splitlines()[0]
    return ""


def curves_of(record: RunRecord) -> list[tuple[str, dict[str, list[float | None]]]]:
    """(probe name, {configuration: loss per epoch}) for every probe that recorded loss curves."""
    found = []
    for probe in (record.document or {}).get("probes", []):
        curves = probe.get("metrics", {}).get("curves")
        if isinstance(curves, dict) and curves:
            found.append(
                (str(probe["name"]), {str(k): list(v) for k, v in curves.items() if isinstance(v, list)})
            )
    return found


def summary_of(record: RunRecord) -> str:
    """What a run says, in a line: for a failure its real message, never the verdict its document claims."""
    if record.outcome in (Outcome.ERROR, Outcome.TIMEOUT) and record.failure is not None:
        return f"{record.failure.type}: {record.failure.message}"
    return record.verdict_summary


def run_of(data: ReportData, report: BisectReport, version: str) -> RunRecord | None:
    """The stored run a bisection's step at `version` used (the newest such step, found by its
    key among the cell's runs, older ones included), or None when the store no longer has it."""
    keys = [step.key for step in reversed(report.steps) if step.version == version and step.key]
    runs = [
        record
        for cell in data.cells
        if cell.version == version
        for record in (cell.record, *(other for _, other in cell.others))
    ]
    for key in keys:
        for record in runs:
            if record.spec.key == key:
                return record
    return None


@dataclass(frozen=True)
class PlainRerun:
    """How to repeat a run without tfbisect: a venv of its Python with its lock's top pins."""

    python: str  # "3.8": the interpreter the run had
    # The lock's own top-level pins, then the script's dependencies at the versions it had.
    requirements: tuple[str, ...]
    lock: str  # the lock's file name: its hashed pins are the exact set the run installed
    env: tuple[tuple[str, str], ...]  # variables the run had set (TF_USE_LEGACY_KERAS)


_PYTHON = re.compile(r"3\.\d{1,2}")


def plain_rerun(record: RunRecord) -> PlainRerun | None:
    """The run's own install as pip would do it, read from the lock it ran with (found here by the
    name its record keeps and checked against the hash it keeps, so that the pins are the run's);
    None where that lock is gone or changed, or the run needed more than pip installs (a CUDA set
    of NVIDIA libraries before TF 2.14's `and-cuda`)."""
    name = str(record.extra.get("lock") or "")
    if not name or Path(name).name != name or not record.lock_sha256:
        return None
    if not _PYTHON.fullmatch(record.spec.python):
        return None
    for folder in (locks.locks_dir(), locks.written_locks_dir()):
        path = folder / name
        try:
            if hashlib.sha256(path.read_bytes()).hexdigest() != record.lock_sha256:
                continue
            lock = locks.parse(record.spec.lock_spec(), path)
        except (OSError, UnicodeDecodeError, LockError):
            continue
        pins = [text for text in lock.requirements if _pin(text)]
        if not pins or len(pins) != len(lock.requirements):
            return None
        if record.spec.flavour is Flavour.CUDA and not any("[and-cuda]" in pin for pin in pins):
            return None
        return PlainRerun(
            python=record.spec.python,
            requirements=(*pins, *_dependency_pins(record)),
            lock=name,
            env=tuple(sorted(record.spec.env_vars().items())),
        )
    return None


def _pin(text: str) -> bool:
    """Whether `text` pins one version of one project (and nothing a shell or pip reads more into)."""
    try:
        found = Requirement(text)
        Version(text.rpartition("==")[2])
    except (InvalidRequirement, InvalidVersion):
        return False
    specs = list(found.specifier)
    return found.marker is None and found.url is None and len(specs) == 1 and specs[0].operator == "=="


def _dependency_pins(record: RunRecord) -> list[str]:
    """A script's declared dependencies at the versions its run had installed (its document says)."""
    script = (record.document or {}).get("script")
    found = script.get("dependencies") if isinstance(script, dict) else None
    pins = []
    for name, version in (found or {}).items() if isinstance(found, dict) else ():
        text = f"{name}=={version}"
        if isinstance(version, str) and _pin(text):
            pins.append(text)
    return pins


def configurations(probe: dict[str, Any], limit: int = 16) -> list[tuple[str, str, str, float | None]]:
    """A probe's configurations, when it reports several: (name, outcome, summary, max rel. error).

    Optional in the document (older ones have none); anything malformed is left out."""
    found = probe.get("configurations")
    if not isinstance(found, dict):
        return []
    rows = []
    for name, config in list(found.items())[:limit]:
        if not isinstance(config, dict):
            continue
        metrics = config.get("metrics")
        error = metrics.get("max_relative_error") if isinstance(metrics, dict) else None
        rows.append(
            (
                str(name),
                str(config.get("outcome", "?")),
                str(config.get("summary", "")),
                float(error) if isinstance(error, int | float) and not isinstance(error, bool) else None,
            )
        )
    return rows


def image_facts(record: RunRecord) -> dict[str, str | None]:
    """A container run's image and its base, each with its own ID; {} for a venv run.

    Older records named the base's ID `base_digest`; they are read as `base_image_id`."""
    extra = record.extra
    if "image" not in extra:
        return {}

    def text(key: str, *older: str) -> str | None:
        for name in (key, *older):
            if extra.get(name):
                return str(extra[name])
        return None

    return {
        "image": text("image"),
        "image_id": text("image_id"),
        "image_repo_digest": text("image_repo_digest"),
        "base_image": text("base_image"),
        "base_image_id": text("base_image_id", "base_digest"),
    }


def environment_rows(record: RunRecord) -> list[tuple[str, str]]:
    env: dict[str, Any] = (record.document or {}).get("environment", {})
    keras = env.get("keras") or {}
    rows = [
        ("backend", backend_of(record.spec) + f" (Python {record.spec.python})"),
        ("TensorFlow", f"{env.get('tensorflow', record.spec.tf_version)} ({env.get('git_version') or '?'})"),
        ("Python", str(env.get("python", record.spec.python))),
        ("numpy", str(env.get("numpy", "?"))),
        ("Keras", f"{keras.get('version') or '?'} ({keras.get('flavour') or '?'})"),
        ("CUDA / cuDNN", f"{env.get('cuda') or '-'} / {env.get('cudnn') or '-'}"),
        ("devices", ", ".join(f"{d.get('type')}" for d in env.get("devices", [])) or "-"),
    ]
    facts = image_facts(record)
    if facts:
        rows += [
            ("image", facts["image"] or "?"),
            ("image ID", facts["image_id"] or "?"),
            ("image repo digest", facts["image_repo_digest"] or "none (built here, never pushed)"),
            ("base image", facts["base_image"] or "?"),
            ("base image ID", facts["base_image_id"] or "?"),
        ]
    if "gpu_visible" in record.extra:
        rows.append(("gpu visible", str(record.extra["gpu_visible"])))
    if record.ran_on is not None:
        rows.append(("ran on", record.ran_on))
    libraries = findings.cuda_libraries(record)
    if libraries is not None:
        rows.append(("CUDA libraries", libraries))
    rows.append(("lock", str(record.extra.get("lock", "-"))))
    rows.append(("reproduce", str(record.extra.get("reproduce", "-"))))
    rows.append(("command", record.command or "-"))
    return rows


def bisect_summary(report: BisectReport, log: Path | None, *, narrowing: bool = False) -> dict[str, Any]:
    """A bisection for machines: what was asked and found; an unresolved first new is "one of …".
    With `narrowing`, the narrowing below the releases as its log keeps it (the chosen bisection's)."""
    found = {
        "log": str(log) if log else None,
        "question": findings.question(report),
        "probe": findings.probe_of(report),
        "status": report.status.value,
        "finding": findings.finding(report),
        "terms": {"old": report.term_old, "new": report.term_new},
        "last_old": report.last_old,
        "first_new": report.first_new_text if report.first_new else None,
        "candidates": list(report.candidates),
        "end_failures": dict(report.end_failures),
        "failure_finding": findings.failure_finding_text(report),
        "failure": (report.failure_finding or {}).get("failure"),
        "narrowing_finding": findings.narrowing_finding(report) or None,
        # Seconds per phase of the work done for this log (None: a log older than version 4).
        "time_spent": spent_to_dict(report.time_spent) if report.time_spent is not None else None,
        "time_spent_text": findings.time_spent_text(report.time_spent)
        if report.time_spent is not None
        else None,
    }
    if narrowing:
        found["narrowing"] = narrowing_summary(report.narrowing) if report.narrowing is not None else None
    return found


def narrowing_summary(narrowing: Narrowing) -> dict[str, Any]:
    """A narrowing for machines: as its log keeps it, but its notes and a trace's error in words
    (the log keeps their codes and fields)."""
    found = narrowing.to_dict()
    found["notes"] = [findings.note_text(note) for note in narrowing.notes]
    if narrowing.trace is not None and narrowing.trace.error is not None:
        found["trace"]["error"] = findings.note_text(narrowing.trace.error)
    if narrowing.proof is not None:  # the answer first, in words
        found["proof_answer"] = findings.proof_answer(narrowing.proof)
        if narrowing.proof.patch:  # what the patch is, how to apply it, what shrinking it took
            found["proof_patch"] = findings.patch_heading(narrowing.proof)
            found["proof_shrink"] = findings.shrink_text(narrowing.proof)
    return found


def dump(data: ReportData) -> str:
    """A compact JSON of the matrix, for machines (kept beside the HTML)."""
    b = data.bisect
    others = data.other_bisects()
    return json.dumps(
        {
            "scenario": data.scenario,
            "headline": data.headline(),
            "judged_by": findings.question(b) if b is not None else "the scenario's verdict",
            "bisection": bisect_summary(b, data.bisect_log, narrowing=True) if b is not None else None,
            "other_bisections": [bisect_summary(o, log) for log, o in others],
            "cells": [
                {
                    "version": c.version,
                    "column": c.column,
                    "backend": c.backend,
                    "python": c.record.spec.python,
                    "answer": data.look(c).word,
                    "kind": data.look(c).css,
                    "outcome": c.outcome.value,
                    "file": str(c.path),
                }
                for c in data.cells
            ],
        },
        indent=1,
    )
