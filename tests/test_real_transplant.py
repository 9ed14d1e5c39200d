"""A dependency proven for real (tensorflow/tensorflow#55573): a plain script whose `model.predict`
stopped upranking 1-D input in TF 2.7 is bisected 2.5..2.8 in venvs, narrowed to 2.7.0rc0 (keras
2.6.0) .. 2.7.0rc1 (keras 2.7.0), and keras 2.6.0 put into a hard-linked copy of the 2.7.0rc1 venv
restores the old behaviour: the proven answer names keras.  The cached venvs and uv's cache of the
keras wheels are unchanged after, nothing is left in TMPDIR, and a repeat runs nothing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tfbisect.envs.cache import uv_cache_dir
from tfbisect.search.bisectlog import Status, load_report
from tfbisect.search.narrowlog import TrialKind, Verdict

from conftest import ROOT, cli

pytestmark = [pytest.mark.slow, pytest.mark.network]
SCRIPT = ROOT / "tests" / "data" / "scenarios" / "predict_uprank.py"
ANSWER = (
    "keras 2.7.0 → 2.6.0 in the 2.7.0rc1 environment restores the old behaviour (mismatch → match): "
    "the change came with keras; keras 2.6.0 → 2.7.0 in 2.7.0rc0 turns it too (match → mismatch): "
    "confirmed necessary and sufficient"
)


def tree_state(roots: list[Path]) -> dict[str, str]:
    """Every file's size, inode and mtime under `roots`, with a hash of the bytes of keras' own
    files (what a transplant of keras installs or removes): a write through a link changes it.
    tfbisect's own markers beside a venv's files (its last use) are left out."""
    found: dict[str, str] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_symlink() or not path.is_file() or path.name.startswith((".tfbisect-", ".lock")):
                continue
            info = path.stat()
            found[str(path)] = f"{info.st_size}|{info.st_ino}|{info.st_mtime_ns}"
            if any(part.startswith("keras") for part in path.relative_to(root).parts):
                found[str(path)] += "|" + hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def keras_archives() -> list[Path]:
    """uv's unpacked keras 2.6.0 and 2.7.0 wheels, which the copies' keras files link to."""
    return sorted(p.parent for p in (uv_cache_dir() / "archive-v0").glob("*/keras-2.[67].0.dist-info"))


def test_keras_is_proven_the_cause_of_the_predict_uprank_change(tmp_path: Path) -> None:
    reports, scratch = tmp_path / "reports", tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    args = ("--script", str(SCRIPT), "--good", "2.5", "--bad", "2.8", "--python", "3.9", "--backend", "venv")
    # The bisection and its narrowing first, without the proof: the venvs are then all there.
    done = cli(reports, "bisect", *args, "--prove", "0", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    [log] = (reports / "bisect").glob("*.json")
    report = load_report(log)
    assert report.status is Status.FOUND and (report.last_old, report.first_new) == ("2.6.5", "2.7.0")
    narrowing = report.narrowing
    assert narrowing is not None and narrowing.last_old and narrowing.first_new
    assert (narrowing.last_old.version, narrowing.first_new.version) == ("2.7.0rc0", "2.7.0rc1")
    venvs = sorted((reports / "cache" / "venvs").glob("tf2.7.0rc*"))
    assert len(venvs) == 2 and len(keras_archives()) >= 1
    before = tree_state([*venvs, *keras_archives()])
    # uv's own locks from building the venvs (uv-setuptools-*.lock) stay: the proof adds nothing.
    in_tmp = sorted(scratch.iterdir())

    proved = cli(reports, "narrow", str(log), "--report", env=env)
    assert proved.returncode == 0, proved.stdout + proved.stderr
    proof = load_report(log).narrowing.proof  # type: ignore[union-attr]
    assert proof is not None and proof.cause == ("keras 2.7.0 → 2.6.0",), proved.stdout
    assert proof.cause_kind is TrialKind.TRANSPLANT_OLD and proof.sufficient and proof.runs == 2
    assert [(t.kind, t.verdict) for t in proof.trials] == [
        (TrialKind.TRANSPLANT_OLD, Verdict.FLIPPED),
        (TrialKind.TRANSPLANT_NEW, Verdict.FLIPPED),
    ]  # keras is pure Python and ran: tried first; a flip needs no code revert
    print(next(line for line in proved.stdout.splitlines() if line.startswith("proof:")))
    assert f"proof: {ANSWER} (2 runs)" in proved.stdout
    # The answer first wherever the narrowing is shown.
    shown = cli(reports, "bisect", "log", str(log), env=env)
    assert f"proof: {ANSWER} (2 runs)" in shown.stdout
    assert ANSWER in (reports / "summary.md").read_text()
    assert ANSWER in (reports / "report.html").read_text()
    matrix = json.loads((reports / "matrix.json").read_text())
    assert matrix["bisection"]["narrowing"]["proof_answer"].startswith(ANSWER)

    # A copy, never an edit: the venvs and uv's keras wheels as they were; no copy, nothing in TMPDIR.
    # (uv may unpack a keras wheel it had not yet, the other end's, for the copy: an addition to its
    # cache, not an edit; what was there before must be exactly as it was.)
    after = tree_state([*venvs, *keras_archives()])
    assert {path: after.get(path) for path in before} == before
    assert not [path for path in after if path not in before and not path.startswith(str(uv_cache_dir()))]
    assert not list((reports / "cache" / "proof-copies").glob("*"))
    assert sorted(scratch.iterdir()) == in_tmp
    # A repeat proves from the stored runs.
    again = cli(reports, "narrow", str(log), env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    repeated = load_report(log).narrowing
    assert repeated is not None and repeated.proof is not None
    assert repeated.proof.runs == 0 and repeated.proof.cause == proof.cause
    assert all(t.reused for t in repeated.proof.trials)
