"""The plain-script harness (data/script_harness.py), run for real on this Python and on the
oldest one here (3.6), with a stand-in `tensorflow` package: every document it writes goes
through the driver's own reading (resultfile.read_result, record.classify), so these tests
show what a run of a plain script would be recorded as."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tfbisect.core.outcome import Outcome
from tfbisect.core.packagedata import data_file
from tfbisect.core.record import Failure, classify
from tfbisect.core.resultfile import read_result
from tfbisect.envs import interpreters

HARNESS = Path(str(data_file("script_harness.py")))
TRACER = Path(str(data_file("probe_tracer.py")))
FAKE_TF = '''"""A stand-in for TensorFlow: what the harness reads of it, and one function to trace."""
import os
__version__ = "2.99.0"
IMPORTED_AT = os.getpid()


class version:
    GIT_VERSION = "v2.99.0-fake"


def work(x):
    doubled = x * 2
    return doubled + 1
'''


def _pythons() -> list[str]:
    found = [sys.executable]
    old = interpreters.find("3.6")
    found.append(str(old.path) if old else "missing-3.6")
    return found


PYTHONS = _pythons()


@dataclass(frozen=True)
class Ran:
    exit_code: int
    log: str
    outcome: Outcome
    document: dict[str, Any] | None
    failure: Failure | None


@pytest.fixture
def fake_tf(tmp_path: Path) -> Path:
    folder = tmp_path / "fake"
    (folder / "tensorflow").mkdir(parents=True)
    (folder / "tensorflow" / "__init__.py").write_text(FAKE_TF)
    return folder


@pytest.fixture(params=PYTHONS, ids=["host", "py3.6"])
def python(request: pytest.FixtureRequest) -> str:
    if request.param == "missing-3.6":
        pytest.skip("no Python 3.6 here (pyenv install 3.6)")
    return str(request.param)


def run(python: str, fake_tf: Path | None, script: Path, *args: str, prefix: tuple[str, ...] = ()) -> Ran:
    """The harness as the driver runs a scenario: its own output folder, a merged log, no PYTHONPATH
    but the stand-in's; then the driver's reading of what it left."""
    out = script.parent / "out"
    out.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    if fake_tf is not None:
        env["PYTHONPATH"] = str(fake_tf)
    command = [python, *prefix, str(HARNESS), "--script", str(script), "--output", "result.json", *args]
    done = subprocess.run(
        command, cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False
    )
    log = done.stdout.decode("utf-8", "replace")
    raw, unreadable = read_result(out)
    sha = hashlib.sha256(script.read_bytes()).hexdigest()
    outcome, document, failure = classify(
        done.returncode, raw, log, timed_out=False, expected_sha256=sha, unreadable=unreadable
    )
    return Ran(done.returncode, log, outcome, document, failure)


def write(tmp_path: Path, text: str, name: str = "repro.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def probe(ran: Ran) -> dict[str, Any]:
    assert ran.document is not None, ran.log
    (only,) = ran.document["probes"]
    assert only["name"] == "script" and only["kind"] == "script"
    return dict(only)


def test_a_script_that_runs_to_its_end_is_good(python: str, fake_tf: Path, tmp_path: Path) -> None:
    """Run as `python repro.py` would be: __main__, argv, its folder importable; its output kept."""
    write(tmp_path, "LOCAL = 7\n", name="helper.py")
    script = write(
        tmp_path,
        "import sys, tensorflow as tf\nimport helper\n"
        "assert __name__ == '__main__', __name__\n"
        "assert sys.argv == [__file__], sys.argv\n"
        "print('tf', tf.__version__, helper.LOCAL)\n"
        "sys.stderr.write('a warning\\n')\n",
    )
    ran = run(python, fake_tf, script)
    assert (ran.exit_code, ran.outcome, ran.failure) == (0, Outcome.NOT_REPRODUCED, None), ran.log
    assert probe(ran)["outcome"] == "match"
    assert ran.document is not None
    assert ran.document["environment"]["tensorflow"] == "2.99.0"
    assert ran.document["environment"]["git_version"] == "v2.99.0-fake"
    assert ran.document["scenario"]["name"] == "repro"
    described = ran.document["script"]
    assert described["stdout_tail"] == "tf 2.99.0 7\n"
    assert described["stderr_tail"] == "a warning\n"
    assert described["text"] == script.read_text() and described["text_truncated"] is False
    assert described["sha256"] == hashlib.sha256(script.read_bytes()).hexdigest()
    assert "tf 2.99.0 7" in ran.log  # passed through to the run's log as well


def test_an_assertion_is_the_bug_with_its_line(python: str, fake_tf: Path, tmp_path: Path) -> None:
    script = write(
        tmp_path, "import tensorflow as tf\n\nassert tf.__version__ == '2.8', 'dtype is float64'\n"
    )
    ran = run(python, fake_tf, script)
    assert (ran.exit_code, ran.outcome) == (1, Outcome.REPRODUCED), ran.log
    assert probe(ran)["outcome"] == "mismatch"
    assert ran.document is not None
    assert ran.document["verdict"]["summary"] == "reproduced: AssertionError: dtype is float64 at repro.py:3"
    exception = ran.document["script"]["ended"]["exception"]
    assert exception["type"] == "AssertionError"
    # The traceback starts at the script: the harness and runpy are not part of the story.
    assert exception["frames"] == [{"file": str(script), "line": 3, "function": "<module>"}]
    assert exception["traceback_tail"].startswith(
        'Traceback (most recent call last):\n  File "' + str(script)
    )


@pytest.mark.parametrize(
    ("ending", "exit_code", "outcome"),
    [
        ("sys.exit(1)", 1, Outcome.REPRODUCED),
        ("sys.exit(127)", 1, Outcome.REPRODUCED),
        ("sys.exit('shapes differ')", 1, Outcome.REPRODUCED),
        ("sys.exit(0)", 0, Outcome.NOT_REPRODUCED),
        ("sys.exit()", 0, Outcome.NOT_REPRODUCED),
        ("sys.exit(125)", 125, Outcome.SKIP),
    ],
)
def test_exit_statuses_as_git_bisect_run_reads_them(
    python: str, fake_tf: Path, tmp_path: Path, ending: str, exit_code: int, outcome: Outcome
) -> None:
    ran = run(python, fake_tf, write(tmp_path, "import sys\nprint('before')\n" + ending + "\n"))
    assert (ran.exit_code, ran.outcome) == (exit_code, outcome), ran.log
    assert ran.document is not None and ran.document["script"]["stdout_tail"] == "before\n"


def test_an_exit_status_above_127_is_an_error(python: str, fake_tf: Path, tmp_path: Path) -> None:
    ran = run(python, fake_tf, write(tmp_path, "import sys\nsys.exit(200)\n"))
    assert ran.outcome is Outcome.ERROR and ran.failure is not None, ran.log
    assert "exited 200, which is no verdict" in ran.failure.message
    assert probe(ran)["outcome"] == "error"


@pytest.mark.parametrize(
    ("code", "kind", "message"),
    [
        ("import tensorflow_addons\n", "ModuleNotFoundError", "No module named 'tensorflow_addons'"),
        ("import tensorflow as tf\ntf.experimental.numpy\n", "AttributeError", "experimental"),
    ],
)
def test_any_other_exception_is_an_error_never_bad(
    python: str, fake_tf: Path, tmp_path: Path, code: str, kind: str, message: str
) -> None:
    """An API an old release lacks is a failing end: `error`, named by the exception."""
    ran = run(python, fake_tf, write(tmp_path, code))
    assert ran.exit_code == 3 and ran.outcome is Outcome.ERROR, ran.log
    assert ran.failure is not None and ran.failure.type == kind and message in ran.failure.message
    found = probe(ran)
    assert found["outcome"] == "error" and found["error"]["type"] == kind
    assert ran.document is not None
    assert ran.document["verdict"]["outcome"] == "skip"
    assert f"--bad-if-raises {kind} would make it one" in ran.document["verdict"]["summary"]


def test_bad_if_raises_names_the_bug(python: str, fake_tf: Path, tmp_path: Path) -> None:
    script = write(tmp_path, "import tensorflow as tf\nraise ValueError('Expected float32, got float64')\n")
    matched = run(python, fake_tf, script, "--bad-if-raises", "tf.errors.ValueError:float(32|16)")
    assert (matched.exit_code, matched.outcome) == (1, Outcome.REPRODUCED), matched.log
    assert matched.document is not None
    assert "by --bad-if-raises tf.errors.ValueError:float(32|16)" in matched.document["verdict"]["summary"]
    assert matched.document["scenario"]["parameters"]["bad_if_raises"] == [
        "tf.errors.ValueError:float(32|16)"
    ]
    # A base class names it too; a regex that does not match leaves it an error.
    assert run(python, fake_tf, script, "--bad-if-raises", "Exception").outcome is Outcome.REPRODUCED
    missed = run(
        python, fake_tf, script, "--bad-if-raises", "ValueError:int64", "--bad-if-raises", "KeyError"
    )
    assert missed.outcome is Outcome.ERROR and missed.failure is not None, missed.log
    assert missed.failure.type == "ValueError"


def test_output_and_text_are_bounded(python: str, fake_tf: Path, tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "import sys\n# " + "x" * 20000 + "\nfor i in range(20000):\n    print('line %d' % i)\n"
        "sys.stderr.write('e' * 100000)\nsys.stderr.write('END')\n",
    )
    ran = run(python, fake_tf, script)
    assert ran.outcome is Outcome.NOT_REPRODUCED, ran.log[-500:]
    assert ran.document is not None
    described = ran.document["script"]
    assert described["stdout_tail"].endswith("line 19999\n") and len(described["stdout_tail"]) == 2000
    assert described["stdout_chars"] == sum(len(f"line {i}\n") for i in range(20000))
    assert described["stderr_tail"].endswith("eeeEND") and len(described["stderr_tail"]) == 2000
    assert described["text_truncated"] is True and described["bytes"] == script.stat().st_size
    assert described["text"].startswith("import sys\n# xxx") and len(described["text"]) < 4100
    assert described["sha256"] == hashlib.sha256(script.read_bytes()).hexdigest()  # of all of it
    assert len(json.dumps(ran.document)) < 20000


def test_probes_by_name(python: str, fake_tf: Path, tmp_path: Path) -> None:
    script = write(tmp_path, "assert False, 'the bug'\n")
    named = run(python, fake_tf, script, "--probe", "script")
    assert named.outcome is Outcome.REPRODUCED and named.document is not None, named.log
    assert named.document["scenario"]["parameters"]["probes"] == ["script"]
    unknown = run(python, fake_tf, script, "--probe", "gradient_eager_plain")
    assert (unknown.exit_code, unknown.outcome) == (125, Outcome.SKIP), unknown.log
    assert unknown.document is not None and unknown.document["probes"] == []
    assert unknown.failure == Failure("Skip", "no probe named gradient_eager_plain; the probes are: script")


def test_no_tensorflow_is_a_skip(python: str, tmp_path: Path) -> None:
    ran = run(python, None, write(tmp_path, "raise SystemExit(1)\n"))
    assert (ran.exit_code, ran.outcome) == (125, Outcome.SKIP), ran.log
    assert ran.failure is not None and "TensorFlow cannot be imported here" in ran.failure.message


def test_tensorflow_is_imported_before_the_trace_window(fake_tf: Path, tmp_path: Path) -> None:
    """Under the real probe tracer, window only: the script's call into `tensorflow` is traced,
    the import of `tensorflow` (which the harness does before opening the window) is not."""
    script = write(tmp_path, "import tensorflow as tf\nassert tf.work(3) == 7\n")
    prefix = (str(TRACER), "--packages", "tensorflow", "--window-only", "--output", "trace.json", "--")
    ran = run(sys.executable, fake_tf, script, "--probe", "script", prefix=prefix)
    assert ran.outcome is Outcome.NOT_REPRODUCED, ran.log
    trace = json.loads((tmp_path / "out" / "trace.json").read_text())
    assert trace["window"] == {"only": True, "opened": 1}
    lines = FAKE_TF.splitlines()
    ran_lines = [lines[n - 1].strip() for n in trace["files"]["tensorflow/__init__.py"]["lines"]]
    assert ran_lines == ["doubled = x * 2", "return doubled + 1"]


def test_harness_source_stays_python36() -> None:
    """No syntax newer than 3.6 (the real 3.6 runs it above); no import outside the standard library."""
    import ast

    tree = ast.parse(HARNESS.read_text(), feature_version=(3, 6))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= set(sys.stdlib_module_names) | {"tensorflow"}


def test_the_keras_a_script_used_is_in_its_environment(python: str, fake_tf: Path, tmp_path: Path) -> None:
    """`show` names the Keras a script ran with (not "Keras None"), and a script that never used
    Keras does not get one imported for the record's sake."""
    (fake_tf / "keras").mkdir()
    (fake_tf / "keras" / "__init__.py").write_text("__version__ = '2.7.0'\n")
    used = run(python, fake_tf, write(tmp_path, "import tensorflow, keras\n", name="uses.py"))
    assert used.document is not None, used.log
    assert used.document["environment"]["keras"] == {
        "version": "2.7.0",
        "flavour": "keras2-bundled",
        "module": "keras",
    }
    (fake_tf / "keras" / "__init__.py").write_text("raise SystemExit('keras was imported')\n")
    unused = run(python, fake_tf, write(tmp_path, "import tensorflow\n", name="plain.py"))
    assert unused.outcome is Outcome.NOT_REPRODUCED, unused.log  # keras was never imported
