"""Real TensorFlow in real venvs and through tox: the report's finding must show on TF 2.2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfbisect.core.record import RunRecord
from tfbisect.core.store import ResultStore, load

from conftest import cli

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def tfbisect(reports: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # a cache of its own: each test builds its venv for real (uv's wheel cache keeps it quick)
    return cli(reports, *args)


def outcomes(path: Path) -> dict[str, str]:
    record = load(path)
    assert record.document is not None
    return {p["name"]: p["outcome"] for p in record.document["probes"]}


def configurations(record: RunRecord, probe: str) -> dict[str, str]:
    found = record.probe(probe)
    assert found is not None, probe
    return {name: c["outcome"] for name, c in found["configurations"].items()}


def stored(reports: Path) -> list[Path]:
    return sorted((reports / "results").rglob("*.json"))


def test_tf_2_2_shows_eager_right_graph_wrong(tmp_path: Path) -> None:
    done = tfbisect(tmp_path, "run", "--tf", "2.2", "--python", "3.8")
    assert done.returncode == 1, done.stdout + done.stderr  # 1 = reproduced (git bisect: bad)
    [path] = stored(tmp_path)
    probes = outcomes(path)
    assert probes["gradient_eager_plain"] == "match"
    assert probes["gradient_graph_plain"] == "mismatch"
    assert probes["gradient_eager_decorated"] == "match"
    assert probes["gradient_graph_decorated"] == "match"
    record = load(path)
    assert record.document is not None
    env = record.document["environment"]
    assert env["tensorflow"] == "2.2.3" and env["python"].startswith("3.8.")
    assert env["keras"]["flavour"] == "keras2-bundled" and env["git_version"].startswith("v2.2")
    wrong = record.document["verdict"]["disagreements"]
    assert [d["probe"] for d in wrong] == ["gradient_graph_plain"] and wrong[0]["max_relative_error"] > 0.1
    # probes that train with both losses say which one was off (or failed)
    assert configurations(record, "training_loop") == {"plain": "mismatch", "decorated": "match"}
    assert configurations(record, "fit_shape_robust") == {"plain": "mismatch", "decorated": "match"}
    assert configurations(record, "fit_report_labels") == {"plain": "error", "decorated": "error"}
    assert "installing" in done.stderr and "probe gradient_graph_plain" in done.stderr  # progress
    again = tfbisect(tmp_path, "run", "--tf", "2.2", "--python", "3.8")
    assert again.returncode == 1 and "reusing the stored result" in again.stderr
    assert "installing" not in again.stderr


def test_tf_2_21_on_python_3_11(tmp_path: Path) -> None:
    done = tfbisect(tmp_path, "run", "--tf", "2.21", "--python", "3.11")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    [path] = stored(tmp_path)
    record = load(path)
    assert record.document is not None
    env = record.document["environment"]
    assert env["tensorflow"] == "2.21.0" and env["python"].startswith("3.11.")
    assert env["keras"]["flavour"] == "keras3"
    probes = outcomes(path)
    # the decorated loss is right everywhere; the plain one is measured, whatever it says
    assert probes["gradient_eager_decorated"] == probes["gradient_graph_decorated"] == "match"
    assert probes["gradient_eager_plain"] in ("match", "mismatch")
    shown = tfbisect(tmp_path, "show", str(path))
    assert shown.returncode == 0 and "TF 2.21.0" in shown.stdout


def test_tox_tf22_prints_the_eager_graph_difference(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOX_", "VIRTUAL_ENV"))}
    env["TFBISECT_TOX_REPORTS"] = str(tmp_path / "reports")  # not the checkout's reports/
    done = subprocess.run(
        ["tox", "-e", "tf22", "--workdir", str(tmp_path / "tox")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=1800,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "probe gradient_eager_plain       match" in out
    assert "probe gradient_graph_plain       mismatch" in out
    assert "verdict: reproduced: gradient_graph_plain is off the exact gradient" in out
    # stored like any other run, marked as made through tox
    [(_, record)] = list(ResultStore(tmp_path / "reports" / "results").records())
    assert record.outcome.value == "reproduced" and record.spec.tf_version == "2.2.3"
    assert record.extra["via"] == "tox" and record.extra["tox_env"] == "tf22"


def test_tox_line_without_its_python_says_what_to_do(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOX_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if "pyenv" not in p)
    env["PATH"] += os.pathsep + str(Path(sys.executable).parent)  # tox itself, but no python3.7
    done = subprocess.run(
        [sys.executable, "-m", "tox", "-e", "tf20", "--workdir", str(tmp_path / "tox")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert "TF 2.0 needs python3.7" in out and "tfbisect run --tf 2.0 --backend docker" in out, out
    assert "skipped" in out.lower()
    assert json.dumps(done.returncode) in ("0", "1")
