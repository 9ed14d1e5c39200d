"""The flagship proven for real: the old `categorical_crossentropy` put back into a hard-linked
copy of the TF 2.4.0 venv turns the eager plain gradient from mismatch back to match; the cached
venv is byte-identical afterwards, and a repeated narrowing or bisection runs nothing."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from tfbisect.search.bisectlog import load_report
from tfbisect.search.narrowlog import TrialKind

from conftest import cli

pytestmark = pytest.mark.slow
ANSWER = (
    "reverting `tensorflow/python/keras/backend.py:categorical_crossentropy` to 2.3.4 restores the old "
    "behaviour (mismatch → match)"
)


def changed_lines(patch: str) -> list[str]:
    """The lines a patch removes or adds, its headers and context left out."""
    return [line for line in patch.split("\n") if line[:1] in "+-" and not line.startswith(("---", "+++"))]


def venvs_hash(cache: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((cache / "venvs").rglob("*.py")):
        digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


def test_the_flagship_answer_opens_with_the_proven_revert(tmp_path: Path) -> None:
    args = ("--good", "2.3.4", "--bad", "2.4.0", "--probe", "gradient_eager_plain", "--backend", "venv")
    done = cli(tmp_path, "bisect", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    [log] = (tmp_path / "bisect").glob("*.json")
    narrowing = load_report(log).narrowing
    assert narrowing is not None and narrowing.proof is not None
    proof = narrowing.proof
    assert proof.cause == ("tensorflow/python/keras/backend.py:categorical_crossentropy",)
    assert proof.cause_kind is TrialKind.REVERT
    # The patch shown is the minimal one: the `_keras_logits` block put back, not the docstring's
    # changes or the decorator beside it (the whole revert it was shrunk from has them).
    changed = changed_lines(proof.patch)
    assert "-  if hasattr(output, '_keras_logits'):" in changed
    assert "-    output = output._keras_logits  # pylint: disable=protected-access" in changed
    assert not any(
        "channels_last" in line or "0.89" in line or "do_not_generate_docs" in line for line in changed
    )
    assert proof.shrink is not None and proof.shrink.minimal and proof.shrink.kept < proof.shrink.blocks
    assert (
        "channels_last" in proof.shrink.whole_patch
        and "def categorical_crossentropy" in proof.shrink.whole_patch
    )
    assert proof.shrink.documentation >= 1 and proof.shrink.runs <= 3
    shown = cli(tmp_path, "bisect", "log", str(log))
    proof_line = next(line for line in shown.stdout.splitlines() if line.lstrip().startswith("proof:"))
    assert proof_line.split("proof:", 1)[1].strip().startswith(ANSWER)
    # A repeat proves from the stored runs; the cached venvs never changed.
    before = venvs_hash(tmp_path / "cache")
    again = cli(tmp_path, "narrow", str(log))
    assert again.returncode == 0, again.stdout + again.stderr
    repeated = load_report(log).narrowing
    assert repeated is not None and repeated.proof is not None and repeated.proof.runs == 0
    assert repeated.proof.cause == proof.cause and repeated.proof.patch == proof.patch
    assert venvs_hash(tmp_path / "cache") == before
    assert not list((tmp_path / "cache" / "proof-copies").glob("*"))

    # A repeated bisection (a new log, no traces kept beside it) runs nothing at all: the
    # releases' runs, the traced runs, the ranking and the proof's runs are all stored.
    repeat = cli(tmp_path, "bisect", *args)
    assert repeat.returncode == 0, repeat.stdout + repeat.stderr
    newest = max((tmp_path / "bisect").glob("*.json"), key=lambda path: path.stat().st_mtime)
    report = load_report(newest)
    found = report.narrowing
    assert newest != log and report.runs == 0 and found is not None and found.runs == 0
    assert found.trace is not None and found.trace.error is None
    assert (found.trace.runs, found.trace.reused) == (0, 5)  # both probes in both builds, the yardstick
    assert found.proof is not None and found.proof.runs == 0 and found.proof.cause == proof.cause
    assert found.proof.patch == proof.patch and found.proof.shrink is not None
    assert (
        replace(found.proof.shrink, runs=proof.shrink.runs) == proof.shrink and found.proof.shrink.runs == 0
    )
    assert found.suspects == narrowing.suspects
    assert "under the tracer" not in repeat.stderr and "patched (timeout" not in repeat.stderr
