"""The workflow's error paths, with real processes and real scenario scripts (no TF needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tfbisect.core import catalogue
from tfbisect.core.errors import NoInterpreterError
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.scenario import Scenario, find
from tfbisect.core.spec import EnvSpec
from tfbisect.envs import interpreters, locks
from tfbisect.runs.runner import Runner, Settings

ROOT = Path(__file__).resolve().parents[1]
CAT = catalogue.load_snapshot()
SPEC = EnvSpec("2.2.3", "3.8")
LOCK = locks.load(locks.LockSpec("2.2.3", "3.8"))


def runner(reports: Path, timeout: float = 60) -> Runner:
    settings = Settings(reports_dir=reports, cache_dir=reports / "cache", timeout=timeout)
    return Runner(CAT, settings, Progress(quiet=True), have={})


def script(tmp_path: Path, body: str) -> Scenario:
    path = tmp_path / "probe_me.py"
    path.write_text(textwrap.dedent(body))
    return find(str(path))


def test_flagship_scenario_without_tensorflow_is_a_valid_skip(tmp_path: Path) -> None:
    """The host Python has no TF: the scenario must say 125 and still write a valid document."""
    output = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scenarios" / "gradient_mismatch.py"), "--output", str(output)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 125, done.stderr
    document = json.loads(output.read_text())
    assert document["verdict"]["outcome"] == "skip"
    assert "TensorFlow cannot be imported" in document["verdict"]["summary"]
    record = runner(tmp_path).execute(SPEC, find("gradient_mismatch"), Path(sys.executable), LOCK, "now")
    assert record.outcome is Outcome.SKIP and record.document is not None


def test_crash_is_error_with_type_message_and_log(reports: Path, tmp_path: Path) -> None:
    scenario = script(tmp_path, "import sys\nprint('starting')\nraise KeyError('no such probe')\n")
    record = runner(reports).execute(SPEC, scenario, Path(sys.executable), LOCK, "now")
    assert record.outcome is Outcome.ERROR
    assert record.failure is not None and record.failure.type == "KeyError"
    assert "no such probe" in record.failure.message
    assert "starting" in record.log_tail
    assert Path(record.extra["log"]).read_text().count("KeyError") >= 1
    stored = runner(reports).store.get(scenario.name, scenario.sha256, SPEC)
    assert stored == record


def test_hang_is_timeout_and_the_process_is_gone(reports: Path, tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    scenario = script(
        tmp_path,
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(marker)!r}, "w").write(str(child.pid))
        time.sleep(600)
        """,
    )
    record = runner(reports, timeout=3).execute(SPEC, scenario, Path(sys.executable), LOCK, "now")
    assert record.outcome is Outcome.TIMEOUT
    pid = int(marker.read_text())
    # the whole process group was killed, grandchildren included
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_invalid_json_is_error(reports: Path, tmp_path: Path) -> None:
    scenario = script(
        tmp_path,
        """
        import sys
        out = sys.argv[sys.argv.index("--output") + 1]
        open(out, "w").write("{'verdict': 'reproduced'")
        sys.exit(1)
        """,
    )
    record = runner(reports).execute(SPEC, scenario, Path(sys.executable), LOCK, "now")
    assert record.outcome is Outcome.ERROR
    assert record.failure is not None and record.failure.type == "InvalidResult"


def test_no_interpreter_for_the_version(reports: Path) -> None:
    with pytest.raises(NoInterpreterError) as info:
        runner(reports).spec_for("2.2")
    assert "wheels exist for 3.6, 3.7, 3.8" in info.value.what
    assert "--backend docker" in info.value.todo


def test_failed_install_is_a_retried_skip_and_keeps_the_log(
    reports: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFBISECT_LOCKS", str(tmp_path / "locks"))
    (tmp_path / "locks").mkdir()
    lock_text = LOCK.path.read_text().split("\n\n")[0]
    header = "\n".join(line for line in lock_text.splitlines() if line.startswith("#"))
    (tmp_path / "locks" / LOCK.path.name).write_text(
        header + "\ntensorflow-cpu @ file:///nonexistent/tf.whl\n"
    )
    python = interpreters.find("3.11")
    assert python is not None
    run = runner(reports)
    run.have = {"3.8": python}  # any interpreter will do: the install fails first
    record = run.run(SPEC, find("gradient_mismatch")).record
    assert record.outcome is Outcome.SKIP
    assert record.failure is not None and record.failure.type == "EnvironmentBuildError"
    assert record.infrastructure is True and record.to_dict()["infrastructure"] is True
    logs = list((reports / "logs").rglob("*.install.log"))
    assert logs and "nonexistent" in logs[0].read_text()
    assert not list((reports / "cache" / "venvs").glob("*")), "a failed install leaves no half-built venv"
