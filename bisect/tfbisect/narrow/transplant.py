"""Proof by transplant: a package whose version changed between the last old and the first new
environment, and that the failing probe imported, is put back at its old version into a copy of the
first new environment (and at its new version into a copy of the last old one), and the deciding
probe is run again.  A flip to the old outcome says the change came with that package.

The cheapest first (pure-Python wheels, those whose code the probe ran), the likeliest alone, then
the rest together (when all of them at their old versions leave the outcome, none alone would; a
group that flips, or does not install, is then tried one package at a time).  The new version in
the last old environment is tried for the package that flipped (sufficient, as for a code revert).  A pin that does not install, or whose package then does not import, is "not
testable", never a flip; one that timed out or met a network error is inconclusive.  Every install
tried counts against the budget, and at most MAX_CANDIDATES packages are tried.  The runs go through `RunPinned`, a seam (`wiring.runner_seams` makes it
from the runner's patched runs, runs/patched.py); the planning here is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.utils import canonicalize_name

from tfbisect.core.errors import MachineFaultError, TfbisectError
from tfbisect.core.record import RunRecord
from tfbisect.core.resultfile import read_result
from tfbisect.core.spec import EnvSpec
from tfbisect.core.textsafe import one_line
from tfbisect.narrow.dependencies import TF_DISTRIBUTIONS
from tfbisect.narrow.proof import OutOfBudget, PatchedRun, ProofEnds, ProofStage, RunPatched
from tfbisect.search.judge import failure_text, state_of
from tfbisect.search.narrowlog import DependencyChange, Narrowing, Proof, Trial, TrialKind, Verdict

# The TF build's own distributions and the ones made with it, which only ever change with it.
TF_OWN = TF_DISTRIBUTIONS | {
    "intel-tensorflow",
    "tensorflow-aarch64",
    "tensorflow-cpu-aws",
    "tensorflow-gpu",
    "tensorflow-intel",
    "tensorflow-io-gcs-filesystem",
    "tensorflow-macos",
    "tensorflow-rocm",
    "tf-nightly-gpu",
    "tf-nightly-intel",
}
# A transplant that fails with one of these did not import the pinned package: not testable.
_NO_IMPORT = ("ImportError", "ModuleNotFoundError")
# The packages tried at most (each install costs a venv copy and up to 10 minutes of uv).
MAX_CANDIDATES = 12


@dataclass(frozen=True)
class NotInstalled:
    """Why a transplant's pins did not install: `reused`, stored by an earlier try (nothing ran
    now, the budget untouched); `inconclusive`, a timeout or the network (tried again next time)."""

    reason: str
    reused: bool = False
    inconclusive: bool = False


# The deciding probe in a copy of an environment with some packages pinned (name -> version).
RunPinned = Callable[[EnvSpec, str, Mapping[str, str]], PatchedRun | NotInstalled]


@dataclass(frozen=True)
class Candidate:
    """A package to transplant: its versions at both ends, and whether its wheel is pure Python."""

    name: str
    old: str
    new: str
    pure: bool = False

    def label(self, kind: TrialKind) -> str:
        """ "keras 2.7.0 → 2.6.0": what the package goes from and to in that trial's copy."""
        there, wanted = (self.new, self.old) if kind is TrialKind.TRANSPLANT_OLD else (self.old, self.new)
        return f"{self.name} {there} → {wanted}"


def wheel_is_pure(places: Sequence[Path], name: str) -> bool | None:
    """Whether the installed distribution `name` came from a pure-Python wheel (its WHEEL file says
    `Root-Is-Purelib: true` and tags only `-none-any`); None where it cannot be read."""
    wanted = canonicalize_name(name)
    for place in places:
        if not place.is_dir():
            continue
        for info in place.glob("*.dist-info"):
            if canonicalize_name(info.name[: -len(".dist-info")].rsplit("-", 1)[0]) != wanted:
                continue
            # Hostile input (a scenario may have replaced it with a link or a FIFO): read bounded,
            # a regular file only, never through a link.
            raw, _ = read_result(info, "WHEEL")
            if raw is None:
                return None
            text = raw.decode("utf-8", "replace")
            fields = [line.partition(":") for line in text.splitlines()]
            tags = [value.strip() for key, _, value in fields if key.strip() == "Tag"]
            purelib = any(k.strip() == "Root-Is-Purelib" and v.strip() == "true" for k, _, v in fields)
            return purelib and bool(tags) and all(tag.endswith("-none-any") for tag in tags)
    return None


def candidates(
    changes: Sequence[DependencyChange], pure: Callable[[str], bool | None], ran: Collection[str] = ()
) -> tuple[list[Candidate], list[DependencyChange]]:
    """The packages to transplant, cheapest first (pure-Python wheels, then those whose code the
    probe ran, then by name), and the imported ones that cannot be (installed at one end only).
    `ran`: the top-level import names of the files the failing probe ran."""
    found: list[Candidate] = []
    one_sided: list[DependencyChange] = []
    for change in changes:
        if not change.imported or canonicalize_name(change.name) in TF_OWN:
            continue
        if change.old is None or change.new is None:
            one_sided.append(change)
            continue
        found.append(Candidate(change.name, change.old, change.new, pure(change.name) is True))
    module = {c.name: canonicalize_name(c.name).replace("-", "_") for c in found}
    found.sort(key=lambda c: (not c.pure, module[c.name] not in ran, c.name))
    return found, one_sided


