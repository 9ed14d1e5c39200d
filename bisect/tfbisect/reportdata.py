"""What a report shows, gathered from the result store and bisection logs (no rendering here)."""

from __future__ import annotations

import datetime as dt
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from tfbisect import __version__
from tfbisect.bisection import BisectReport, load_report
from tfbisect.outcome import Outcome
from tfbisect.record import RunRecord
from tfbisect.scenario import Scenario
from tfbisect.spec import EnvSpec, KerasVariant
from tfbisect.store import ResultStore

OUTCOME_WORDS = {
    Outcome.REPRODUCED: "reproduced",
    Outcome.NOT_REPRODUCED: "not reproduced",
    Outcome.SKIP: "skip",
    Outcome.ERROR: "error",
    Outcome.TIMEOUT: "timeout",
}


def column_of(spec: EnvSpec) -> str:
    keras = " tf-keras" if spec.keras is KerasVariant.LEGACY else ""
    base = f" {spec.base}" if spec.base else ""
    return f"{spec.flavour.value}{keras} ({spec.backend.value}{base})"


@dataclass(frozen=True)
class Cell:
    id: str
    version: str
    column: str
    record: RunRecord
    path: Path

    @property
    def outcome(self) -> Outcome:
        return self.record.outcome


@dataclass(frozen=True)
class ReportData:
    scenario: str
    scenario_sha256: str
    description: str
    cells: tuple[Cell, ...]
    bisects: tuple[BisectReport, ...]
    generated_at: str
    tool_version: str
    host: str
    notes: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return sorted({c.column for c in self.cells})

    @property
    def versions(self) -> list[str]:
        return sorted({c.version for c in self.cells}, key=Version)

    def cell(self, version: str, column: str) -> Cell | None:
        for cell in self.cells:
            if cell.version == version and cell.column == column:
                return cell
        return None

    @property
    def bisect(self) -> BisectReport | None:
        """The newest bisection that ended with an answer, else the newest at all."""
        answered = [b for b in self.bisects if b.first_new]
        pool = answered or list(self.bisects)
        return max(pool, key=lambda b: b.finished_at or b.started_at) if pool else None

    @property
    def focus_probe(self) -> str | None:
        """The probe the newest bisection judged by: worth showing in every cell."""
        b = self.bisect
        return str(b.request["probe"]) if b is not None and b.request.get("probe") else None

    def probe_outcome(self, cell: Cell) -> str | None:
        probe = self.focus_probe
        if probe is None or cell.record.document is None:
            return None
        found = cell.record.probe(probe)
        return str(found["outcome"]) if found else "absent"

    def counts(self) -> dict[Outcome, int]:
        counts = dict.fromkeys(Outcome, 0)
        for cell in self.cells:
            counts[cell.outcome] += 1
        return counts

    def headline(self) -> str:
        if not self.cells:
            return f"{self.scenario}: no stored results yet"
        counts = self.counts()
        versions = self.versions
        decisive = counts[Outcome.REPRODUCED] + counts[Outcome.NOT_REPRODUCED]
        text = (
            f"{self.scenario}: reproduced in {counts[Outcome.REPRODUCED]} of {decisive} tested environments "
            f"(TF {versions[0]} to {versions[-1]})"
        )
        others = [f"{n} {OUTCOME_WORDS[o]}" for o, n in counts.items() if n and not o.decisive]
        return text + (f"; {', '.join(others)}" if others else "")


def collect(store: ResultStore, scenario: Scenario, bisect_dir: Path) -> ReportData:
    notes = []
    records = [(p, r) for p, r in store.records(scenario.name) if r.scenario_sha256 == scenario.sha256]
    if not records:
        older = list(store.records(scenario.name))
        if older:
            notes.append(
                "No results exist for the current text of the scenario; showing results of earlier versions of it."
            )
            records = older
    newest: dict[str, tuple[Path, RunRecord]] = {}
    for path, record in records:
        known = newest.get(record.spec.key)
        if known is None or record.started_at > known[1].started_at:
            newest[record.spec.key] = (path, record)
    cells = tuple(
        Cell(id=f"cell-{i}", version=r.spec.tf_version, column=column_of(r.spec), record=r, path=p)
        for i, (p, r) in enumerate(
            sorted(newest.values(), key=lambda pr: (Version(pr[1].spec.tf_version), pr[1].spec.key))
        )
    )
    bisects = []
    for path in sorted(bisect_dir.glob("*.json")) if bisect_dir.is_dir() else []:
        try:
            report = load_report(path)
        except (ValueError, KeyError, TypeError) as exc:
            notes.append(f"Skipped the unreadable bisection log {path.name} ({type(exc).__name__}).")
            continue
        if report.request.get("scenario") == scenario.name:
            bisects.append(report)
    description = next(
        (c.record.document["scenario"].get("description", "") for c in cells if c.record.document), ""
    )
    return ReportData(
        scenario=scenario.name,
        scenario_sha256=scenario.sha256,
        description=description or _docstring(scenario.path),
        cells=cells,
        bisects=tuple(bisects),
        generated_at=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        tool_version=__version__,
        host=f"{platform.system()}-{platform.machine()} Python {platform.python_version()}",
        notes=tuple(notes),
    )


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


def environment_rows(record: RunRecord) -> list[tuple[str, str]]:
    env: dict[str, Any] = (record.document or {}).get("environment", {})
    keras = env.get("keras") or {}
    rows = [
        ("TensorFlow", f"{env.get('tensorflow', record.spec.tf_version)} ({env.get('git_version') or '?'})"),
        ("Python", str(env.get("python", record.spec.python))),
        ("numpy", str(env.get("numpy", "?"))),
        ("Keras", f"{keras.get('version') or '?'} ({keras.get('flavour') or '?'})"),
        ("CUDA / cuDNN", f"{env.get('cuda') or '-'} / {env.get('cudnn') or '-'}"),
        ("devices", ", ".join(f"{d.get('type')}" for d in env.get("devices", [])) or "-"),
    ]
    for key in ("image", "image_id", "base_image", "base_digest", "gpu_visible"):
        if key in record.extra:
            rows.append((key.replace("_", " "), str(record.extra[key])))
    rows.append(("lock", str(record.extra.get("lock", "-"))))
    rows.append(("reproduce", str(record.extra.get("reproduce", "-"))))
    rows.append(("command", record.command or "-"))
    return rows


def dump(data: ReportData) -> str:
    """A compact JSON of the matrix, for machines (kept beside the HTML)."""
    return json.dumps(
        {
            "scenario": data.scenario,
            "headline": data.headline(),
            "cells": [
                {"version": c.version, "column": c.column, "outcome": c.outcome.value, "file": str(c.path)}
                for c in data.cells
            ],
        },
        indent=1,
    )
