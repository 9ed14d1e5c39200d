"""tox runs go into the same store: `tfbisect run --interpreter {envpython} --via tox`.

Fast: tox.ini's commands (as tox itself expands them) parse with tfbisect's own parser and
name each line's release, lock and Python; a given interpreter is refused unless it holds
the line's Python and exactly that TF; results are stored with via=tox and the exit status
says whether a verdict was obtained. Slow: a real `tox -e tf221`, then the same env pointed
at a scenario that raises, then `tox -e report`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tfbisect import toxini
from tfbisect.cli import build_parser, main
from tfbisect.core import catalogue
from tfbisect.core.outcome import Outcome
from tfbisect.core.store import ResultStore, load
from tfbisect.envs import interpreters, locks

from conftest import DATA

ROOT = Path(__file__).resolve().parents[1]
CAT = catalogue.load_snapshot()
# TF 2.21 has a lock for Python 3.11 besides its line's 3.13: a venv of 3.11 stands in for a tox env.
HOST_PYTHON = "3.11"
TF = "2.21.0"


def make_venv(root: Path) -> Path:
    """A real venv of Python 3.11 (no pip, no packages): its python."""
    python = interpreters.find(HOST_PYTHON)
    if python is None:
        pytest.skip("needs Python 3.11")
    subprocess.run([str(python.path), "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    return root / "bin" / "python"


def tox_env() -> dict[str, str]:
    """The environment of a tox started from a test (not from inside another tox run)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("TOX_", "VIRTUAL_ENV"))}


