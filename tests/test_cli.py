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


# -- arguments -> options: one test per command ------------------------------------------------


def options(*words: str) -> object:
    from tfbisect.cli import build_parser, options_for

    return options_for(build_parser().parse_args(list(words)))


def test_versions_options() -> None:
    from tfbisect.commands.versions import VersionsOptions

    got = options("versions", "--pre", "--nightly", "--refresh", "--save", "--index-url", "http://i/simple")
    assert got == VersionsOptions(
        pre=True, nightly=True, refresh=True, save=True, index_url="http://i/simple"
    )
    assert options("versions") == VersionsOptions()


def test_run_options(tmp_path: Path) -> None:
    from tfbisect.core.argv import Common, EnvOptions, RunOptions

    got = options(
        "--reports", str(tmp_path), "run", "--tf", "2.10", "--python", "3.11", "--base", "cuda",
        "--keras", "legacy", "--timeout", "60", "--pre", "--force", "--interpreter", "/x/python",
        "--via", "tox", "--scenario", "s",
    )  # fmt: skip
    env = EnvOptions(base="cuda", keras="legacy", scenario="s", timeout=60.0, pre=True)
    common = Common(reports=tmp_path)
    assert got == RunOptions("2.10", env, "3.11", True, Path("/x/python"), "tox", common)


def test_show_options(tmp_path: Path) -> None:
    from tfbisect.commands.show import ShowOptions
    from tfbisect.core.argv import Common

    assert options("show", "r.json") == ShowOptions(Path("r.json"))
    assert options("-q", "show") == ShowOptions(None, Common(quiet=True))


def test_lock_options() -> None:
    from tfbisect.commands.lock import LockOptions
    from tfbisect.core.spec import Flavour, KerasVariant

    got = options("lock", "--tf", "2.9", "2.10", "--flavour", "cuda", "--keras", "legacy", "--missing")
    assert got == LockOptions(("2.9", "2.10"), None, Flavour.CUDA, KerasVariant.LEGACY, True)
    assert options("lock") == LockOptions()


def test_tox_ini_options() -> None:
    from tfbisect.commands.tox_ini import ToxIniOptions

    assert options("tox-ini") == ToxIniOptions()


def test_bisect_options(tmp_path: Path) -> None:
    from tfbisect.core.argv import BisectOptions as Bisect
    from tfbisect.core.argv import Common, EnvOptions

    got = options(
        "--cache", str(tmp_path), "bisect", "--old", "2.3", "--new", "2.9", "--probe", "p", "--base", "cpu,cuda",
        "--backend", "swarm", "--registry", "r:5000", "-j", "4", "--prefetch", "0", "--confirm",
        "--regress", "error", "--term-old", "fast", "--term-new", "slow", "--report", "--no-narrow", "--no-trace",
    )  # fmt: skip
    env = EnvOptions(backend="swarm", registry="r:5000", base="cpu,cuda")
    assert got == Bisect(
        env=env, good="2.3", bad="2.9", probe="p", prefetch=0, jobs=4, confirm=True, regress="error",
        term_old="fast", term_new="slow", report=True, trace=False, narrow=False, common=Common(cache=tmp_path),
    )  # fmt: skip
    log = options("bisect", "log", "b.json")
    assert isinstance(log, Bisect) and (log.action, log.logfile) == ("log", Path("b.json"))
    assert options("bisect") == Bisect()


def test_narrow_options() -> None:
    from tfbisect.core.argv import NarrowOptions

    got = options(
        "narrow", "b.json", "--force", "--timeout", "30", "--scenario", "s", "--docker-host", "tcp://m"
    )
    assert got == NarrowOptions(Path("b.json"), True, 30.0, "s", "tcp://m")
    got = options("narrow", "--registry", "a:1", "--registry-pull", "b:2", "--base-image", "i", "--report")
    assert got == NarrowOptions(registry="a:1", registry_pull="b:2", base_image="i", report=True)
    assert options("narrow", "--no-trace") == NarrowOptions(trace=False)


def test_sweep_options() -> None:
    from tfbisect.core.argv import EnvOptions, SweepOptions

    got = options(
        "sweep", "--tf", "2.5..2.9", "--all-patches", "--probe", "p", "-j", "2", "--keep-containers"
    )
    env = EnvOptions(backend="auto", keep_containers=True)
    assert got == SweepOptions(env, "2.5..2.9", True, "p", None, 2, False)
    assert options("sweep") == SweepOptions()


def test_report_options(tmp_path: Path) -> None:
    from tfbisect.commands.report import ReportOptions

    got = options(
        "report", "--scenario", "s", "--bisect", "b.json", "--out", str(tmp_path), "--post", "o/r#1"
    )
    assert got == ReportOptions("s", Path("b.json"), tmp_path, "o/r#1")


def test_gpu_check_options() -> None:
    from tfbisect.commands.gpu_check import GpuCheckOptions

    got = options(
        "gpu-check", "--tf", "2.9", "--tf", "2.15", "--require-gpu", "--base-image", "i", "--timeout", "5"
    )
    assert got == GpuCheckOptions(("2.9", "2.15"), None, True, "i", timeout=5.0)
    assert options("gpu-check") == GpuCheckOptions()
