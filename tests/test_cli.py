from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tfbisect.cli import main
from tfbisect.core.scenario import find
from tfbisect.core.store import ResultStore

from conftest import recorded

ROOT = Path(__file__).resolve().parents[1]


def test_python_dash_m_from_the_repo_root_keeps_stdlib_bisect() -> None:
    """`bisect/` is on the path as a folder only: the stdlib module must still win."""
    done = subprocess.run(
        [sys.executable, "-c", "import bisect, random, tempfile; print(bisect.bisect_left([1, 2], 2))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.strip() == "1", done.stderr
    assert not (ROOT / "bisect" / "__init__.py").exists()
    done = subprocess.run(
        [sys.executable, "-m", "tfbisect", "--version"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("tfbisect ")


def test_versions_lists_releases_and_local_pythons(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["versions"]) == 0
    out = capsys.readouterr().out
    assert "2.2.3" in out and "2021-06-15" in out and "3.6 3.7 3.8" in out
    assert "catalogue of" in out


def test_unknown_version_suggests_nearest(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--reports", str(tmp_path), "run", "--tf", "2.99"]) == 3
    err = capsys.readouterr().err
    assert "'2.99' is not in the catalogue" in err and "nearest first: 2.21.0" in err


def test_missing_scenario_lists_the_real_ones(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--reports", str(tmp_path), "run", "--tf", "2.2", "--scenario", "nope"]) == 5
    assert "pick one of: gradient_mismatch" in capsys.readouterr().err


def test_docker_backend_without_an_engine_points_at_venv(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert main(["--reports", str(tmp_path), "run", "--tf", "2.9", "--backend", "docker"]) == 10
    err = capsys.readouterr().err
    assert "Docker engine is not running" in err and "--backend venv" in err


def test_show_pretty_prints_and_lists(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = ResultStore(tmp_path / "results").put(recorded("tf2.2.3"))
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "✗ reproduced" in out and "gradient_graph_plain       mismatch" in out
    assert "tfbisect run --tf 2.2.3 --python 3.8" in out
    assert main(["--reports", str(tmp_path), "show"]) == 0
    assert "TF 2.2.3 · py3.8 · cpu · venv" in capsys.readouterr().out


def test_show_corrupted_result(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"spec": {}}))
    assert main(["show", str(path)]) == 6
    err = capsys.readouterr().err
    assert "is corrupted" in err and "What to do" in err
    assert path.exists(), "show never deletes what it cannot read"


def test_run_reuses_a_stored_result_without_installing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    current = find("gradient_mismatch")
    record = dataclasses.replace(recorded("tf2.2.3"), scenario_sha256=current.sha256)
    ResultStore(tmp_path / "results").put(record)
    code = main(["--reports", str(tmp_path), "--cache", str(tmp_path / "cache"), "run", "--tf", "2.2.3"])
    assert code == 1  # reproduced, as git bisect run expects
    assert "reusing the stored result" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()