def tox_config(
    *envs: str, keys: tuple[str, ...] = ("commands", "deps", "base_python")
) -> dict[str, dict[str, str]]:
    done = subprocess.run(
        [sys.executable, "-m", "tox", "config", "-e", ",".join(envs), "-k", *keys],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=tox_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in done.stdout.splitlines():
        header = re.match(r"^\[testenv:(\S+)\]$", line)
        if header:
            current = found.setdefault(header.group(1), {})
        elif " = " in line or line.endswith(" ="):
            key, _, value = line.partition(" =")
            current[key] = value.strip()
    return found


# tox expands a few envs (interpreter discovery costs about a second an env); the per-line
# block that the others differ by is checked line by line in test_locks.py.
SAMPLED = ("tf22", "tf212", "tf221")


def test_tox_lines_run_tfbisect_on_their_release_lock_and_python() -> None:
    rows = {factor: (version, python) for factor, version, python in toxini.line_envs(CAT)}
    config = tox_config(*SAMPLED, "report")
    for factor in SAMPLED:
        version, python = rows[factor]
        env = config[factor]
        words = shlex.split(env["commands"])
        assert words[0] == "tfbisect", env["commands"]
        args = build_parser().parse_args(words[1:])
        assert args.command == "run" and args.via == "tox"
        assert args.tf == version, factor
        assert args.interpreter == ROOT / ".tox" / factor / "bin" / "python"
        assert args.reports == ROOT / "reports"
        assert args.scenario == str(ROOT / "scenarios" / "gradient_mismatch.py")
        assert args.backend == "venv" and args.python is None  # the line's Python: the one tox installs into
        # tox installs exactly the lock of that release and Python into that interpreter
        lock = locks.LockSpec(version, python)
        assert env["deps"] == f"-r bisect/tfbisect/data/locks/{lock.filename}", factor
        assert locks.lock_path(lock).is_file()
        assert env["base_python"] == f"python{python}"
    # `tox -e report` reads the store the tf envs write
    report = shlex.split(config["report"]["commands"])
    assert report[0] == "tfbisect" and build_parser().parse_args(report[1:]).reports == ROOT / "reports"


# -- a given interpreter, for real: a venv with a stand-in TF distribution --------------------


@pytest.fixture(scope="module")
def fake_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real venv of the host Python whose metadata says tensorflow-cpu 2.21.0 (no TF code)."""
    root = tmp_path_factory.mktemp("toxenv")
    python = make_venv(root)
    dist = root / "lib" / f"python{HOST_PYTHON}" / "site-packages" / f"tensorflow_cpu-{TF}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tensorflow-cpu\nVersion: {TF}\n")
    return python


def verdict_scenario(folder: Path, verdict: str) -> Path:
    """A scenario that answers `verdict` with a real document (TF 2.21.0's, its own hash)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"answers_{verdict}.py"
    code = {"reproduced": 1, "not_reproduced": 0, "skip": 125}[verdict]
    path.write_text(
        textwrap.dedent(
            f"""
            import hashlib, json, sys
            out = sys.argv[sys.argv.index("--output") + 1]
            document = json.load(open({str(DATA / "record-tf2.21.0.json")!r}))["document"]
            document["scenario"]["sha256"] = hashlib.sha256(open(__file__, "rb").read()).hexdigest()
            document["verdict"]["outcome"] = {verdict!r}
            json.dump(document, open(out, "w"))
            sys.exit({code})
            """
        )
    )
    return path


def run_given(reports: Path, python: Path, scenario: Path, *extra: str) -> int:
    return main(
        [
            "--reports",
            str(reports),
            "-q",
            "run",
            "--tf",
            "2.21",
            "--python",
            HOST_PYTHON,
            "--interpreter",
            str(python),
            "--scenario",
            str(scenario),
            *extra,
        ]
    )


@pytest.mark.parametrize(
    ("verdict", "tox_exit", "plain_exit"),
    [("reproduced", 0, 1), ("not_reproduced", 0, 0), ("skip", 125, 125)],
)
def test_via_tox_stores_the_run_and_exits_zero_only_for_a_verdict(
    reports: Path,
    tmp_path: Path,
    fake_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    verdict: str,
    tox_exit: int,
    plain_exit: int,
) -> None:
    scenario = verdict_scenario(tmp_path / "scenarios", verdict)
    monkeypatch.setenv("TOX_ENV_NAME", "tf221")
    assert run_given(reports, fake_env, scenario, "--via", "tox") == tox_exit
    [(path, record)] = list(ResultStore(reports / "results").records())
    assert record.outcome is Outcome(verdict)
    assert record.spec.tf_version == TF and record.spec.python == HOST_PYTHON
    assert record.extra["via"] == "tox" and record.extra["tox_env"] == "tf221"
    assert record.extra["interpreter"] == str(fake_env)
    assert record.extra["lock"] == f"tf{TF}-py{HOST_PYTHON}-cpu.txt"
    assert record.command.startswith(f"{fake_env} ")  # the interpreter it really ran
    out = capsys.readouterr().out
    assert f"made through   tox env tf221, interpreter {fake_env}" in out and str(path) in out
    # the same run outside tox keeps git bisect run's codes; it runs again (nothing is reused)
    assert run_given(reports, fake_env, scenario) == plain_exit
    assert load(path).extra["via"] == "interpreter" and "tox_env" not in load(path).extra
    assert f"made in        the given environment of {fake_env} (--interpreter)" in capsys.readouterr().out


def test_via_tox_failure_fails_and_is_stored(reports: Path, tmp_path: Path, fake_env: Path) -> None:
    scenario = tmp_path / "raises.py"
    scenario.write_text("raise RuntimeError('the scenario broke')\n")
    assert run_given(reports, fake_env, scenario, "--via", "tox") == 70
    [(_, record)] = list(ResultStore(reports / "results").records())
    assert record.outcome is Outcome.ERROR and record.extra["via"] == "tox"
    assert record.failure is not None and record.failure.type == "RuntimeError"


def test_interpreter_of_another_python_is_refused(
    reports: Path, tmp_path: Path, fake_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = verdict_scenario(tmp_path, "reproduced")
    # without --python the line's Python is 3.13 (its lock and tox env), not this venv's
    code = main(
        [
            "--reports",
            str(reports),
            "run",
            "--tf",
            "2.21",
            "--interpreter",
            str(fake_env),
            "--scenario",
            str(scenario),
        ]
    )
    err = capsys.readouterr().err
    assert code == 4, err
    assert f"is Python {HOST_PYTHON}." in err and "runs on Python 3.13 (its lock and tox env)" in err
    assert "What to do: point --interpreter at a Python 3.13 environment (`tox -e tf221` makes one)" in err
    assert f"--python {HOST_PYTHON}" in err
    assert not (reports / "results").exists()


@pytest.mark.parametrize(
    ("installed", "says"),
    [(None, "has no TensorFlow installed"), ("2.20.0", "tensorflow_cpu 2.20.0, not TF 2.21.0")],
)
def test_interpreter_without_that_tf_is_refused(
    reports: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], installed: str | None, says: str
) -> None:
    root = tmp_path / "env"
    python = make_venv(root)
    if installed:
        dist = (
            root / "lib" / f"python{HOST_PYTHON}" / "site-packages" / f"tensorflow_cpu-{installed}.dist-info"
        )
        dist.mkdir(parents=True)
    assert run_given(reports, python, verdict_scenario(tmp_path, "reproduced"), "--via", "tox") == 9
    err = capsys.readouterr().err
    assert says in err and "What to do: install" in err and f"tf{TF}-py{HOST_PYTHON}-cpu.txt" in err
    assert not (reports / "results").exists()


def test_via_needs_an_interpreter_and_no_docker(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--reports", str(reports), "run", "--tf", "2.21", "--via", "tox"]) == 2
    assert "add --interpreter {envpython}" in capsys.readouterr().err
    code = main(
        [
            "--reports",
            str(reports),
            "run",
            "--tf",
            "2.21",
            "--interpreter",
            sys.executable,
            "--backend",
            "docker",
        ]
    )
    assert code == 2 and "drop one of the two" in capsys.readouterr().err


def test_missing_interpreter_says_so(
    reports: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--reports", str(reports), "run", "--tf", "2.21", "--interpreter", str(tmp_path / "nope")])
    assert code == 4 and "There is no Python interpreter at" in capsys.readouterr().err


# -- the real thing ----------------------------------------------------------------------------


@pytest.mark.slow
def test_tox_tf221_stores_its_result_and_a_failing_scenario_fails_the_env(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    env = dict(tox_env(), TFBISECT_TOX_REPORTS=str(reports))

    def tox(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tox", "--workdir", str(tmp_path / "tox"), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            env=dict(env, **extra),
            timeout=1800,
        )

    done = tox("-e", "tf221")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out  # TF 2.21 reproduces: a verdict, so the env passes
    [(path, record)] = list(ResultStore(reports / "results").records())
    assert record.outcome is Outcome.REPRODUCED, out
    assert record.extra["via"] == "tox" and record.extra["tox_env"] == "tf221"
    assert record.spec.tf_version == TF and record.spec.python == "3.13"
    assert record.document is not None and record.document["environment"]["tensorflow"] == TF
    assert record.extra["interpreter"] == str(tmp_path / "tox" / "tf221" / "bin" / "python")
    fit = record.probe("fit_report_labels")
    assert fit is not None and fit["outcome"] == "mismatch"
    assert {k: v["outcome"] for k, v in fit["configurations"].items()} == {
        "plain": "mismatch",
        "decorated": "match",
    }
    assert "probe gradient_eager_plain       mismatch" in out and str(path) in out

    broken = tmp_path / "scenarios" / "broken.py"
    broken.parent.mkdir()
    broken.write_text("import tensorflow\nraise RuntimeError('the scenario broke')\n")
    failed = tox("-e", "tf221", TFBISECT_TOX_SCENARIO=str(broken))
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0, out
    assert "RuntimeError: the scenario broke" in out and "tf221: FAIL" in out
    [(_, error)] = list(ResultStore(reports / "results").records("broken"))
    assert error.outcome is Outcome.ERROR and error.extra["via"] == "tox"

    report = tox("-e", "report")
    assert report.returncode == 0, report.stdout + report.stderr
    cells = json.loads((reports / "matrix.json").read_text())["cells"]
    assert [(c["version"], c["file"]) for c in cells] == [(TF, str(path))]
