"""Shrinking a proven revert to its minimal patch: the changed blocks (documentation-only ones
marked), a subset applied, and the prover's ddmin over them with scripted runs (pure logic: the
oracle is a fake; tests/test_real_proof.py shrinks the flagship's real revert)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

from test_proof import NEW_SPEC, Done, record
from test_proof import plan as proof_plan
from tfbisect.core.spec import EnvSpec
from tfbisect.narrow.proof import ProofPlan, RunPatched, Unit, ddmin, proof_of
from tfbisect.narrow.shrink import Change, apply, changes, compile_error, labels
from tfbisect.report.findings import shrink_text, trial_text
from tfbisect.search.narrowlog import Proof, TrialKind, Verdict

PATH = "pkg/backend.py"

# The flagship's shape: the old loss has another docstring, no decorator, no `_keras_logits` block.
OLD = '''"""Backend."""
import ops


@export
def categorical_crossentropy(target, output, from_logits=False):
    """Categorical crossentropy.

    format `channels_last', and `axis=1`
    """
    target = ops.convert(target)
    target.shape.check(output)

    if from_logits:
        return ops.softmax(output)
    return ops.log(output)


def other():
    return 1
'''

NEW = '''"""Backend."""
import ops


@export
@do_not_generate_docs
def categorical_crossentropy(target, output, from_logits=False):
    """Categorical crossentropy.

    format `channels_last`, and `axis=1`
    """
    target = ops.convert_with_dispatch(target)
    target.shape.check(output)
    # Use logits whenever they are available.
    if hasattr(output, '_keras_logits'):
        output = output._keras_logits
        from_logits = True
    if from_logits:
        return ops.softmax(output)
    return ops.log(output)


def other():
    return 2
'''

CAUSE = Unit(PATH, "categorical_crossentropy")


def whole() -> dict[str, str]:
    from tfbisect.narrow.proof import patches

    found = patches([CAUSE], {PATH: NEW}, {PATH: OLD})
    assert found is not None
    return found


def test_the_revert_splits_into_blocks_and_the_documentation_only_ones_are_marked() -> None:
    found = changes({PATH: NEW}, whole())
    shown = [(change.label, change.documentation) for change in found]
    assert shown == [
        (f"{PATH} line 6", False),  # the decorator
        (f"{PATH} line 10", True),  # a docstring line
        (f"{PATH} line 12", False),  # the call
        (f"{PATH} lines 14-17", False),  # the comment and the `_keras_logits` block (a blank back)
    ]
    # All of them give the whole revert back; a subset only its own lines.
    assert apply({PATH: NEW}, found) == whole()
    keras = apply({PATH: NEW}, [found[3]])[PATH]
    assert (
        "_keras_logits" not in keras and "do_not_generate_docs" in keras and "convert_with_dispatch" in keras
    )
    assert apply({PATH: NEW}, []) == {}


def test_a_comment_or_blank_line_alone_is_documentation_and_a_string_that_is_code_is_not() -> None:
    base = 'def f():\n    x = "a"\n    # old\n\n    return x\n'
    comment = changes({PATH: base}, {PATH: base.replace("# old", "# new")})
    blank = changes({PATH: base}, {PATH: base.replace("\n\n", "\n")})
    string = changes({PATH: base}, {PATH: base.replace('"a"', '"b"')})
    assert [c.documentation for c in comment + blank + string] == [True, True, False]
    # A file that does not parse is code throughout: nothing is left out unrun.
    assert [c.documentation for c in changes({PATH: "def (:\n  # a\n"}, {PATH: "def (:\n  # b\n"})] == [False]


def test_a_part_that_does_not_compile_is_named_with_its_line() -> None:
    assert compile_error({PATH: "x = 1\n"}) is None
    error = compile_error({PATH: "def f():\nreturn 1\n"})
    assert error is not None and error.startswith("IndentationError: ") and f"({PATH}, line 2)" in error
    # An old escape ("\\d" in a plain string) compiles, and its warning never reaches the terminal.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compile_error({PATH: 'pattern = "\\d+"\n'}) is None


def test_a_try_names_its_first_blocks_and_counts_the_rest() -> None:
    many = [Change(PATH, i, i + 1, ()) for i in range(15)]
    named = labels(many)
    assert len(named) == 13 and named[0] == f"{PATH} line 1" and named[-1] == "3 more changed blocks"
    assert Change(PATH, 4, 4, ("x",)).label == f"{PATH} after line 4"


def test_ddmin_with_the_whole_set_known_never_runs_it() -> None:
    asked: list[list[int]] = []

    def flips(items: Sequence[int]) -> bool:
        asked.append(list(items))
        return 3 in items

    assert ddmin(list(range(4)), flips, known=True) == [3]
    assert list(range(4)) not in asked
    assert ddmin([1, 2], lambda items: False, known=True) == [1, 2]  # nothing smaller: the whole, unrun


# ---- the prover's shrink, with scripted runs ---------------------------------------------------


def plan(budget: int = 30, old: str = OLD, new: str = NEW, unit: Unit = CAUSE) -> ProofPlan:
    return proof_plan((unit,), budget, path=PATH, old=old, new=new)


def oracle(restores: str) -> tuple[list[Mapping[str, str]], RunPatched]:
    """A run where the old outcome returns when the text `restores` is gone from the patched file
    (in the new environment), and the new outcome comes when it is there (in the old one)."""
    seen: list[Mapping[str, str]] = []

    def run(spec: EnvSpec, probe: str, patched: Mapping[str, str]) -> Done:
        seen.append(patched)
        there = restores in patched[PATH]
        if spec is NEW_SPEC:
            return Done(record(spec, probe, "mismatch" if there else "match"))
        return Done(record(spec, probe, "mismatch" if there else "match"))

    return seen, run


def changed(patch: str) -> str:
    """The lines a patch removes or adds (its context left out)."""
    lines = patch.split("\n")
    return "\n".join(line for line in lines if line[:1] in "+-" and not line.startswith(("---", "+++")))


def prove(run: RunPatched, budget: int = 30) -> Proof:
    return proof_of(plan(budget), run, lambda text: None, ("v2.3.4", "v2.4.0"))


def test_the_minimal_patch_is_the_block_that_matters_without_the_documentation() -> None:
    seen, run = oracle("_keras_logits")
    found = prove(run)
    assert found.cause == (CAUSE.label,) and found.sufficient
    assert "-    if hasattr(output, '_keras_logits'):" in found.patch
    assert "-    # Use logits whenever they are available." in found.patch  # the block's own comment
    for left_out in ("channels_last", "do_not_generate_docs", "convert_with_dispatch"):
        assert left_out not in changed(found.patch)
        assert left_out in changed(found.shrink.whole_patch if found.shrink else "")
    # The docstring line never ran on its own, nor was the revert of the three code blocks run:
    # the decorator and the call (no flip), then the `_keras_logits` block (a flip).
    shrink_runs = seen[2:]
    assert len(shrink_runs) == 2 and all("`channels_last`, and" in text[PATH] for text in shrink_runs)
    assert found.shrink is not None
    assert (found.shrink.blocks, found.shrink.documentation, found.shrink.kept) == (4, 1, 1)
    assert (found.shrink.tries, found.shrink.runs, found.shrink.minimal) == (2, 2, True)
    assert found.runs == 4  # the revert, its new text in the old build, the two parts
    shrinks = [t for t in found.trials if t.kind is TrialKind.SHRINK]
    assert [t.verdict for t in shrinks] == [Verdict.NO_FLIP, Verdict.FLIPPED]
    assert trial_text(shrinks[1]) == f"reverting only {PATH} lines 14-17 in 2.4.0: flipped (match)"
    assert Proof.read(found.to_dict()) == found


def test_a_repeat_with_every_run_stored_makes_no_run_and_the_same_patch() -> None:
    _, run = oracle("_keras_logits")
    first = prove(run)

    def stored(spec: EnvSpec, probe: str, patched: Mapping[str, str]) -> Done:
        done = run(spec, probe, patched)
        return Done(done.record, reused=True)

    again = prove(stored)
    assert again.runs == 0 and again.shrink is not None and again.shrink.runs == 0
    assert again.patch == first.patch and again.shrink.tries == 2


def test_parts_that_do_not_compile_are_inconclusive_and_never_run() -> None:
    # Two blocks, `if` -> `try` and `else` -> `except`: either alone is a syntax error.
    old = "def f(x):\n    try:\n        y = g(x)\n    except ValueError:\n        y = 0\n    return y\n"
    new = "def f(x):\n    if x:\n        y = g(x)\n    else:\n        y = 0\n    return y\n"
    runs: list[Mapping[str, str]] = []

    def run(spec: EnvSpec, probe: str, patched: Mapping[str, str]) -> Done:
        runs.append(patched)
        reverted = "except ValueError" in patched[PATH]
        return Done(record(spec, probe, "match" if reverted == (spec is NEW_SPEC) else "mismatch"))

    found = proof_of(
        plan(old=old, new=new, unit=Unit(PATH, "f")),
        run,
        lambda text: None,
        ("a", "b"),
    )
    assert found.proven and found.shrink is not None
    assert (found.shrink.blocks, found.shrink.kept, found.shrink.runs, found.shrink.minimal) == (
        2,
        2,
        0,
        True,
    )
    assert found.shrink.whole_patch == ""  # nothing was left out: the patch is the whole revert
    broken = [t for t in found.trials if t.kind is TrialKind.SHRINK]
    assert len(broken) == 2 and all(
        t.verdict is Verdict.INCONCLUSIVE and t.outcome == "not run" for t in broken
    )
    assert "the part does not compile, not run" in trial_text(broken[0])
    assert len(runs) == 2  # the revert and the new text in the old build: no part ran
    assert (
        shrink_text(found)
        == f"none of the 2 changed blocks of the revert of `{PATH}:f` can be left out (2 tries, 0 runs)"
    )


def test_when_only_the_documentation_restores_it_the_whole_revert_is_shrunk_with_it() -> None:
    """Code that reads its own docstring (`__doc__`): the code blocks alone do not flip, so the
    documentation is tried too, and the docstring line is the minimal patch."""
    _, run = oracle("`channels_last`, and")
    found = prove(run)
    assert found.shrink is not None and found.shrink.kept == 1 and found.shrink.minimal
    assert "+    format `channels_last', and `axis=1`" in found.patch
    assert "_keras_logits" not in changed(found.patch)


