"""Proof by transplant, the pure logic with scripted runs: which packages are candidates and in
what order, the verdicts (a flip, no flip, not testable, inconclusive), the budget, stored runs,
the words of the answer, the pins' stored keys, and a pin that did not install kept for a repeat."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from tfbisect.core.errors import TraceError
from tfbisect.core.outcome import Outcome
from tfbisect.core.record import RunRecord
from tfbisect.core.spec import EnvSpec
from tfbisect.narrow.proof import with_transplants
from tfbisect.narrow.transplant import (
    Candidate,
    NotInstalled,
    Proving,
    TransplantPlan,
    TransplantStage,
    candidates,
    transplant_proof,
    wheel_is_pure,
)
from tfbisect.report.findings import proof_answer, trial_text
from tfbisect.runs.patched import PatchedRuns, patch_key
from tfbisect.search.narrowlog import (
    DependencyChange,
    Narrowing,
    Proof,
    Suspect,
    Suspects,
    TraceSummary,
    Trial,
    TrialKind,
    Verdict,
)

from conftest import probe_record

OLD_SPEC, NEW_SPEC = EnvSpec("2.7.0rc0", "3.9"), EnvSpec("2.7.0rc1", "3.9")
PROBE = "predict_uprank"
OLD_STATE, NEW_STATE = "not_reproduced", "reproduced"

CHANGES = [
    DependencyChange("keras", "2.6.0", "2.7.0", True),
    DependencyChange("numpy", "1.19.5", "1.21.4", True),
    DependencyChange("tensorflow-cpu", "2.7.0rc0", "2.7.0rc1", True),  # the build itself
    DependencyChange("tensorflow-io-gcs-filesystem", "0.21.0", "0.22.0", True),  # made with it
    DependencyChange("tensorflow-intel", "2.7.0rc0", "2.7.0rc1", True),
    DependencyChange("libclang", None, "12.0.0", True),  # new at the first bad end
    DependencyChange("wrapt", "1.12.1", "1.13.3", False),  # the probe never imported it
    DependencyChange("tensorflow-estimator", "2.6.0", "2.7.0", True),
]
PURE = {"keras": True, "tensorflow-estimator": True, "numpy": False}


def record(spec: EnvSpec, outcome: str, error: tuple[str, str] | None = None) -> RunRecord:
    return probe_record(spec, "predict_uprank.script", PROBE, "script", outcome, error)


@dataclass(frozen=True)
class Done:
    record: RunRecord
    reused: bool = False


def plan(budget: int = 30) -> TransplantPlan:
    return TransplantPlan(PROBE, OLD_SPEC, NEW_SPEC, OLD_STATE, NEW_STATE, budget)


def keras_decides(
    seen: list[tuple[str, Mapping[str, str]]], reused: bool = False
) -> object:  # a RunPinned where the outcome follows the keras version alone
    def run(spec: EnvSpec, probe: str, pins: Mapping[str, str]) -> Done | str:
        seen.append((spec.tf_version, dict(pins)))
        keras = pins.get("keras", "2.7.0" if spec is NEW_SPEC else "2.6.0")
        return Done(record(spec, NEW_STATE if keras == "2.7.0" else OLD_STATE), reused)

    return run


# ---- which packages, in what order --------------------------------------------------------------


def test_candidates_are_the_imported_changed_packages_tf_s_own_left_out_pure_python_first() -> None:
    found, one_sided = candidates(CHANGES, PURE.get, ran={"keras", "tensorflow"})
    assert [c.name for c in found] == ["keras", "tensorflow-estimator", "numpy"]
    assert found[0] == Candidate("keras", "2.6.0", "2.7.0", pure=True)
    assert [c.name for c in one_sided] == ["libclang"]
    # Without wheels to read, the packages whose code the probe ran come first, then by name.
    unknown, _ = candidates(CHANGES, lambda name: None, ran={"tensorflow_estimator"})
    assert [c.name for c in unknown] == ["tensorflow-estimator", "keras", "numpy"]


def test_a_candidate_names_its_versions_in_the_direction_of_the_trial() -> None:
    keras = Candidate("keras", "2.6.0", "2.7.0")
    assert keras.label(TrialKind.TRANSPLANT_OLD) == "keras 2.7.0 → 2.6.0"
    assert keras.label(TrialKind.TRANSPLANT_NEW) == "keras 2.6.0 → 2.7.0"


def dist_info(site: Path, name: str, wheel: str) -> None:
    info = site / f"{name}.dist-info"
    info.mkdir(parents=True)
    (info / "WHEEL").write_text(wheel)


def test_a_pure_python_wheel_is_told_by_its_wheel_file(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    dist_info(
        site,
        "keras-2.7.0",
        "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py2-none-any\nTag: py3-none-any\n",
    )
    dist_info(site, "numpy-1.21.4", "Root-Is-Purelib: false\nTag: cp39-cp39-manylinux_2_12_x86_64\n")
    dist_info(site, "tensorflow_estimator-2.7.0", "Root-Is-Purelib: true\nTag: py2.py3-none-any\n")
    assert wheel_is_pure([tmp_path / "missing", site], "keras") is True
    assert wheel_is_pure([site], "numpy") is False
    assert wheel_is_pure([site], "tensorflow-estimator") is True  # names compared canonically
    assert wheel_is_pure([site], "wrapt") is None


# ---- the verdicts, with scripted runs ------------------------------------------------------------


def test_the_package_whose_old_version_flips_the_probe_is_the_proven_cause() -> None:
    seen: list[tuple[str, Mapping[str, str]]] = []
    pure = {"keras": False, "tensorflow-estimator": True, "numpy": False}.get
    found = transplant_proof(plan(), keras_decides(seen), CHANGES, pure)  # type: ignore[arg-type]
    # tensorflow-estimator first (pure) alone, then the rest together (a flip), then each alone:
    # keras flips, and its new version turns the old environment too; numpy alone is not run.
    assert seen == [
        ("2.7.0rc1", {"tensorflow-estimator": "2.6.0"}),
        ("2.7.0rc1", {"keras": "2.6.0", "numpy": "1.19.5"}),
        ("2.7.0rc1", {"keras": "2.6.0"}),
        ("2.7.0rc0", {"keras": "2.7.0"}),
    ]
    assert found.proven and found.cause == ("keras 2.7.0 → 2.6.0",)
    assert found.cause_kind is TrialKind.TRANSPLANT_OLD and found.sufficient and found.runs == 4
    assert [t.verdict for t in found.trials] == [
        Verdict.NOT_TESTABLE,  # libclang: installed at one end only, not run
        Verdict.NO_FLIP,
        Verdict.FLIPPED,  # keras and numpy together
        Verdict.FLIPPED,
        Verdict.FLIPPED,
    ]
    assert trial_text(found.trials[2]) == (
        "keras 2.7.0 → 2.6.0, numpy 1.21.4 → 1.19.5 in 2.7.0rc1: flipped (not_reproduced)"
    )
    assert proof_answer(found) == (
        "keras 2.7.0 → 2.6.0 in the 2.7.0rc1 environment restores the old behaviour "
        "(reproduced → not_reproduced): the change came with keras; keras 2.6.0 → 2.7.0 in 2.7.0rc0 "
        "turns it too (not_reproduced → reproduced): confirmed necessary and sufficient (4 runs)"
    )
    assert trial_text(found.trials[0]) == (
        "libclang 12.0.0 in 2.7.0rc1: not testable: libclang is not installed in the 2.7.0rc0 environment"
    )
    assert trial_text(found.trials[1]) == (
        "tensorflow-estimator 2.7.0 → 2.6.0 in 2.7.0rc1: did not flip (reproduced)"
    )


def test_a_pin_that_does_not_install_or_import_is_not_testable_and_never_a_flip() -> None:
    def run(spec: EnvSpec, probe: str, pins: Mapping[str, str]) -> Done | NotInstalled:
        if "numpy" in pins:
            return NotInstalled("numpy==1.19.5 did not install: no wheel for cp311")
        if "tensorflow-estimator" in pins:
            return Done(
                record(spec, "error", ("ModuleNotFoundError", "No module named 'tensorflow_estimator.x'"))
            )
        return Done(record(spec, "error", ("ValueError", "bad shapes")))  # keras: fails otherwise

    found = transplant_proof(plan(), run, CHANGES, PURE.get)
    # keras alone (a run), the other two together (numpy does not install), then each alone.
    # Each install tried counts against the budget, the failed ones too (a copy and uv's time).
    assert not found.proven and found.runs == 4
    assert [len(t.units) for t in found.trials] == [1, 1, 2, 1, 1]  # libclang first, not run
    by_label = {t.units[0]: t for t in found.trials if len(t.units) == 1}
    estimator = by_label["tensorflow-estimator 2.7.0 → 2.6.0"]
    assert estimator.verdict is Verdict.NOT_TESTABLE
    assert estimator.error == (
        "tensorflow-estimator 2.6.0 does not import there: ModuleNotFoundError: "
        "No module named 'tensorflow_estimator.x'"
    )
    numpy = by_label["numpy 1.21.4 → 1.19.5"]
    assert numpy.verdict is Verdict.NOT_TESTABLE and numpy.outcome == "not installed"
    assert trial_text(numpy) == (
        "numpy 1.21.4 → 1.19.5 in 2.7.0rc1: not testable: numpy==1.19.5 did not install: no wheel for cp311"
    )
    keras = by_label["keras 2.7.0 → 2.6.0"]
    assert keras.verdict is Verdict.INCONCLUSIVE
    assert trial_text(keras) == (
        "keras 2.7.0 → 2.6.0 in 2.7.0rc1: inconclusive: with keras 2.7.0 → 2.6.0 the probe fails with "
        "ValueError: bad shapes"
    )
    assert proof_answer(found).startswith(
        "nothing flipped: putting back the changed packages' old versions and the old code of the suspects"
    )


def test_a_backend_that_cannot_copy_ends_the_transplants_saying_why() -> None:
    def run(spec: EnvSpec, probe: str, pins: Mapping[str, str]) -> Done:
        raise TraceError(
            "This environment cannot be proven in: not supported yet.", "narrow with --backend venv."
        )

    found = transplant_proof(plan(), run, CHANGES, PURE.get)
    assert not found.proven and found.runs == 0 and found.skipped is not None
    assert proof_answer(found) == (
        "nothing was proven: This environment cannot be proven in: not supported yet. narrow with --backend venv."
    )


def test_the_rest_together_spare_a_run_each_and_the_budget_bounds_the_transplants() -> None:
    never = lambda spec, probe, pins: Done(record(spec, NEW_STATE if spec is NEW_SPEC else OLD_STATE))  # noqa: E731
    cheap = transplant_proof(plan(), never, CHANGES, PURE.get)
    assert cheap.runs == 2  # keras alone, then tensorflow-estimator and numpy together: no flip, done
    assert [t.units for t in cheap.trials[1:]] == [
        ("keras 2.7.0 → 2.6.0",),
        ("tensorflow-estimator 2.7.0 → 2.6.0", "numpy 1.21.4 → 1.19.5"),
    ]
    spent = transplant_proof(plan(budget=1), never, CHANGES, PURE.get)
    assert spent.runs == 1 and len([t for t in spent.trials if t.outcome != "not run"]) == 1
    seen: list[tuple[str, Mapping[str, str]]] = []
    stored = transplant_proof(plan(budget=0), keras_decides(seen, reused=True), CHANGES, PURE.get)  # type: ignore[arg-type]
    # Budget 0 refuses the first run outright; stored results are only reached with budget left.
    assert stored.runs == 0 and not stored.proven and not seen
    again = transplant_proof(plan(budget=1), keras_decides(seen, reused=True), CHANGES, PURE.get)  # type: ignore[arg-type]
    assert again.proven and again.runs == 0 and all(t.reused for t in again.trials if t.outcome != "not run")


def test_the_stage_needs_a_state_at_both_ends_and_something_to_transplant() -> None:
    ran: list[str] = []

    def run(spec: EnvSpec, probe: str, pins: Mapping[str, str]) -> Done:
        ran.append(spec.tf_version)
        return Done(record(spec, OLD_STATE if pins.get("keras") == "2.6.0" else NEW_STATE))

    ends = (record(OLD_SPEC, OLD_STATE), record(NEW_SPEC, NEW_STATE))
    stage = TransplantStage(run, 30, lambda text: None, ends, (OLD_SPEC, NEW_SPEC))
    nothing = [DependencyChange("wrapt", "1.12.1", "1.13.3", True)]
    assert stage.prove(PROBE, nothing[:0], lambda spec: [], ()) is None
    found = stage.prove(PROBE, CHANGES[:1], lambda spec: [], ())
    assert found is not None and found.cause == ("keras 2.7.0 → 2.6.0",) and ran == ["2.7.0rc1", "2.7.0rc0"]
    skipped = SimpleNamespace(outcome=Outcome.SKIP)
    unjudged = TransplantStage(run, 30, print, (skipped, ends[1]), (OLD_SPEC, NEW_SPEC))  # type: ignore[arg-type]
    assert unjudged.prove(PROBE, CHANGES, lambda spec: [], ()) is None


def test_the_code_reverts_after_the_transplants_make_one_proof() -> None:
    trial = Trial(TrialKind.TRANSPLANT_OLD, ("keras 2.7.0 → 2.6.0",), "2.7.0rc1", NEW_STATE, Verdict.NO_FLIP)
    transplants = Proof(PROBE, "2.7.0rc0", "2.7.0rc1", OLD_STATE, NEW_STATE, (trial,), runs=2, budget=30)
    revert = replace_trial = Trial(
        TrialKind.REVERT, ("keras/x.py:f",), "2.7.0rc1", NEW_STATE, Verdict.NO_FLIP
    )
    reverts = Proof(PROBE, "2.7.0rc0", "2.7.0rc1", OLD_STATE, NEW_STATE, (replace_trial,), runs=5, budget=28)
    both = with_transplants(transplants, reverts)
    assert both.trials == (trial, revert) and both.runs == 7 and both.budget == 30
    assert with_transplants(None, reverts) is reverts
    assert Proof.read(both.to_dict()) == both  # the log keeps both kinds


# ---- the stored runs ------------------------------------------------------------------------------


def test_pins_are_part_of_the_stored_key_and_a_failed_install_is_kept_for_a_repeat(tmp_path: Path) -> None:
    def key(pins: dict[str, str]) -> str:
        hashes = {name: ["a" * 64] for name in pins}
        return patch_key(NEW_SPEC, "l" * 64, "s" * 64, PROBE, {"patches": {}, "pins": pins, "hashes": hashes})

    assert key({"keras": "2.6.0"}) == key({"keras": "2.6.0"})
    assert len({key({}), key({"keras": "2.6.0"}), key({"keras": "2.5.0"})}) == 3
    runner = SimpleNamespace(settings=SimpleNamespace(reports_dir=tmp_path, force=False))
    runs = PatchedRuns(runner)  # type: ignore[arg-type]
    scenario = SimpleNamespace(slug="predict_uprank.script")
    assert runs.not_installed(scenario, key({"numpy": "1.0"})) is None  # type: ignore[arg-type]
    runs.keep_not_installed(scenario, key({"numpy": "1.0"}), "numpy==1.0 did not install: no wheel")  # type: ignore[arg-type]
    assert runs.not_installed(scenario, key({"numpy": "1.0"})) == "numpy==1.0 did not install: no wheel"  # type: ignore[arg-type]
    assert runs.stored(scenario, key({"numpy": "1.0"})) is None  # type: ignore[arg-type]


# ---- both steps: the packages first, then the code with what the budget has left --------------

KERAS_FILE = "keras/layers/core.py"


def narrowing_with_suspects() -> Narrowing:
    found = Narrowing(release_range=("2.6.5", "2.7.0"))
    found.trace = TraceSummary(PROBE, None, "2.7.0rc0", "2.7.0rc1", {}, None, ("keras",))
    found.dependencies = [CHANGES[0], CHANGES[1]]
    suspect = Suspect(KERAS_FILE, "Lambda.call", 1.0, 1, 0, (1,), (1,), False, None, None, "")
    found.suspects = Suspects.of((suspect,), 1, 1, 1, ())
    return found


def proving(run_pinned: object, patched: list[int], budget: int = 30) -> Proving:
    def run_patched(spec: EnvSpec, probe: str, patches: Mapping[str, str]) -> Done:
        patched.append(len(patches))
        return Done(record(spec, NEW_STATE if spec is NEW_SPEC else OLD_STATE))

    ends = (record(OLD_SPEC, OLD_STATE), record(NEW_SPEC, NEW_STATE))
    return Proving(run_pinned, run_patched, (10, budget), print, ends, (OLD_SPEC, NEW_SPEC))  # type: ignore[arg-type]


def test_a_package_that_flips_is_the_answer_and_no_code_is_put_back() -> None:
    seen: list[tuple[str, Mapping[str, str]]] = []
    patched: list[int] = []
    narrowing = narrowing_with_suspects()
    both = proving(keras_decides(seen), patched)
    assert both.transplant(narrowing, lambda spec: [], {f"{KERAS_FILE}"})
    sources = ({KERAS_FILE: "def f():\n    return 1\n"}, {KERAS_FILE: "def f():\n    return 2\n"})
    assert not both.revert(narrowing, {KERAS_FILE}, sources) and not patched
    assert narrowing.proof is not None and narrowing.proof.cause == ("keras 2.7.0 → 2.6.0",)


def test_when_no_package_flips_the_code_is_put_back_within_what_is_left_of_the_budget() -> None:
    never = lambda spec, probe, pins: Done(record(spec, NEW_STATE if spec is NEW_SPEC else OLD_STATE))  # noqa: E731
    patched: list[int] = []
    narrowing = narrowing_with_suspects()
    both = proving(never, patched, budget=3)
    assert both.transplant(narrowing, lambda spec: [], set())
    assert narrowing.proof is not None and narrowing.proof.runs == 2  # keras, numpy
    old = "class Lambda:\n    def call(self):\n        return 1\n"
    new = "class Lambda:\n    def call(self):\n        return 2\n"
    assert both.revert(narrowing, {KERAS_FILE}, ({KERAS_FILE: old}, {KERAS_FILE: new}))
    proof = narrowing.proof
    assert patched == [1]  # one revert: the budget's last run
    assert proof.runs == 3 and proof.budget == 3 and not proof.proven
    assert [t.kind for t in proof.trials] == [TrialKind.TRANSPLANT_OLD] * 2 + [TrialKind.REVERT]
    assert proof_answer(proof).startswith(
        "nothing flipped: putting back the changed packages' old versions and the old code of the suspects "
        "(3 tries, 3 runs of a budget of 3)"
    )
    spent, none = narrowing_with_suspects(), list[int]()  # the transplants took the whole budget
    tight = proving(never, none, budget=2)
    assert tight.transplant(spent, lambda spec: [], set())
    assert tight.revert(spent, {KERAS_FILE}, ({KERAS_FILE: old}, {KERAS_FILE: new}))
    assert not none and spent.proof is not None and spent.proof.runs == 2
