"""A plain repro script bisected on real TF venvs, and its summary rerun from another folder
with only the script saved (issue 18: "a summary others can rerun")."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tfbisect.core.timing import Phase
from tfbisect.report import findings
from tfbisect.search.bisectlog import Status, load_report
from tfbisect.search.steps import StepOutcome

from conftest import cli

pytestmark = pytest.mark.slow

# Keras 2.4 reuses a softmax's logits in categorical_crossentropy; with targets that do not sum
# to 1 (a class weight folded into the one-hot), the eager gradient is off from then on (the
# flagship's gradient_eager_plain, as a reporter would write it).
REPRO = """\
import numpy as np
import tensorflow as tf

x = np.random.RandomState(0).randn(8, 4).astype("float32")
targets = np.eye(3, dtype="float32")[[0, 1, 2, 2, 1, 0, 2, 1]] * np.float32([1.0, 1.0, 0.1])
model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(3, activation="softmax")])
with tf.GradientTape() as tape:
    probs = model(x)
    loss = tf.reduce_mean(tf.keras.losses.categorical_crossentropy(targets, probs))
grad = tape.gradient(loss, model.trainable_variables)[1].numpy()
p = probs.numpy()
exact = ((p * targets.sum(1, keepdims=True) - targets) / len(x)).sum(0)
assert np.allclose(grad, exact, atol=1e-5), (grad, exact)
"""


def test_a_plain_script_bisects_and_its_summary_reruns_elsewhere(tmp_path: Path) -> None:
    work, elsewhere, reports = tmp_path / "work", tmp_path / "elsewhere", tmp_path / "reports"
    work.mkdir()
    elsewhere.mkdir()
    (work / "repro.py").write_text(REPRO)
    args = ("--script", str(work / "repro.py"), "--good", "2.3.4", "--bad", "2.4.0", "--python", "3.8")
    done = cli(reports, "bisect", *args, "--backend", "venv", "--no-narrow", "--report")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "runs repro.py on this host" in done.stderr  # the venv backend says so, once
    [log] = (reports / "bisect").glob("*.json")
    report = load_report(log)
    assert report.status is Status.FOUND and (report.last_old, report.first_new) == ("2.3.4", "2.4.0")
    # Where the time went (issue 21): one line at the end, the same numbers in the log and report.
    [line] = [x for x in done.stdout.splitlines() if x.startswith("Time: ")]
    assert line.endswith(" tracing (summed over parallel work)"), line
    assert report.time_spent is not None and report.time_spent[Phase.RUN] >= 2, report.time_spent
    assert report.time_spent[Phase.BUILD] > 0 and report.time_spent[Phase.TRACE] == 0
    assert f", {findings.duration_text(report.time_spent[Phase.RUN])} running" in line, line

    summary = (reports / "summary.md").read_text()
    assert "**Time:** " in summary
    # The same bisection again: everything is stored, so nothing is built or run.
    repeat = cli(reports, "bisect", *args, "--backend", "venv", "--no-narrow")
    assert repeat.returncode == 0, repeat.stdout + repeat.stderr
    assert "Time: 0 s downloading, 0 s building, 0 s running, 0 s tracing" in repeat.stdout, repeat.stdout
    assert "assert np.allclose(grad, exact, atol=1e-5)" in summary  # the script itself
    assert str(tmp_path) not in summary  # no local path anywhere
    commands = re.findall(r"`(tfbisect run [^`]*--script repro\.py[^`]*)`", summary)
    [bad] = [c for c in commands if "--tf 2.4.0" in c]

    # Another folder, only the script saved: the printed command runs there as printed (the
    # stored result is reused through the same reports and cache).
    (elsewhere / "repro.py").write_text(REPRO)
    words = shlex.split(bad)
    assert words[0] == "tfbisect"
    rerun = subprocess.run(
        [sys.executable, "-m", "tfbisect", "--reports", str(reports), "--cache", str(reports / "cache"),
         *words[1:]],
        cwd=elsewhere, capture_output=True, text=True, check=False, timeout=3600,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "bisect")},
    )  # fmt: skip
    assert rerun.returncode == 1, rerun.stdout + rerun.stderr  # reproduced, as in the summary
    assert "installing" not in rerun.stderr


# Repro scripts as reporters wrote them in real TensorFlow issues, each with the boundary its
# thread states (checked by hand on real TF: 2.4.4 -> 2.5.0 and 2.6.5 -> 2.7.0).
RETRACE = """\
# tensorflow/tensorflow#49463: a tf.function retraces once per tf.random.Generator
import tensorflow as tf

