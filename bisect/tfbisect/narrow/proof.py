"""Proof by revert: put the old text of a suspect (a function, method, class, or whole file) back
into a copy of the first new environment and rerun the deciding probe.  A flip to the old outcome
confirms the suspect (necessary); the new text in a copy of the last old environment flipping to
the new outcome confirms it too (sufficient).  Where no single unit flips, delta debugging (ddmin)
looks for a minimal set, over the suspects and then over whole changed files, within a budget.
The cause's revert is then shrunk to the minimal patch (narrow/shrink.py): ddmin again, over its
changed blocks, each try a run within the same budget.

The planning here is pure (texts in, texts out); the runs go through `RunPatched`, a seam
(`wiring.runner_seams` makes it from the runner's patched runs, runs/patched.py).
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from tfbisect.core.argv import DEFAULT_PROVE as DEFAULT_PROVE
from tfbisect.core.argv import DEFAULT_PROVE_BUDGET
from tfbisect.core.errors import MachineFaultError, TfbisectError
from tfbisect.core.record import RunRecord
from tfbisect.core.spec import EnvSpec
from tfbisect.core.textsafe import clip
from tfbisect.narrow.analysis import MODULE_LEVEL
from tfbisect.narrow.shrink import Change, apply, changes, compile_error, labels
from tfbisect.narrow.sources import source_lines
from tfbisect.search.judge import state_of
from tfbisect.search.narrowlog import (
    PATCH_CHARS_MAX,
    Narrowing,
    NarrowNote,
    NoteCode,
    Proof,
    Shrink,
    Suspect,
    Trial,
    TrialKind,
    Verdict,
)

DEFAULT_BUDGET = DEFAULT_PROVE_BUDGET
WHOLE_FILE = "<file>"  # a unit that is a whole file (module-level changes, import-time code)
# A revert that fails with one of these misses what the old text needs (a removed helper, an import).
_MISSING = ("NameError", "ImportError", "ModuleNotFoundError", "AttributeError", "SyntaxError")


class PatchedRun(Protocol):
    """What a patched run hands back (`runs.patched.PatchedResult`)."""

    @property
    def record(self) -> RunRecord: ...
    @property
    def reused(self) -> bool: ...


# The deciding probe in a copy of an environment with some installed files' text replaced.
RunPatched = Callable[[EnvSpec, str, Mapping[str, str]], PatchedRun]


@dataclass(frozen=True, order=True)
class Unit:
    """A piece of code put back whole: a top-level function or class, a method, or a file."""

    path: str  # the installed path, "tensorflow/python/keras/backend.py"
    name: str  # "categorical_crossentropy", "Model.fit", or WHOLE_FILE

    @property
    def label(self) -> str:
        return self.path if self.name == WHOLE_FILE else f"{self.path}:{self.name}"


def unit_of(suspect: Suspect) -> Unit:
    """The unit a suspect is reverted as: a nested function goes back with its outer one, a
    module-level change with its whole file."""
    name = suspect.function.split(".<locals>.", 1)[0]
    if name in (MODULE_LEVEL, "?", ""):
        name = WHOLE_FILE
    return Unit(suspect.file, name)


def definitions(text: str) -> dict[str, tuple[int, int]] | None:
    """Qualified name -> (first line with decorators, last line) of every class, and every
    function outside a function; None when the text does not parse."""
    try:
        tree = ast.parse("\n".join(source_lines(text)) + "\n")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    found: dict[str, tuple[int, int]] = {}
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        node, prefix = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                found.setdefault(prefix + child.name, (first, child.end_lineno or child.lineno))
                if isinstance(child, ast.ClassDef):
                    stack.append((child, f"{prefix}{child.name}."))
            elif isinstance(child, ast.If | ast.Try | ast.With):  # `if PY3: def f()` at module level
                stack.append((child, prefix))
    return found


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _reindented(lines: list[str], indent: str) -> list[str]:
    """`lines` moved so that their first line starts at `indent` (a method moved into a class)."""
    old = _indent(lines[0]) if lines else ""
    return [indent + line[len(old) :] if line.startswith(old) else line for line in lines]


def put_back(base: str, donor: str, names: Sequence[str]) -> str | None:
    """`base` with the units `names` as `donor` has them: replaced where both have one, added
    where only the donor has it (after its class, or at the end), removed where only the base
    has it.  WHOLE_FILE gives the donor's text.  None when a unit cannot be placed (its class is
    missing) or either text does not parse."""
    if WHOLE_FILE in names:
        return donor
    lines, given = source_lines(base), source_lines(donor)
    donor_defs = definitions(donor)
    # A class put back whole brings its methods: they are not put back again.
    chosen = [n for n in names if not any(n.startswith(f"{o}.") for o in names if o != n)]
    for name in chosen:
        base_defs = definitions("\n".join(lines) + "\n")
        if base_defs is None or donor_defs is None:
            return None
        there, here = donor_defs.get(name), base_defs.get(name)
        if there is None and here is None:
            return None
        text = given[there[0] - 1 : there[1]] if there else []
        if here is not None:
            at = lines[here[0] - 1]
            lines[here[0] - 1 : here[1]] = _reindented(text, _indent(at)) if text else []
            continue
        owner = name.rsplit(".", 1)[0] if "." in name else None
        if owner is None:
            lines += ["", "", *text]
            continue
        place = base_defs.get(owner)
        if place is None:
            return None
        body = lines[place[0] : place[1]]
        indent = next((_indent(line) for line in body if line.strip()), "    ")
        lines[place[1] : place[1]] = ["", *_reindented(text, indent)]
    return "\n".join(lines) + "\n"


def needed(base: str, donor: str, name: str) -> list[str]:
    """The top-level definitions the donor's unit calls by name that the base lacks (a helper
    the old caller calls that the new version removed)."""
    donor_defs, base_defs = definitions(donor), definitions(base)
    if donor_defs is None or base_defs is None or name not in donor_defs:
        return []
    first, last = donor_defs[name]
    text = "\n".join(source_lines(donor)[first - 1 : last])
    try:
        tree = ast.parse(_dedented(text))
    except SyntaxError:
        return []
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return sorted(n for n in used if n in donor_defs and n not in base_defs and n != name)


def _dedented(text: str) -> str:
    lines = text.split("\n")
    indent = _indent(lines[0]) if lines else ""
    return "\n".join(line[len(indent) :] if line.startswith(indent) else line for line in lines)


def patches(
    units: Sequence[Unit], base: Mapping[str, str], donor: Mapping[str, str]
) -> dict[str, str] | None:
    """Installed path -> the base file's text with those units as the donor has them; None when a
    unit cannot be put back (its file missing on either side, a text that does not parse)."""
    by_path: dict[str, list[str]] = {}
    for unit in units:
        by_path.setdefault(unit.path, []).append(unit.name)
    patched: dict[str, str] = {}
    for path, names in sorted(by_path.items()):
        if path not in base or path not in donor:
            return None
        text = put_back(base[path], donor[path], names)
        if text is None:
            return None
        patched[path] = text
    return patched


def unified(base: Mapping[str, str], patched: Mapping[str, str], base_ref: str, patched_ref: str) -> str:
    """The patch as `diff -u` shows it: what to change in the base to get the patched files.  Its
    paths are the installed ones under `a/` and `b/`, each ref after a tab where `diff -u` puts a
    date, so that `patch -p1` and `git apply` in site-packages read the path without it."""
    parts: list[str] = []
    for path in sorted(patched):
        parts.extend(
            difflib.unified_diff(
                source_lines(base.get(path, "")),
                source_lines(patched[path]),
                fromfile=f"a/{path}",
                tofile=f"b/{path}",
                fromfiledate=base_ref,
                tofiledate=patched_ref,
                lineterm="",
            )
        )
    return clip("\n".join(parts), PATCH_CHARS_MAX, mark="…")


T = TypeVar("T")


class OutOfBudget(Exception):
    """The proof's runs are spent: what was found so far stands."""


