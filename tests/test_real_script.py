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

from tfbisect.search.bisectlog import Status, load_report

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

    summary = (reports / "summary.md").read_text()
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