@dataclass(frozen=True)
class TransplantPlan(ProofEnds):
    """What the transplants work with: the probe, both ends' environments and states, the budget."""


@dataclass
class Transplanter:
    """Runs the candidates' transplants through `run`; `trials` is the log of each try."""

    plan: TransplantPlan
    run: RunPinned
    say: Callable[[str], None] = lambda text: None
    trials: list[Trial] = field(default_factory=list)
    runs: int = 0

    def verdict(self, kind: TrialKind, group: Sequence[Candidate]) -> Verdict:
        """One transplant: the packages at their other end's versions in a copy of this end's
        environment (one package, or a group put back together).  OutOfBudget when the runs are spent."""
        plan = self.plan
        to_old = kind is TrialKind.TRANSPLANT_OLD
        spec = plan.new_spec if to_old else plan.old_spec
        pins = {c.name: c.old if to_old else c.new for c in group}
        if self.runs >= plan.budget:
            raise OutOfBudget()
        labels = tuple(c.label(kind) for c in group)
        self.say(f"[{spec.label}] transplanting {', '.join(labels)[:300]}")
        done = self.run(spec, plan.probe, pins)
        self.runs += 0 if done.reused else 1  # a failed install costs its copy and uv's time too
        if isinstance(done, NotInstalled):
            verdict = Verdict.INCONCLUSIVE if done.inconclusive else Verdict.NOT_TESTABLE
            reason = one_line(done.reason, 600)
            return self._keep(
                Trial(kind, labels, spec.tf_version, "not installed", verdict, done.reused, reason)
            )
        state = self._state(done.record)
        wanted, before = (plan.old_state, plan.new_state) if to_old else (plan.new_state, plan.old_state)
        error = None
        if state.startswith("error: "):  # the failure as it was raised (the state is normalised)
            error = failure_text(done.record, plan.probe) or state.removeprefix("error: ")
        if state == wanted:
            verdict = Verdict.FLIPPED
        elif state == before:
            verdict = Verdict.NO_FLIP
        elif error is not None and error.startswith(_NO_IMPORT):
            pinned = " ".join(f"{name} {version}" for name, version in sorted(pins.items()))
            verdict, error = Verdict.NOT_TESTABLE, f"{pinned[:200]} does not import there: {error}"
        else:
            verdict = Verdict.INCONCLUSIVE
        return self._keep(Trial(kind, labels, spec.tf_version, state, verdict, done.reused, error))

    def _state(self, record: RunRecord) -> str:
        found = state_of(record, self.plan.probe)
        return found.name if found is not None else "skip"

    def _keep(self, trial: Trial) -> Verdict:
        self.trials.append(trial)
        return trial.verdict

    def transplant(self, found: Sequence[Candidate]) -> tuple[Candidate, bool] | None:
        """The first package whose old version alone restores the old outcome in the new
        environment, and whether its new version alone turns the old environment too (sufficient).

        The likeliest first, alone; then the rest all together: when all of them at their old
        versions leave the outcome as it is, none alone is tried (one run instead of one each);
        otherwise (a flip, or a group that does not install) each alone, in order."""
        try:
            for index, candidate in enumerate(found):
                rest = found[index:]
                if (
                    index == 1
                    and len(rest) > 1
                    and self.verdict(TrialKind.TRANSPLANT_OLD, rest) is Verdict.NO_FLIP
                ):
                    return None
                if self.verdict(TrialKind.TRANSPLANT_OLD, [candidate]) is Verdict.FLIPPED:
                    return candidate, self.verdict(TrialKind.TRANSPLANT_NEW, [candidate]) is Verdict.FLIPPED
        except OutOfBudget:
            return None
        return None


def one_sided_trial(change: DependencyChange, plan: TransplantPlan) -> Trial:
    """A package installed at one end only: no version of it to put back, said (no run)."""
    present = change.new if change.new is not None else change.old
    end = plan.old_spec.tf_version if change.old is None else plan.new_spec.tf_version
    return Trial(
        TrialKind.TRANSPLANT_OLD,
        (f"{change.name} {present}",),
        plan.new_spec.tf_version,
        "not run",
        Verdict.NOT_TESTABLE,
        error=f"{change.name} is not installed in the {end} environment",
    )


def left_out_trial(left: Sequence[Candidate], plan: TransplantPlan) -> Trial:
    """The packages past MAX_CANDIDATES: not tried, said (no run)."""
    names = ", ".join(c.name for c in left)
    return Trial(
        TrialKind.TRANSPLANT_OLD,
        (one_line(f"{len(left)} more packages: {names}", 300),),
        plan.new_spec.tf_version,
        "not run",
        Verdict.NOT_TESTABLE,
        error=f"more than {MAX_CANDIDATES} changed packages were imported: the least likely were not tried",
    )


