"""`tfbisect sweep`: the whole matrix of versions x bases x Keras variants, reusing stored results."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from packaging.version import Version

from tfbisect.core.catalogue import Catalogue, Release
from tfbisect.core.errors import TfbisectError, UsageError
from tfbisect.core.record import RunRecord
from tfbisect.core.scenario import Scenario
from tfbisect.core.spec import EnvSpec, Flavour, KerasVariant, legacy_keras_applies
from tfbisect.runs.runner import Runner


@dataclass(frozen=True)
class Cell:
    version: str
    flavour: Flavour
    keras: KerasVariant
    record: RunRecord | None  # None: not runnable here (no Python, or the variant does not apply)
    note: str = ""


def parse_range(text: str, catalogue: Catalogue, *, all_patches: bool, pre: bool) -> list[Release]:
    """`2.5..2.21` (lines or exact versions, either end optional) or a comma list."""
    releases = catalogue.releases(pre=pre)
    if ".." not in text:
        return [catalogue.resolve(v.strip(), pre=pre) for v in text.split(",") if v.strip()]
    start_text, _, end_text = text.partition("..")
    start = _low(catalogue, start_text.strip()) if start_text.strip() else Version(releases[0].version)
    end = _high(catalogue, end_text.strip()) if end_text.strip() else Version(releases[-1].version)
    if start > end:
        raise UsageError(
            f"The range {text!r} is empty: {start} comes after {end}.", "write it oldest first: 2.5..2.21."
        )
    chosen = [r for r in releases if start <= Version(r.version) <= end]
    if all_patches:
        return chosen
    newest: dict[str, Release] = {}
    for release in chosen:
        newest[release.line] = release  # releases are sorted: the last of a line is its newest
    return list(newest.values())


def _low(catalogue: Catalogue, text: str) -> Version:
    release = catalogue.resolve(text, pre=True)
    line_start = [r for r in catalogue.releases(pre=True) if r.line == text]
    return Version(line_start[0].version if line_start else release.version)


def _high(catalogue: Catalogue, text: str) -> Version:
    return Version(catalogue.resolve(text, pre=True).version)


def run_sweep(
    runner: Runner,
    scenario: Scenario,
    releases: Sequence[Release],
    flavours: Sequence[Flavour],
    variants: Sequence[KerasVariant],
    backends: Sequence[str],  # registered backend names, in the order tried
    jobs: int,
    python: str | None = None,
) -> list[Cell]:
    plan: list[tuple[Release, Flavour, KerasVariant, EnvSpec | None, str]] = []
    for release, flavour, keras in itertools.product(releases, flavours, variants):
        if keras is KerasVariant.LEGACY and not legacy_keras_applies(release.version):
            plan.append((release, flavour, keras, None, "tf-keras variant applies from TF 2.16"))
            continue
        try:
            spec = runner.spec_for(
                release.version, python=python, flavour=flavour, keras=keras, backends=backends, pre=True
            )
            plan.append((release, flavour, keras, spec, ""))
        except TfbisectError as exc:  # no Python or base for it here: a note in its cell, not a crash
            plan.append((release, flavour, keras, None, exc.what))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(runner.run, spec, scenario) if spec else None for _, _, _, spec, _ in plan]
        return [
            Cell(release.version, flavour, keras, future.result().record if future else None, note)
            for (release, flavour, keras, _, note), future in zip(plan, futures, strict=True)
        ]
