"""Proof by revert: the planner (old text put back by unit), ddmin, the prover's verdicts with
scripted runs, the hard-linked copy (the cached venv byte-identical after), the stored keys and the
proof's log section and words."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tfbisect.core.errors import TraceError
from tfbisect.core.record import RunRecord
from tfbisect.core.spec import EnvSpec
from tfbisect.narrow.proof import (
    WHOLE_FILE,
    OutOfBudget,
    ProofPlan,
    Unit,
    ddmin,
    definitions,
    needed,
    patches,
    proof_of,
    put_back,
    unit_of,
)
from tfbisect.report.findings import note_text, proof_answer, trial_text
from tfbisect.runs.patched import patch_key, venv_copy, venv_root, write_patches
from tfbisect.search.narrowlog import NarrowNote, NoteCode, Proof, Suspect, Trial, TrialKind, Verdict

from conftest import probe_record

OLD = '''"""The loss module."""
import math


def _epsilon():
    return 1e-7


class Loss:
    def __call__(self, x):
        return x

    def name(self):
        return "loss"


def categorical_crossentropy(target, output, from_logits=False):
    output = output / sum(output)
    return -sum(t * math.log(max(o, _epsilon())) for t, o in zip(target, output))


def other():
    return 1
'''

NEW = '''"""The loss module."""
import math


class Loss:
    def __call__(self, x):
        return x * 2

    def name(self):
        return "loss"


def categorical_crossentropy(target, output, from_logits=False):
    if hasattr(output, "_keras_logits"):
        return -sum(t * o for t, o in zip(target, output))
    output = output / sum(output)
    return -sum(t * math.log(max(o, 1e-7)) for t, o in zip(target, output))


def other():
    return 2
'''

PATH = "pkg/losses.py"


def function_text(text: str, name: str) -> str:
    found = definitions(text)
    assert found is not None
    first, last = found[name]
    return "\n".join(text.split("\n")[first - 1 : last])


def test_a_function_goes_back_to_its_old_text_and_nothing_else_changes() -> None:
    patched = put_back(NEW, OLD, ["categorical_crossentropy"])
    assert patched is not None
    assert function_text(patched, "categorical_crossentropy") == function_text(
        OLD, "categorical_crossentropy"
    )
    assert function_text(patched, "other") == function_text(NEW, "other")  # left as it is
    assert function_text(patched, "Loss.__call__") == function_text(NEW, "Loss.__call__")
    compile(patched, PATH, "exec")


def test_a_method_goes_back_inside_its_class() -> None:
    patched = put_back(NEW, OLD, ["Loss.__call__"])
    assert patched is not None
    assert "return x\n" in patched and "x * 2" not in patched
    assert function_text(patched, "Loss.name") == function_text(NEW, "Loss.name")


def test_a_removed_helper_is_what_the_old_caller_needs_and_goes_back_with_it() -> None:
    assert needed(NEW, OLD, "categorical_crossentropy") == ["_epsilon"]
    patched = put_back(NEW, OLD, ["categorical_crossentropy", "_epsilon"])
    assert patched is not None
    namespace: dict[str, object] = {}
    exec(compile(patched, PATH, "exec"), namespace)  # the old caller finds its helper
    assert "_epsilon" in namespace


def test_the_whole_file_and_the_units_of_suspects() -> None:
    assert put_back(NEW, OLD, [WHOLE_FILE]) == OLD
    suspect = Suspect(PATH, "f.<locals>.g", 1.0, 1, 0, (1,), (1,), False, None, None, "")
    assert unit_of(suspect) == Unit(PATH, "f")
    assert unit_of(replace(suspect, function="<module>")) == Unit(PATH, WHOLE_FILE)
    assert unit_of(replace(suspect, function="Loss.name")).label == f"{PATH}:Loss.name"


def test_patches_refuse_a_unit_whose_file_one_side_lacks() -> None:
    assert patches([Unit("pkg/gone.py", "f")], {PATH: NEW}, {PATH: OLD}) is None
    assert patches([Unit(PATH, "nowhere")], {PATH: NEW}, {PATH: OLD}) is None
    assert put_back("def (:\n", OLD, ["other"]) is None  # the base does not parse


# ---- ddmin -------------------------------------------------------------------------------------


def test_ddmin_finds_a_minimal_set_that_flips() -> None:
    asked: list[frozenset[int]] = []

    def flips(items: Sequence[int]) -> bool:
        asked.append(frozenset(items))
        return {3, 7} <= set(items)

    assert sorted(ddmin(list(range(10)), flips) or []) == [3, 7]
    assert ddmin(list(range(10)), lambda items: False) is None
    assert ddmin([5], lambda items: 5 in items) == [5]


def test_ddmin_stops_at_the_budget_with_the_smallest_set_known_to_flip() -> None:
    calls = 0

    def flips(items: Sequence[int]) -> bool:
        nonlocal calls
        calls += 1
        if calls > 8:  # all, two halves, four quarters, one complement
            raise OutOfBudget()
        return {3, 7} <= set(items)

    found = ddmin(list(range(10)), flips)
    assert found is not None and {3, 7} <= set(found) and len(found) < 10


# ---- the prover, with scripted runs ------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    record: RunRecord
    reused: bool = False


def record(spec: EnvSpec, probe: str, outcome: str, error: tuple[str, str] | None = None) -> RunRecord:
    return probe_record(spec, "flagship", probe, "gradient", outcome, error)


OLD_SPEC, NEW_SPEC = EnvSpec("2.3.4", "3.8"), EnvSpec("2.4.0", "3.8")


def plan(
    units: Sequence[Unit], budget: int = 30, *, path: str = PATH, old: str = OLD, new: str = NEW
) -> ProofPlan:
    """The flagship probe's proof plan over one file `path` (its two versions' texts `old`, `new`)."""
    return ProofPlan(
        probe="gradient_eager_plain",
        old_spec=OLD_SPEC,
        new_spec=NEW_SPEC,
        old_state="match",
        new_state="mismatch",
        old_sources={path: old},
        new_sources={path: new},
        units=tuple(units),
        files=(path,),
        budget=budget,
    )


def scripted(decide: dict[str, str]) -> tuple[list[Mapping[str, str]], object]:
    """A run that answers by what the patched file holds: `decide` maps a text in it to the state."""
    seen: list[Mapping[str, str]] = []

    def run(spec: EnvSpec, probe: str, patched: Mapping[str, str]) -> Done:
        seen.append(patched)
        text = patched[PATH]
        for marker, outcome in decide.items():
            if marker in text:
                if outcome.startswith("error:"):
                    kind, message = outcome[6:].split(":", 1)
                    return Done(record(spec, probe, "error", (kind.strip(), message.strip())))
                return Done(record(spec, probe, outcome))
        return Done(record(spec, probe, "mismatch" if spec is NEW_SPEC else "match"))

    return seen, run


def test_the_unit_whose_revert_flips_is_the_cause_with_its_patch() -> None:
    def run(spec: EnvSpec, probe: str, patched: Mapping[str, str]) -> Done:
        text = patched[PATH]
        old_loss = "_keras_logits" not in text
        if spec is NEW_SPEC:
            return Done(record(spec, probe, "match" if old_loss else "mismatch"))
        return Done(record(spec, probe, "mismatch" if not old_loss else "match"))

    units = [Unit(PATH, "other"), Unit(PATH, "categorical_crossentropy"), Unit(PATH, "_epsilon")]
    # Alone, the old loss calls `_epsilon`, which the new file lacks: a NameError would say so;
    # here the fake run only looks at the loss's text, so the revert flips alone.
    found = proof_of(plan(units), run, lambda text: None, ("v2.3.4", "v2.4.0"))
    assert found.proven and found.cause == (f"{PATH}:categorical_crossentropy",)
    assert found.sufficient and found.cause_kind is TrialKind.REVERT
    # The unit alone, it in the old environment, then its first changed block alone (the shrink).
    assert [t.verdict for t in found.trials] == [
        Verdict.NO_FLIP,
        Verdict.FLIPPED,
        Verdict.FLIPPED,
        Verdict.FLIPPED,
    ]
    assert found.trials[-1].kind is TrialKind.SHRINK
    assert '-    if hasattr(output, "_keras_logits"):' in found.patch
    assert "_epsilon" not in found.patch  # the other changed block: not needed
    assert found.patch.startswith(f"--- a/{PATH}\tv2.4.0\n+++ b/{PATH}\tv2.3.4")
    assert found.shrink is not None and "_epsilon" in found.shrink.whole_patch
    assert (found.shrink.blocks, found.shrink.kept, found.shrink.runs, found.shrink.minimal) == (
        2,
        1,
        1,
        True,
    )
    assert found.runs == 4
    words = proof_answer(found)
    assert words.startswith(
        f"reverting `{PATH}:categorical_crossentropy` to 2.3.4 restores the old behaviour (mismatch → match)"
    )
    assert "did not flip" in trial_text(found.trials[0])


def test_a_revert_that_fails_with_a_name_error_is_inconclusive_then_tried_with_its_helper() -> None:
    def run(spec: EnvSpec, probe: str, patched: Mapping[str, str]) -> Done:
        text = patched[PATH]
        if "_epsilon()" in text and "def _epsilon" not in text:
            return Done(record(spec, probe, "error", ("NameError", "name '_epsilon' is not defined")))
        old_loss = "_keras_logits" not in text
        return Done(record(spec, probe, "match" if old_loss else "mismatch"))

    found = proof_of(plan([Unit(PATH, "categorical_crossentropy")]), run, lambda t: None, ("a", "b"))
    assert found.cause == (f"{PATH}:categorical_crossentropy", f"{PATH}:_epsilon")
    first = found.trials[0]
    assert first.verdict is Verdict.INCONCLUSIVE
    assert trial_text(first).endswith(
        f"inconclusive: reverting {PATH}:categorical_crossentropy alone fails with NameError: "
        "name '_epsilon' is not defined"
    )


def test_new_text_that_fails_in_the_old_environment_says_applying_not_reverting() -> None:
    unit = f"{PATH}:categorical_crossentropy"
    applied = Trial(TrialKind.APPLY, (unit,), "2.3.4", "skip", Verdict.INCONCLUSIVE)
    assert trial_text(applied) == (
        f"applying the new {unit} in 2.3.4: inconclusive: applying {unit} alone fails with skip"
    )


def test_when_no_unit_flips_alone_ddmin_finds_the_pair_and_nothing_flipped_is_said_plainly() -> None:
    def run(spec: EnvSpec, probe: str, patched: Mapping[str, str]) -> Done:
        text = patched[PATH]
        both = "return x\n" in text and "return 1\n" in text
        return Done(record(spec, probe, "match" if (both == (spec is NEW_SPEC)) else "mismatch"))

    units = [Unit(PATH, "Loss.__call__"), Unit(PATH, "categorical_crossentropy"), Unit(PATH, "other")]
    found = proof_of(plan(units), run, lambda t: None, ("a", "b"))
    assert set(found.cause) == {f"{PATH}:Loss.__call__", f"{PATH}:other"}

    never = proof_of(
        plan(units), lambda spec, probe, patched: Done(record(spec, probe, "mismatch")), print, ("a", "b")
    )
    assert not never.proven and never.runs <= 30
    assert proof_answer(never).startswith("nothing flipped:")


def test_the_budget_bounds_the_runs_and_stored_runs_are_free() -> None:
    units = [Unit(PATH, "Loss.__call__"), Unit(PATH, "categorical_crossentropy"), Unit(PATH, "other")]
    always = proof_of(
        plan(units, budget=2), lambda s, p, x: Done(record(s, p, "mismatch")), print, ("a", "b")
    )
    assert always.runs == 2 and len(always.trials) == 2 and not always.proven
    stored = proof_of(
        plan(units, budget=2), lambda s, p, x: Done(record(s, p, "mismatch"), True), print, ("a", "b")
    )
    assert stored.runs == 0 and len(stored.trials) > 2


def test_a_backend_that_cannot_copy_ends_the_proof_saying_why() -> None:
    def run(spec: EnvSpec, probe: str, patched: Mapping[str, str]) -> Done:
        raise TraceError("The proof is not supported yet for this backend.", "use venvs.")

    found = proof_of(plan([Unit(PATH, "other")]), run, print, ("a", "b"))
    assert not found.proven and found.skipped and "not supported yet" in found.skipped
    assert proof_answer(found).startswith("nothing was proven: The proof is not supported yet")


# ---- the copy, never an edit -------------------------------------------------------------------


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_symlink():
            digest.update(str(path.readlink()).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def fake_venv(root: Path) -> Path:
    site = root / "lib" / "python3.8" / "site-packages"
    (site / "pkg" / "__pycache__").mkdir(parents=True)
    (site / "pkg" / "losses.py").write_text(NEW)
    (site / "pkg" / "__pycache__" / "losses.cpython-38.pyc").write_bytes(b"old bytecode")
    (site / "pkg" / "__pycache__" / "other.cpython-38.pyc").write_bytes(b"kept")
    (root / "bin").mkdir()
    (root / "bin" / "python").symlink_to("/usr/bin/python3")
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return site


def test_a_patched_copy_leaves_the_cached_venv_byte_identical(tmp_path: Path) -> None:
    venv = tmp_path / "venvs" / "tf-2.4.0-py3.8-abc"
    site = fake_venv(venv)
    before = tree_hash(venv)
    assert venv_root(venv / "bin" / "python") == venv
    under = tmp_path / "copies"
    with venv_copy(venv, under) as copy:
        copied = copy / "lib" / "python3.8" / "site-packages" / "pkg"
        assert (copied / "losses.py").stat().st_ino == (site / "pkg" / "losses.py").stat().st_ino  # linked
        write_patches(copy, {PATH: OLD})
        assert (copied / "losses.py").read_text() == OLD
        assert (copied / "losses.py").stat().st_ino != (site / "pkg" / "losses.py").stat().st_ino
        assert not (copied / "__pycache__" / "losses.cpython-38.pyc").exists()  # no old bytecode
        assert (copied / "__pycache__" / "other.cpython-38.pyc").exists()
        with pytest.raises(TraceError):
            write_patches(copy, {"../../../../escape.py": "x"})
    assert tree_hash(venv) == before
    assert list(under.iterdir()) == []  # the copy is gone


def test_only_a_venv_is_copied_and_anything_else_but_an_image_is_refused() -> None:
    with pytest.raises(TraceError, match=r"proof runs need a venv .* or a Docker image"):
        venv_root("an-image:tag")
    with pytest.raises(TraceError):
        venv_root(Path("/nowhere/bin/python"))


def test_a_patched_run_is_stored_under_a_key_of_everything_it_depends_on() -> None:
    spec = EnvSpec("2.4.0", "3.8")
    change = {"patches": {PATH: OLD}, "pins": {}}
    key = patch_key(spec, "lock", "sha", "probe", change)
    assert key == patch_key(spec, "lock", "sha", "probe", {"pins": {}, "patches": {PATH: OLD}})
    others = {
        patch_key(EnvSpec("2.3.4", "3.8"), "lock", "sha", "probe", change),
        patch_key(spec, "lock2", "sha", "probe", change),
        patch_key(spec, "lock", "sha2", "probe", change),
        patch_key(spec, "lock", "sha", "probe2", change),
        patch_key(spec, "lock", "sha", "probe", {"patches": {PATH: NEW}, "pins": {}}),
        patch_key(spec, "lock", "sha", "probe", {"patches": {}, "pins": {"keras": "2.6.0"}}),
    }
    assert key not in others and len(others) == 6


# ---- the log and the words ---------------------------------------------------------------------


def test_a_proof_round_trips_and_an_edited_one_reads_defensively() -> None:
    units = [Unit(PATH, "categorical_crossentropy")]

    def run(spec: EnvSpec, probe: str, patched: Mapping[str, str]) -> Done:
        flipped = "_keras_logits" not in patched[PATH]
        return Done(record(spec, probe, "match" if flipped == (spec is NEW_SPEC) else "mismatch"))

    found = replace(
        proof_of(plan(units), run, print, ("a", "b")),
        old_link="https://github.com/tensorflow/tensorflow/blob/v2.3.4/x.py#L1",
    )
    assert Proof.read(found.to_dict()) == found
    edited = {**found.to_dict(), "old_link": "javascript:alert(1)", "trials": [{"kind": "?"}, 3], "runs": -1}
    back = Proof.read(edited)
    assert back is not None and back.old_link is None and back.trials == () and back.runs == 0
    assert Proof.read("nonsense") is None


def test_the_dependency_changes_are_said_to_run_backwards_in_time() -> None:
    note = NarrowNote.of(
        NoteCode.BACKWARDS_IN_TIME,
        old="2.3.4",
        old_uploaded="2021-08-11",
        new="2.4.0",
        new_uploaded="2020-12-14",
    )
    assert note_text(note) == (
        "the last good release 2.3.4 (uploaded 2021-08-11) was published after the first bad one 2.4.0 "
        "(uploaded 2020-12-14): the dependency changes below run backwards in time"
    )