def transplant_proof(
    plan: TransplantPlan,
    run: RunPinned,
    changes: Sequence[DependencyChange],
    pure: Callable[[str], bool | None],
    ran: Collection[str] = (),
    say: Callable[[str], None] = lambda text: None,
) -> Proof:
    """The transplants of the changed, imported packages; its cause is the first package whose
    old version restores the old outcome (cause_kind TRANSPLANT_OLD), none when none does."""
    found, one_sided = candidates(changes, pure, ran)
    transplanter = Transplanter(plan, run, say)
    transplanter.trials.extend(one_sided_trial(change, plan) for change in one_sided)
    if len(found) > MAX_CANDIDATES:
        transplanter.trials.append(left_out_trial(found[MAX_CANDIDATES:], plan))
        found = found[:MAX_CANDIDATES]
    if found:
        many = f"{len(found)} changed packages (the likeliest alone, then the rest together)"
        say(f"proving: transplanting {many if len(found) > 2 else ', '.join(c.name for c in found)}")
    answer, skipped = None, None
    try:
        answer = transplanter.transplant(found)
    except MachineFaultError:  # the machine failed, not a transplant: no verdict, the run stops
        raise
    except TfbisectError as exc:  # no copy can be made here (no venv, no image): said, and the proof goes on
        skipped = f"{exc.what} {exc.todo}"
    proof = plan.proof(transplanter.trials, transplanter.runs, skipped)
    if answer is None:
        return proof
    candidate, sufficient = answer
    return replace(
        proof,
        cause=(candidate.label(TrialKind.TRANSPLANT_OLD),),
        cause_kind=TrialKind.TRANSPLANT_OLD,
        sufficient=sufficient,
    )


@dataclass(frozen=True)
class TransplantStage:
    """The proof's first step: each changed package the failing probe imported put back at its
    old version in a copy of the first new environment (and its new one in the last old)."""

    run: RunPinned
    budget: int  # the patched runs the whole proof may make
    say: Callable[[str], None]
    ends: tuple[RunRecord, RunRecord]  # the narrowed range's two records
    specs: tuple[EnvSpec, EnvSpec]

    def prove(
        self,
        probe: str,
        changes: Sequence[DependencyChange],
        places: Callable[[EnvSpec], list[Path]],
        ran: Collection[str],
    ) -> Proof | None:
        """The transplants' proof; None when there is nothing to transplant or the probe has no
        state at an end.  `places`: where an environment's installed packages are (their WHEEL
        files tell pure-Python ones); `ran`: the top-level names of the files the probe ran."""
        old_state, new_state = state_of(self.ends[0], probe), state_of(self.ends[1], probe)
        if old_state is None or new_state is None:
            return None
        plan = TransplantPlan(probe, *self.specs, old_state.name, new_state.name, self.budget)
        found, one_sided = candidates(changes, lambda name: None, ran)
        if not found and not one_sided:
            return None
        try:
            sites = places(self.specs[1])
        except (OSError, ValueError, TfbisectError):
            sites = []
        return transplant_proof(
            plan, self.run, changes, lambda name: wheel_is_pure(sites, name), ran, self.say
        )


@dataclass(frozen=True)
class Proving:
    """The narrowing's proof, both steps: the changed packages first, then the suspects' code
    (only when no package flipped the outcome, within what the budget has left)."""

    run_pinned: RunPinned | None
    run_patched: RunPatched | None
    limits: tuple[int, int]  # the top suspects to put back, the patched runs the proof may make
    say: Callable[[str], None]
    ends: tuple[RunRecord, RunRecord]  # the narrowed range's two records
    specs: tuple[EnvSpec, EnvSpec]

    def transplant(
        self, narrowing: Narrowing, places: Callable[[EnvSpec], list[Path]], ran: Collection[str]
    ) -> bool:
        """The packages transplanted into `narrowing.proof` (`ran`: the files the failing probe
        ran); False when there was nothing to transplant, the narrowing untouched."""
        if self.run_pinned is None or narrowing.trace is None:
            return False
        stage = TransplantStage(self.run_pinned, self.limits[1], self.say, self.ends, self.specs)
        top = {path.split("/", 1)[0] for path in ran}
        proof = stage.prove(narrowing.trace.probe, narrowing.dependencies, places, top)
        if proof is None:
            return False
        narrowing.proof = proof
        return True

    def revert(self, narrowing: Narrowing, ran: Collection[str], sources: tuple[dict[str, str], ...]) -> bool:
        """The suspects' old code put back (proof.py), after the transplants: skipped when a
        package already flipped the outcome; False when nothing was tried."""
        transplanted = narrowing.proof
        if self.run_patched is None or (transplanted is not None and transplanted.proven):
            return False
        spent = transplanted.runs if transplanted is not None else 0
        limits = (self.limits[0], max(self.limits[1] - spent, 0))
        stage = ProofStage(self.run_patched, limits, self.say, self.ends, self.specs)
        return stage.prove(narrowing, ran, sources)
