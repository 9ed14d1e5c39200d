"""Probes with several configurations report each one's outcome (document, schema, console).

`fit_report_labels`, `fit_shape_robust` and `training_loop` train with both losses (plain
`customloss1`, `@tf.function` `customloss2`); their own outcome sums the two up, and
`configurations` says which one it was. The scenario's functions are run here on the loss
curves of real runs (tests/data), with numpy and without TensorFlow.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tfbisect.core.schema import problems
from tfbisect.envs import interpreters
from tfbisect.report import show

from conftest import recorded

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "gradient_mismatch.py"


@pytest.fixture(scope="module")
def gm() -> ModuleType:
    """The flagship scenario as a module (it imports TensorFlow only in main())."""
    spec = importlib.util.spec_from_file_location("gradient_mismatch_under_test", SCENARIO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in scenarios/
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes
    return module


def real_probe(version: str, name: str) -> dict[str, Any]:
    document = recorded(version).document
    assert document is not None
    [probe] = [p for p in document["probes"] if p["name"] == name]
    return copy.deepcopy(probe)


def with_configurations(gm: ModuleType, version: str) -> dict[str, Any]:
    """A real document whose curve probes carry the configurations the scenario computes now."""
    document = recorded(version).document
    assert document is not None
    document = copy.deepcopy(document)
    for probe in document["probes"]:
        metrics = probe["metrics"]
        if "curves" in metrics:
            probe["configurations"] = gm.curve_configurations(
                np, metrics["curves"], metrics.get("errors", {})
            )
    # as the scenario writes it (write_json: sort_keys), so configurations come in name order
    written: dict[str, Any] = json.loads(json.dumps(gm.finite(document), sort_keys=True))
    return written


def test_plain_mismatch_and_decorated_match_are_told_apart(gm: ModuleType) -> None:
    for name in ("fit_report_labels", "fit_shape_robust", "training_loop"):
        probe = real_probe("tf2.21.0", name)
        again = gm.curve_probe(np, name, probe["kind"], probe["metrics"]["curves"], 0.0, "what")
        assert again["outcome"] == probe["outcome"] == "mismatch"  # the probe's own outcome, as before
        configurations = again["configurations"]
        assert list(configurations) == ["plain", "decorated"]
        assert configurations["plain"]["outcome"] == "mismatch"
        assert configurations["decorated"]["outcome"] == "match"
        assert configurations["plain"]["summary"].startswith("customloss1 (plain): loss curve off")
        assert (
            "customloss2 @tf.function (decorated): loss curve within 2 % of"
            in configurations["decorated"]["summary"]
        )
        plain = configurations["plain"]["metrics"]
        assert plain["max_relative_deviation"] > 1 and plain["tolerance"] == gm.CURVE_RTOL
        assert plain["final_loss"] == probe["metrics"]["curves"]["plain"][-1]


def test_a_loss_that_raises_is_its_own_error(gm: ModuleType) -> None:
    # TF 2.2.3 rejects the report's labels with both losses: both configurations say why
    probe = real_probe("tf2.2.3", "fit_report_labels")
    configurations = gm.curve_configurations(np, probe["metrics"]["curves"], probe["metrics"]["errors"])
    assert {k: v["outcome"] for k, v in configurations.items()} == {"plain": "error", "decorated": "error"}
    assert configurations["plain"]["error"]["type"] == "ValueError"
    assert "Shapes (50, 1, 3) and (50, 3) are incompatible" in configurations["plain"]["summary"]
    # one loss failing, the other measured
    curves = real_probe("tf2.21.0", "fit_report_labels")["metrics"]["curves"]
    del curves["plain"]
    error = {"type": "TypeError", "message": "bad labels"}
    mixed = gm.curve_configurations(np, curves, {"plain": error})
    assert mixed["plain"]["outcome"] == "error" and mixed["decorated"]["outcome"] == "match"
    # no reference curve: nothing to compare with, which is an error and says so
    orphan = gm.curve_configurations(
        np, {"decorated": curves["decorated"]}, {"reference": error, "plain": error}
    )
    assert (
        orphan["decorated"]["outcome"] == "error"
        and "reference failed (TypeError)" in orphan["decorated"]["summary"]
    )


def test_schema_accepts_and_checks_configurations(gm: ModuleType) -> None:
    for version in ("tf2.21.0", "tf2.2.3"):
        assert problems(with_configurations(gm, version)) == []

    def broken(change: Any) -> list[str]:
        document = with_configurations(gm, "tf2.21.0")
        [probe] = [p for p in document["probes"] if p["name"] == "fit_report_labels"]
        change(probe["configurations"])
        return problems(document)

    assert any("'maybe' is not one of" in p for p in broken(lambda c: c["plain"].update(outcome="maybe")))
    assert any(
        "'error' is a required property" in p for p in broken(lambda c: c["plain"].update(outcome="error"))
    )
    assert any("'summary' is a required property" in p for p in broken(lambda c: c["plain"].pop("summary")))
    assert any("does not match" in p for p in broken(lambda c: c.update({"Plain Loss": c["plain"]})))
    assert broken(lambda c: c.clear()) == []  # optional, and may be empty


def test_record_text_shows_each_configuration(gm: ModuleType) -> None:
    record = dataclasses.replace(recorded("tf2.21.0"), document=with_configurations(gm, "tf2.21.0"))
    lines = show.record_text(record).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("    fit_report_labels "))
    assert "mismatch" in lines[at]
    assert lines[at + 1].startswith(
        "      decorated                match     customloss2 @tf.function (decorated)"
    )
    assert lines[at + 2].startswith(
        "      plain                    mismatch  customloss1 (plain): loss curve off"
    )
    # gradient probes run one configuration each: no extra lines
    grad = next(i for i, line in enumerate(lines) if line.startswith("    gradient_eager_plain "))
    assert lines[grad + 1].startswith("    gradient_eager_decorated ")


def test_scenario_is_python_3_6_syntax() -> None:
    source = SCENARIO.read_text()
    ast.parse(source, feature_version=(3, 6))  # best effort on this Python; the real 3.6 below
    python36 = interpreters.find("3.6")
    if python36 is None:
        pytest.skip("no Python 3.6 here (pyenv install 3.6) for the real compile")
    done = subprocess.run(
        [
            str(python36.path),
            "-c",
            f"import sys; compile(open({str(SCENARIO)!r}).read(), 'scenario', 'exec')",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
