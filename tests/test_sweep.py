"""`tfbisect sweep`: ranges, the matrix, and reuse of stored results (no install, no run)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tfbisect.core import catalogue
from tfbisect.core.errors import UsageError
from tfbisect.core.progress import Progress
from tfbisect.core.scenario import find
from tfbisect.core.spec import Flavour, KerasVariant
from tfbisect.envs.interpreters import Interpreter
from tfbisect.report import show
from tfbisect.runs.runner import Runner, Settings
from tfbisect.search import sweep

from conftest import recorded

CAT = catalogue.load_snapshot()
SCENARIO = find("gradient_mismatch")
HAVE = {p: Interpreter(p, Path(f"/nonexistent/python{p}"), p + ".0") for p in ("3.8", "3.11")}


def test_range_of_lines_takes_each_lines_newest() -> None:
    releases = sweep.parse_range("2.2..2.5", CAT, all_patches=False, pre=False)
    assert [r.version for r in releases] == ["2.2.3", "2.3.4", "2.4.4", "2.5.3"]
    every = sweep.parse_range("2.2..2.3", CAT, all_patches=True, pre=False)
    assert [r.version for r in every][:2] == ["2.2.0", "2.2.1"] and every[-1].version == "2.3.4"
    assert [r.version for r in sweep.parse_range("2.9,2.21", CAT, all_patches=False, pre=False)] == [
        "2.9.3",
        "2.21.0",
    ]
    assert sweep.parse_range("..", CAT, all_patches=False, pre=False)[-1].version == "2.21.0"


def test_backwards_range_says_how_to_write_it() -> None:
    with pytest.raises(UsageError, match="oldest first"):
        sweep.parse_range("2.21..2.5", CAT, all_patches=False, pre=False)


def test_sweep_reuses_stored_results_and_marks_what_does_not_apply(tmp_path: Path) -> None:
    runner = Runner(CAT, Settings(tmp_path, tmp_path / "cache"), Progress(quiet=True), have=HAVE)
    stored = dataclasses.replace(recorded("tf2.2.3"), scenario_sha256=SCENARIO.sha256)
    runner.store.put(stored)
    releases = sweep.parse_range("2.2", CAT, all_patches=False, pre=False)
    cells = sweep.run_sweep(
        runner,
        SCENARIO,
        releases,
        [Flavour.CPU],
        [KerasVariant.DEFAULT, KerasVariant.LEGACY],
        ("venv",),
        2,
    )
    assert [(c.keras, c.record is not None) for c in cells] == [
        (KerasVariant.DEFAULT, True),
        (KerasVariant.LEGACY, False),
    ]
    assert cells[0].record == stored  # reused: nothing was installed
    assert not (tmp_path / "cache").exists()
    assert "from TF 2.16" in cells[1].note
    text = show.sweep_text(cells, "gradient_graph_plain")
    assert "cpu/default" in text and "cpu/legacy" in text
    assert "✗ reproduced (gradient_graph_plain: mismatch)" in text and "n/a" in text
