"""The scenario `tfbisect new` renders (core/scaffold.py): short, Python 3.6, and a real scenario:
run with a stand-in `tensorflow`, each probe's document goes through the driver's own reading."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfbisect.core import issuetext, scaffold
from tfbisect.core.errors import ScenarioError, UsageError
from tfbisect.core.outcome import Outcome
from tfbisect.core.packagedata import data_file
from tfbisect.core.record import Failure, classify
from tfbisect.core.resultfile import read_result
from tfbisect.envs import interpreters

FAKE_TF = '''"""A stand-in for TensorFlow: constants with a dtype."""
__version__ = "2.99.0"
float32, float64 = "float32", "float64"


class _Tensor(object):
    def __init__(self, value, dtype):
        self.value, self.dtype = value, dtype


def constant(value, dtype=None):
    return _Tensor(value, dtype or float32)
'''


@pytest.fixture
def fake_tf(tmp_path: Path) -> Path:
    folder = tmp_path / "fake" / "tensorflow"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(FAKE_TF)
    return folder.parent


def run(
    scenario: Path, fake_tf: Path, *args: str, python: str = sys.executable
) -> tuple[Outcome, dict | None, Failure | None]:  # type: ignore[type-arg]
    out = scenario.parent / "out"
    out.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(fake_tf)
    done = subprocess.run(
        [python, str(scenario), "--output", "result.json", *args],
        cwd=out,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=60,
        check=False,
    )
    raw, unreadable = read_result(out)
    sha = hashlib.sha256(scenario.read_bytes()).hexdigest()
    log = done.stdout.decode()
    outcome, document, failure = classify(
        done.returncode, raw, log, timed_out=False, expected_sha256=sha, unreadable=unreadable
    )
    assert (
        outcome is not Outcome.ERROR or failure is None or failure.type not in ("InvalidResult", "NoResult")
    ), log
    return outcome, document, failure


def save(tmp_path: Path, text: str, name: str = "my_bug") -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path


def test_skeleton_is_short_and_python36(tmp_path: Path) -> None:
    text = scaffold.render("my_bug", "Dense drops float64")
    assert scaffold.lines_before_code(text) <= scaffold.MAX_LINES_BEFORE_CODE
    assert text.startswith('"""my_bug: Dense drops float64\n')
    assert text.count(scaffold.REPRO_START) == 1 and text.count(scaffold.REPRO_END) == 1
    python36 = interpreters.find("3.6")
    if python36 is None:
        pytest.skip("no Python 3.6 here (pyenv install 3.6) for the real compile")
    path = save(tmp_path, text)
    done = subprocess.run(
        [str(python36.path), "-m", "py_compile", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("python", ["host", "py3.6"])
def test_skeleton_runs_both_probes(tmp_path: Path, fake_tf: Path, python: str) -> None:
    interpreter = sys.executable
    if python == "py3.6":
        found = interpreters.find("3.6")
        if found is None:
            pytest.skip("no Python 3.6 here")
        interpreter = str(found.path)
    scenario = save(tmp_path, scaffold.render("my_bug"))
    outcome, document, failure = run(scenario, fake_tf, python=interpreter)
    assert (outcome, failure) == (Outcome.NOT_REPRODUCED, None)
    assert document is not None
    assert [(p["name"], p["kind"], p["outcome"]) for p in document["probes"]] == [
        ("repro", "check", "match"),
        ("control", "check", "match"),
    ]
    assert document["environment"]["tensorflow"] == "2.99.0"
    for probe in ("repro", "control"):
        alone, document, _ = run(scenario, fake_tf, "--probe", probe, python=interpreter)
        assert alone is Outcome.NOT_REPRODUCED and document is not None
        assert [p["name"] for p in document["probes"]] == [probe]
    unknown, document, failure = run(scenario, fake_tf, "--probe", "nope", python=interpreter)
    assert unknown is Outcome.SKIP and document is not None and document["probes"] == []
    assert failure == Failure("Skip", "no probe named nope; the probes are: repro, control")


def test_probes_run_inside_the_trace_window(tmp_path: Path, fake_tf: Path) -> None:
    scenario = save(tmp_path, scaffold.render("my_bug"))
    out = tmp_path / "out"
    out.mkdir()
    tracer = str(data_file("probe_tracer.py"))
    env = dict(os.environ, PYTHONPATH=str(fake_tf))
    command = [sys.executable, tracer, "--packages", "tensorflow", "--window-only", "--output", "trace.json"]
    done = subprocess.run(
        [*command, "--", str(scenario), "--output", "result.json"],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    trace = json.loads((out / "trace.json").read_text())
    assert trace["window"]["opened"] == 2
    # Only `constant` and `_Tensor.__init__` ran in the window, never the module's import lines.
    assert {f[0] for f in trace["files"]["tensorflow/__init__.py"]["functions"]} == {
        "constant",
        "_Tensor.__init__",
    }


def test_from_script_wraps_a_plain_script(tmp_path: Path, fake_tf: Path) -> None:
    code = (
        "from __future__ import division\n"
        "import tensorflow as tf\n"
        'NOTE = """first line\n  second line, indented as written\n"""\n'
        "x = tf.constant(1.0, tf.float64)\n"
        "if True:\n"
        "    assert x.dtype == tf.float32, 'got %s; %s' % (x.dtype, NOTE.splitlines()[1])\n"
    )
    text = scaffold.from_script(code, "dtype_bug", "float64 constants")
    assert (
        '`control` must pass in every release: the narrowing traces it beside `repro`.\n"""\nfrom __future__ import division\nimport argparse'
        in text
    )
    assert 'NOTE = """first line\n  second line, indented as written\n"""' in text  # the string unchanged
    assert scaffold.lines_before_code(text) <= scaffold.MAX_LINES_BEFORE_CODE + 1
    outcome, document, _ = run(save(tmp_path, text, "dtype_bug"), fake_tf)
    assert outcome is Outcome.REPRODUCED and document is not None
    (repro, control) = document["probes"]
    assert repro["outcome"] == "mismatch" and control["outcome"] == "match"
    assert repro["summary"] == "reproduced: AssertionError: got float64;   second line, indented as written"


def test_an_exception_in_the_repro_is_an_error_never_bad(tmp_path: Path, fake_tf: Path) -> None:
    text = scaffold.from_script("import tensorflow as tf\ntf.experimental.numpy\n", "old_api")
    outcome, document, failure = run(save(tmp_path, text, "old_api"), fake_tf)
    assert outcome is Outcome.ERROR and failure is not None and failure.type == "AttributeError"
    assert document is not None and document["probes"][0]["error"]["type"] == "AttributeError"


def test_a_marked_script_stays_marked(tmp_path: Path) -> None:
    code = issuetext.mark("import tensorflow as tf\nassert tf.constant(1.0).dtype == tf.float32\n", "o/r#1")
    text = scaffold.from_script(code, "from_issue")
    assert text.splitlines()[0] == issuetext.mark_line("o/r#1")
    assert issuetext.is_marked(text)


def test_code_a_function_cannot_hold_is_refused() -> None:
    with pytest.raises(ScenarioError, match="cannot be wrapped") as info:
        scaffold.from_script("from os.path import *\nimport tensorflow\n", "star")
    assert "--script" in info.value.todo
    with pytest.raises(ScenarioError, match="cannot be read as Python"):
        scaffold.from_script('x = """never closed\n', "broken")


@pytest.mark.parametrize("name", ["a b", "1abc", "../x", "x.py", ""])
def test_names(name: str) -> None:
    with pytest.raises(UsageError):
        scaffold.render(name)