num_traces = 0

@tf.function
def foo(g):
    global num_traces
    num_traces += 1
    return g.normal([])

foo(tf.random.Generator.from_seed(1))
foo(tf.random.Generator.from_seed(2))
assert num_traces == 1, "retraced once per generator: %d traces" % num_traces
"""
TNP_TILE = """\
# tensorflow/tensorflow#50438: 'EagerTensor' object has no attribute 'reshape' (worked in 2.4.1)
import tensorflow.experimental.numpy as tnp

arange = tnp.arange(10, dtype=tnp.float32)
pos_vs = tnp.tile(arange, (4, 10, 1))
print(tnp.transpose(pos_vs, [0, 2, 1]).shape)
"""
PREDICT_UPRANK = """\
# tensorflow/tensorflow#55573: model.predict upranked 1-D input to (N, 1) before 2.7
import numpy as np
import tensorflow as tf

model = tf.keras.Sequential([tf.keras.layers.Lambda(lambda x: x * 2.0)])
out = model.predict(np.arange(8.0))
assert out.shape == (8, 1), "predict no longer upranks 1-D input: %s" % (out.shape,)
"""


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One reports folder and cache for the reporters' scripts: their venvs are built once."""
    return tmp_path_factory.mktemp("reporters")


def bisect_script(shared: Path, name: str, text: str, *args: str) -> tuple[int, str, Path]:
    script = shared / f"{name}.py"
    script.write_text(text)
    done = cli(
        shared / "reports", "bisect", "--script", str(script), *args, "--backend", "venv", "--no-narrow"
    )
    [log] = sorted((shared / "reports" / "bisect").glob(f"*-{name}.script*.json"))[-1:]
    return done.returncode, done.stdout + done.stderr, log


@pytest.mark.parametrize(
    ("name", "text", "args", "answer"),
    [
        ("retrace", RETRACE, ("--good", "2.4.4", "--bad", "2.5.0", "--python", "3.8"), ("2.4.4", "2.5.0")),
        (
            "tnp_tile",
            TNP_TILE,
            (
                "--good",
                "2.4.4",
                "--bad",
                "2.5.0",
                "--python",
                "3.8",
                "--bad-if-raises",
                "AttributeError:reshape",
            ),
            ("2.4.4", "2.5.0"),
        ),
        (
            "predict_uprank",
            PREDICT_UPRANK,
            ("--good", "2.6.5", "--bad", "2.7.1", "--python", "3.9"),
            ("2.6.5", "2.7.0"),
        ),
    ],
)
def test_reporters_scripts_bisect_to_the_boundary_their_issue_states(
    shared: Path, name: str, text: str, args: tuple[str, ...], answer: tuple[str, str]
) -> None:
    code, output, log = bisect_script(shared, name, text, *args)
    assert code == 0, output
    report = load_report(log)
    assert report.status is Status.FOUND and (report.last_old, report.first_new) == answer, output


def test_an_exception_that_is_not_named_the_bug_is_a_failing_end_never_bad(shared: Path) -> None:
    """Without --bad-if-raises, 2.5.0's AttributeError is an error (the newer end fails), not the bug."""
    code, output, log = bisect_script(
        shared, "tnp_tile_unnamed", TNP_TILE, "--good", "2.4.4", "--bad", "2.5.0", "--python", "3.8"
    )
    assert code != 0, output
    report = load_report(log)
    assert report.status is Status.END_FAILS, output
    [newer] = [step for step in report.steps if step.version == "2.5.0"]
    assert newer.outcome is StepOutcome.ERROR and "AttributeError" in newer.summary, newer