def test_when_the_budget_ends_mid_shrink_the_smallest_patch_proven_so_far_is_shown() -> None:
    # 2 runs prove the cause; 1 more: the decorator and the call together (no flip), then out.
    _, run = oracle("_keras_logits")
    cut = prove(run, budget=3)
    assert cut.runs == 3 and cut.shrink is not None and not cut.shrink.minimal
    assert cut.shrink.kept == cut.shrink.blocks == 4 and cut.shrink.whole_patch == ""
    assert "channels_last" in cut.patch and "_keras_logits" in cut.patch  # the whole revert
    words = shrink_text(cut)
    assert words is not None and words.endswith(
        "this is the smallest patch proven so far, and it may not be minimal"
    )
    # With one more run, the `_keras_logits` block alone has flipped: it stands, still maybe not minimal.
    more = prove(run, budget=4)
    assert more.shrink is not None and more.shrink.kept == 1 and "_keras_logits" in more.patch
    assert more.shrink.minimal  # ddmin was done: one block cannot shrink further


def test_no_run_is_left_for_the_shrink_the_whole_revert_stands_unshrunk() -> None:
    _, run = oracle("_keras_logits")
    found = prove(run, budget=2)
    assert found.runs == 2 and found.shrink is not None and found.shrink.runs == 0
    assert not found.shrink.minimal and found.shrink.kept == 4 and "channels_last" in found.patch