def ddmin(items: Sequence[T], flips: Callable[[Sequence[T]], bool], *, known: bool = False) -> list[T] | None:
    """A minimal subset of `items` that still flips (Zeller's ddmin: no single item can be left
    out), or None when all of them together do not.  `flips` may raise OutOfBudget: the smallest
    set known to flip so far is returned then.  `known`: all of them together are taken to flip,
    not run (the answer is `items` itself, unrun, when no smaller set flips)."""
    current = list(items)
    try:
        if not known and not flips(current):
            return None
        chunks = 2
        while len(current) >= 2:
            size = -(-len(current) // chunks)
            parts = [current[i : i + size] for i in range(0, len(current), size)]
            found = next((part for part in parts if flips(part)), None)
            if found is not None:
                current, chunks = found, 2
                continue
            rest = None
            if len(parts) > 2:
                for part in parts:
                    others = [item for item in current if item not in part]
                    if flips(others):
                        rest = others
                        break
            if rest is not None:
                current, chunks = rest, max(chunks - 1, 2)
            elif chunks >= len(current):
                break
            else:
                chunks = min(len(current), chunks * 2)
    except OutOfBudget:
        pass
    return current


@dataclass(frozen=True)
class ProofEnds:
    """What every proof works between: the deciding probe, both environments, the probe's state
    in each, and the patched runs the proof may make."""

    probe: str
    old_spec: EnvSpec
    new_spec: EnvSpec
    old_state: str  # the probe's state in the last old build ("match")
    new_state: str  # … and in the first new one ("mismatch")
    budget: int = DEFAULT_BUDGET

    def proof(self, trials: Sequence[Trial], runs: int, skipped: str | None) -> Proof:
        """The proof of these ends with what was tried (no cause yet: the caller adds it)."""
        return Proof(
            probe=self.probe,
            old=self.old_spec.tf_version,
            new=self.new_spec.tf_version,
            old_state=self.old_state,
            new_state=self.new_state,
            trials=tuple(trials),
            runs=runs,
            budget=self.budget,
            skipped=skipped,
        )


@dataclass(frozen=True, kw_only=True)
class ProofPlan(ProofEnds):
    """What a code proof works with: the ends, and both versions' sources and the units to try."""

    old_sources: Mapping[str, str]
    new_sources: Mapping[str, str]
    units: tuple[Unit, ...]  # the top suspects' units, best first
    files: tuple[str, ...]  # changed files the failing probe ran (ddmin's second round)


# The words a patched run is announced with, by what it puts where.
_DOING = {TrialKind.REVERT: "reverting", TrialKind.APPLY: "applying", TrialKind.SHRINK: "reverting part:"}


@dataclass
class Prover:
    """Runs a plan through `run`: single reverts, then ddmin, then the cause's revert shrunk to its
    minimal patch; `trials` is the log of each try."""

    plan: ProofPlan
    run: RunPatched
    say: Callable[[str], None] = lambda text: None
    trials: list[Trial] = field(default_factory=list)
    runs: int = 0
    _seen: dict[tuple[TrialKind, tuple[Unit, ...]], str] = field(default_factory=dict)
    # The state of each set of patched texts run, by the end it ran in (True: the last old one).
    _texts: dict[tuple[bool, tuple[tuple[str, str], ...]], str] = field(default_factory=dict)
    _partials: dict[tuple[Change, ...], bool] = field(default_factory=dict)  # the shrink's tries

    def state(self, kind: TrialKind, units: Sequence[Unit]) -> str | None:
        """The probe's state with `units` put back (REVERT: old text into the new environment;
        APPLY: new text into the old); None when they cannot be put back."""
        key = (kind, tuple(sorted(units)))
        if key in self._seen:
            return self._seen[key]
        plan = self.plan
        revert = kind is TrialKind.REVERT
        base, donor = (plan.new_sources, plan.old_sources) if revert else (plan.old_sources, plan.new_sources)
        patched = patches(units, base, donor)
        if patched is None:
            return None
        state = self._run(kind, tuple(unit.label for unit in units), patched)
        self._seen[key] = state
        return state

    def _run(self, kind: TrialKind, labels: tuple[str, ...], patched: Mapping[str, str]) -> str:
        """The probe's state with the files `patched` in a copy of the first new environment (the
        last old one for APPLY), logged as a trial; OutOfBudget when the runs are spent."""
        plan = self.plan
        key = (kind is TrialKind.APPLY, tuple(sorted(patched.items())))
        if key in self._texts:  # the same texts put back another way: the same run
            return self._texts[key]
        if self.runs >= plan.budget:
            raise OutOfBudget()
        spec = plan.old_spec if kind is TrialKind.APPLY else plan.new_spec
        self.say(f"[{spec.label}] {_DOING[kind]} {', '.join(labels)[:200]}")
        done = self.run(spec, plan.probe, patched)
        self.runs += 0 if done.reused else 1
        found = state_of(done.record, plan.probe)
        state = found.name if found is not None else "skip"
        self._texts[key] = state
        self.trials.append(self._trial(kind, labels, spec, state, done.reused))
        return state

    def _trial(
        self, kind: TrialKind, labels: tuple[str, ...], spec: EnvSpec, state: str, reused: bool
    ) -> Trial:
        revert = kind is not TrialKind.APPLY
        wanted = self.plan.old_state if revert else self.plan.new_state
        before = self.plan.new_state if revert else self.plan.old_state
        if state == wanted:
            verdict, error = Verdict.FLIPPED, None
        elif state == before:
            verdict, error = Verdict.NO_FLIP, None
        else:
            verdict, error = Verdict.INCONCLUSIVE, state.removeprefix("error: ")
        return Trial(kind, labels, spec.tf_version, state, verdict, reused, error)

    def flips(self, units: Sequence[Unit]) -> bool:
        return self.state(TrialKind.REVERT, units) == self.plan.old_state

    def revert_alone(self, unit: Unit) -> list[Unit] | None:
        """The unit (with the helpers it needs, if alone it misses one) when its revert flips."""
        state = self.state(TrialKind.REVERT, [unit])
        if state == self.plan.old_state:
            return [unit]
        if state is None or not state.startswith("error: ") or not state[7:].startswith(_MISSING):
            return None
        if unit.path not in self.plan.old_sources or unit.path not in self.plan.new_sources:
            return None
        helpers = needed(self.plan.new_sources[unit.path], self.plan.old_sources[unit.path], unit.name)
        together = [unit, *(Unit(unit.path, name) for name in helpers)]
        if len(together) > 1 and self.flips(together):
            return together
        whole = [Unit(unit.path, WHOLE_FILE)]
        return whole if unit.name != WHOLE_FILE and self.flips(whole) else None

    def prove(self) -> tuple[list[Unit], bool] | None:
        """The minimal units whose revert flips the probe, and whether their new text alone
        flips the old environment too (sufficient); None when nothing flipped."""
        cause: list[Unit] | None = None
        try:
            for unit in self.plan.units:
                cause = self.revert_alone(unit)
                if cause is not None:
                    break
        except OutOfBudget:
            return None
        if cause is None:
            cause = ddmin(list(self.plan.units), self.flips) if len(self.plan.units) > 1 else None
        if cause is None:
            files = [Unit(path, WHOLE_FILE) for path in self.plan.files]
            cause = ddmin(files, self.flips) if files else None
        if cause is None or not self.flips_known(cause):
            return None
        try:
            sufficient = self.state(TrialKind.APPLY, cause) == self.plan.new_state
        except OutOfBudget:
            sufficient = False
        return cause, sufficient

    def flips_known(self, units: Sequence[Unit]) -> bool:
        """Whether a run showed that `units` flip (ddmin's answer when the budget ran out early
        may be a set never run alone)."""
        return self._seen.get((TrialKind.REVERT, tuple(sorted(units)))) == self.plan.old_state

    def partial(self, chosen: Sequence[Change], compiled: bool) -> bool:
        """Whether putting back only the `chosen` blocks of the cause's revert restores the old
        outcome.  `compiled`: the whole revert compiles here, so a part that does not is broken by
        the cut (a block without the one it needs): inconclusive, counted as no flip, never run."""
        key = tuple(sorted(chosen))
        if key in self._partials:
            return self._partials[key]
        texts = apply(self.plan.new_sources, key)
        error = compile_error(texts) if compiled else None
        if error is not None:
            self.trials.append(
                Trial(
                    TrialKind.SHRINK,
                    labels(key),
                    self.plan.new_spec.tf_version,
                    "not run",
                    Verdict.INCONCLUSIVE,
                    error=f"{error}: the part does not compile, not run",
                )
            )
            flipped = False
        else:
            flipped = self._run(TrialKind.SHRINK, labels(key), texts) == self.plan.old_state
        self._partials[key] = flipped
        return flipped

    def shrink(self, cause: Sequence[Unit]) -> tuple[list[Change], Shrink]:
        """The fewest changed blocks of the cause's revert that still restore the old outcome (the
        whole revert when none can be left out, or when the budget ends before a smaller set
        flipped), and how they were found.  Blocks that change only documentation are left out
        without a run; ddmin finds the rest, each try a run within the proof's budget."""
        plan = self.plan
        whole = patches(cause, plan.new_sources, plan.old_sources) or {}
        found = changes(plan.new_sources, whole)
        code = [change for change in found if not change.documentation]
        tries, runs, spent = len(self.trials), self.runs, False
        compiled = compile_error(whole) is None

        def flips(chosen: Sequence[Change]) -> bool:
            nonlocal spent
            try:
                return self.partial(chosen, compiled)
            except OutOfBudget:
                spent = True
                raise

        def proven(chosen: Sequence[Change]) -> bool:
            return list(chosen) == found or self._partials.get(tuple(sorted(chosen))) is True

        # The code blocks are taken to flip together (the documentation cannot matter): a
        # smaller set that flips is proven by its own run; the whole set, only when none did.
        kept = ddmin(code or found, flips, known=True) or found
        if not proven(kept) and not spent:
            with suppress(OutOfBudget):
                if not flips(kept):  # the documentation mattered after all: shrink the whole revert
                    kept = ddmin(found, flips, known=True) or found
        if not proven(kept):
            kept = found
        facts = Shrink(
            whole_patch="",
            blocks=len(found),
            documentation=len(found) - len(code),
            kept=len(kept),
            tries=sum(1 for trial in self.trials[tries:] if trial.kind is TrialKind.SHRINK),
            runs=self.runs - runs,
            minimal=not spent,
        )
        return kept, facts


def proof_of(plan: ProofPlan, run: RunPatched, say: Callable[[str], None], refs: tuple[str, str]) -> Proof:
    """The proof of a plan: its trials, and the cause with its minimal patch (new -> old) if one
    flipped.  A run that cannot be made at all (the backend cannot copy its environment) ends it,
    said; while shrinking, the whole revert stands then."""
    prover = Prover(plan, run, say)
    skipped = None if plan.units or plan.files else "no changed Python code to put back"
    found = None
    if skipped is None:
        try:
            found = prover.prove()
        except MachineFaultError:  # the machine failed, not a revert: no verdict, the run stops
            raise
        except TfbisectError as exc:
            skipped = f"{exc.what} {exc.todo}"
    if found is None:
        return plan.proof(prover.trials, prover.runs, skipped)
    cause, sufficient = found
    whole = patches(cause, plan.new_sources, plan.old_sources) or {}
    whole_patch = unified(plan.new_sources, whole, refs[1], refs[0])
    patch, shrunk = whole_patch, None
    if whole:
        say(
            f"proving: shrinking the revert of {', '.join(unit.label for unit in cause)[:200]} to its minimal patch"
        )
        try:
            kept, shrunk = prover.shrink(cause)
        except MachineFaultError:
            raise
        except TfbisectError:  # the runs failed under the shrink: the whole revert stands
            shrunk = None
        else:
            patch = unified(plan.new_sources, apply(plan.new_sources, kept), refs[1], refs[0])
            if patch != whole_patch:
                shrunk = replace(shrunk, whole_patch=whole_patch)
    return replace(
        plan.proof(prover.trials, prover.runs, skipped),
        cause=tuple(unit.label for unit in cause),
        cause_kind=TrialKind.REVERT,
        sufficient=sufficient,
        patch=patch,
        shrink=shrunk,
    )


def with_transplants(transplants: Proof | None, reverts: Proof) -> Proof:
    """One proof of both steps: the transplants' trials first, the runs of both, the whole budget."""
    if transplants is None:
        return reverts
    return replace(
        reverts,
        trials=transplants.trials + reverts.trials,
        runs=transplants.runs + reverts.runs,
        budget=transplants.budget,
    )


@dataclass(frozen=True)
class ProofStage:
    """The narrowing's last step: the top suspects' old code put back into the first new
    environment, and the proof (or why there is none) noted in the narrowing."""

    run: RunPatched
    limits: tuple[int, int]  # the top suspects to put back, the patched runs it may make
    say: Callable[[str], None]
    ends: tuple[RunRecord, RunRecord]  # the narrowed range's two records
    specs: tuple[EnvSpec, EnvSpec]

    def plan(
        self,
        suspects: Sequence[Suspect],
        probe: str,
        ran: Collection[str],
        sources: tuple[dict[str, str], ...],
    ) -> ProofPlan | None:
        """The plan for the ranked suspects; None when the probe has no state at an end."""
        old_state, new_state = state_of(self.ends[0], probe), state_of(self.ends[1], probe)
        if old_state is None or new_state is None:
            return None
        old_sources, new_sources = sources
        units = [unit_of(s) for s in suspects if not s.documentation_only]
        files = sorted(
            p for p in ran if p in old_sources and p in new_sources and old_sources[p] != new_sources[p]
        )
        return ProofPlan(
            probe=probe,
            old_spec=self.specs[0],
            new_spec=self.specs[1],
            old_state=old_state.name,
            new_state=new_state.name,
            old_sources=old_sources,
            new_sources=new_sources,
            units=tuple(dict.fromkeys(units))[: self.limits[0]],
            files=tuple(files),
            budget=self.limits[1],
        )

    def prove(self, narrowing: Narrowing, ran: Collection[str], sources: tuple[dict[str, str], ...]) -> bool:
        """Prove the narrowing's suspects (`ran`: the files the failing probe ran; `sources`: both
        versions' texts of them); False when there was nothing to prove, the narrowing untouched."""
        found, summary = narrowing.suspects, narrowing.trace
        assert summary is not None
        if found is None:
            return False
        plan = self.plan(found.suspects, summary.probe, ran, sources)
        if plan is None:
            return False
        last_old, first_new = narrowing.last_old, narrowing.first_new
        refs = (
            (last_old.ref if last_old else None) or self.specs[0].tf_version,
            (first_new.ref if first_new else None) or self.specs[1].tf_version,
        )
        self.say(f"proving: putting the old code of up to {len(plan.units)} suspects back")
        transplanted = narrowing.proof  # the packages tried first (narrow/transplant.py)
        proof = proof_of(plan, self.run, self.say, refs)
        if proof.proven:  # the cause's links at both refs: its suspect's, where it ranked
            linked = next((s for s in found.suspects if unit_of(s).label == proof.cause[0]), None)
            if linked is not None:
                proof = replace(proof, old_link=linked.old_link, new_link=linked.new_link)
        narrowing.proof = with_transplants(transplanted, proof)
        if not proof.proven and proof.skipped:
            narrowing.notes.append(NarrowNote.of(NoteCode.PROOF_FAILED, what=proof.skipped))
        return True
