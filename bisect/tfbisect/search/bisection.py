"""The bisect command's workflow: pick versions, run rounds, judge them, and write what was found.

The search state lives in `search.BisectState`, the meaning of old and new in `judge`,
the runs in `runner.Runner` (a round's side by side in `rounds`, the next round's environments
prepared ahead in `prefetch`); this module only drives them and keeps the log.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from tfbisect.core.errors import MachineFaultError, as_machine_fault
from tfbisect.core.fsio import fine_stamp, now_iso, write_json_atomic
from tfbisect.core.progress import Progress
from tfbisect.core.record import RunRecord
from tfbisect.core.safe_names import safe_component
from tfbisect.core.spec import EnvSpec
from tfbisect.core.textsafe import clip
from tfbisect.core.versions import commit_of, git_tag, is_nightly
from tfbisect.envs import registry
from tfbisect.runs.runner import Runner, RunResult
from tfbisect.search.bisectlog import BisectReport, Status, Step, StepOutcome
from tfbisect.search.bisectplan import BisectRequest as BisectRequest
from tfbisect.search.bisectplan import Plan, plan
from tfbisect.search.judge import Judgement, State, failure_terms, failure_text, state_of, terms_for
from tfbisect.search.prefetch import Prefetch, Prefetcher
from tfbisect.search.rounds import Execute as Execute
from tfbisect.search.rounds import RoundExecutor
from tfbisect.search.state import BisectState, ChangePoint, Class

COMPARE = "https://github.com/tensorflow/tensorflow/compare/{old}...{new}"


class Trials:
    """The versions a search has tried: each round run through the round executor while the next
    round's environments are prepared ahead, each run's record kept by its index, each step
    added to the log, and the log saved after every round."""

    def __init__(
        self,
        request: BisectRequest,
        planned: Plan,
        report: BisectReport,
        rounds: RoundExecutor,
        ahead: Prefetcher,
        say: Callable[[str], None],
        save: Callable[[BisectReport], None],
    ) -> None:
        self.request = request
        self.planned = planned
        self.releases, self.specs = planned.releases, planned.specs
        self.report = report
        self.rounds, self.ahead = rounds, ahead
        self.say, self._save = say, save
        self.records: dict[int, RunRecord] = {}
        self.round = 0
        self.unavailable: set[int] = set()  # the versions the log has a step "unavailable" of
        self.told_why = False  # whether the console has said why a version cannot be tested

    def run_round(self, indices: Sequence[int], ahead: Sequence[int] = (), later: Sequence[int] = ()) -> None:
        """Run the versions of `indices` not run yet, while the ones of `ahead` (the next round's
        candidates) are prepared, and those of `later` (the rounds after next's) on a worker
        ahead with nothing nearer to do."""
        todo = [i for i in indices if i not in self.records and self.specs[i] is not None]
        for i in indices:
            if self.specs[i] is None and i not in self.records:
                self.note_unavailable(i)
        if not todo:
            return
        self.round += 1
        names = ", ".join(self.releases[i].version for i in todo)
        self.say(f"== round {self.round}: {names}")
        # The round's own runs that wait for a worker are prepared first (at once, at full
        # priority), then the next round's; what an earlier round prepared for a round that did
        # not come is dropped.
        own = self.unrun(todo[self.request.jobs :])
        # No more candidates than workers: the next round runs them all, whatever this one finds.
        sure = list(ahead) if len(ahead) <= self.request.jobs else []
        self.rounds.run(
            [(i, spec) for i in todo if (spec := self.specs[i]) is not None],
            self.took,
            lambda: self.ahead.prepare(
                [*own, *self.unrun(ahead)], urgent=len(own), keep=todo, sure=sure, later=self.unrun(later)
            ),
        )
        self.save()

    def search_round(self, state: BisectState, todo: Sequence[int], low: int = 0) -> None:
        """Run the round `todo` of `state` (whose index 0 is version `low`), while what the
        rounds after it may run is prepared ahead."""
        ahead, later = state.after_round(todo), state.rounds_ahead(todo)
        self.run_round([i + low for i in todo], [i + low for i in ahead], [i + low for i in later])

    def unrun(self, indices: Sequence[int]) -> list[tuple[int, EnvSpec, str]]:
        """The versions of `indices` with an environment and no run yet: (index, spec, version)."""
        return [
            (i, spec, self.releases[i].version)
            for i in indices
            if i not in self.records and (spec := self.specs[i]) is not None
        ]

    def took(self, index: int, done: RunResult) -> None:
        self.records[index] = done.record
        self.add_step(index, done.record, done.seconds, done.reused)

    def note_unavailable(self, index: int) -> None:
        """One step in the log for a version nothing here can run, with the backends' reason."""
        if index in self.unavailable:
            return
        self.unavailable.add(index)
        release = self.releases[index]
        why = self.planned.why_unplaced(index)
        self.report.steps.append(
            Step(
                round=self.round,
                version=release.version,
                outcome=StepOutcome.UNAVAILABLE,
                state=None,
                cls=Class.SKIP,
                reused=False,
                seconds=0.0,
                summary=clip(why.what, 300)
                if why
                else f"no wheel for a Python here (needs one of {', '.join(release.pythons)})",
            )
        )

    def tell_untestable(self, index: int) -> None:
        """Say that an end cannot be tested here and the search moves it inward: why, and what
        would let it be tested, the first time only (a range of untestable versions would say the
        same at length again and again); the log keeps each one's reason (`tfbisect bisect log`)."""
        version = self.releases[index].version
        if self.told_why:
            self.say(f"TF {version} cannot be tested here either; moving the end inward")
            return
        self.told_why = True
        why = self.planned.why_unplaced(index)
        record = self.records.get(index)
        reason = why.what if why else record.verdict_summary if record else "it was skipped"
        todo = why.todo if why else "see its run above; the log keeps why for each version."
        self.say(
            f"TF {version} cannot be tested here: {clip(reason, 300)} Moving the end inward."
            f"\n  What to do: {clip(todo, 300)}"
        )

    def add_step(
        self, index: int, record: RunRecord, seconds: float, reused: bool, round_: int | None = None
    ) -> None:
        state = state_of(record, self.request.probe)
        self.report.steps.append(
            Step(
                round=self.round if round_ is None else round_,
                version=self.releases[index].version,
                outcome=StepOutcome(record.outcome.value),
                state=state.name if state else None,
                cls=Class.UNJUDGED,
                reused=reused,
                seconds=round(seconds, 2),
                summary=record.verdict_summary[:300],
                key=record.spec.key,
            )
        )

    def stop(self, *, kill: bool = False) -> None:
        """The search is over: nothing more is prepared ahead; `kill`: stopped by a signal, and
        the runs still in progress are killed too."""
        if kill:
            self.rounds.halt()
        self.ahead.stop()

    def save(self) -> None:
        self._save(self.report)


class Bisection:
    """The search: which versions to run (through `Trials`), how to judge them, and what was found."""

    def __init__(
        self,
        request: BisectRequest,
        runner: Runner,
        progress: Progress,
        log_path: Path,
        execute: Execute | None = None,
        prefetch: Prefetch | None = None,
        planned: Plan | None = None,
        save: Callable[[BisectReport], None] | None = None,
    ) -> None:
        """`execute`, `prefetch`: one run, one environment prepared ahead (default: the runner's;
        nothing prepared when `execute` is scripted); `planned`: the versions and environments
        (default: the releases between the request's ends); `save`: where the log goes after
        every round (default: `log_path`; a narrowing keeps its search in the bisection's log)."""
        self.request, self.runner, self.progress = request, runner, progress
        planned = planned or plan(request, runner.catalogue, runner.environment)
        self.releases, self.specs = list(planned.releases), list(planned.specs)
        self.turned = planned.reversed_ends
        self.report = BisectReport(
            request=request.to_record(),
            command=request.command(),
            versions=[r.version for r in self.releases],
            started_at=now_iso(),
        )
        # The runs, their threads and processes, and the work ahead are the collaborators'.
        rounds, ahead = collaborators(request, runner, progress, execute, prefetch)
        save = save or (lambda report: write_json_atomic(log_path, report.to_dict()))
        self.trials = Trials(request, planned, self.report, rounds, ahead, progress.say, save)
        self.records = self.trials.records  # the records of the runs so far, by version index

    def state(self, index: int) -> State | None:
        record = self.records.get(index)
        return state_of(record, self.request.probe) if record else None

    # -- the search ------------------------------------------------------------------
    def run(self) -> BisectReport:
        if self.turned:
            self.progress.say(reversed_note(*self.turned))
        try:
            self._search()
        except KeyboardInterrupt:
            self.trials.stop(kill=True)
            self.report.status = Status.INTERRUPTED
            self.trials.save()
            raise
        except (MachineFaultError, OSError) as exc:
            # The machine failed (a full or read-only disk): the search stops like on Ctrl-C,
            # its log so far kept where it can still be written, and no version judged by it.
            fault = as_machine_fault(exc)
            self.trials.stop(kill=True)
            self.report.status = Status.INTERRUPTED
            try:
                self.trials.save()
            except OSError as unsaved:
                fault.add_note(f"tfbisect: the bisection log could not be written either: {unsaved}")
            if fault is exc:
                raise
            raise fault from exc
        finally:
            self.trials.stop()
        self.report.finished_at = now_iso()
        self.trials.save()
        return self.report

    def _search(self) -> None:
        size = len(self.releases)
        probe_state = BisectState(size, self.request.jobs)
        first = probe_state.first_round()
        self.trials.search_round(probe_state, first)
        low, high = self.decide_end(0, +1), self.decide_end(size - 1, -1)
        if low is None or high is None or low >= high:
            self.finish_undecidable()
            return
        self.report.ends = [self.releases[low].version, self.releases[high].version]
        self.gather_evidence(low, high)
        old, new = self.state(low), self.state(high)
        assert old is not None and new is not None
        self.report.old_state, self.report.new_state = old.name, new.name
        for index, end_state in ((low, old), (high, new)):
            if end_state.is_error:
                self.report.end_failures[self.releases[index].version] = self.failure_at(index)
        if self.request.regress == "error":
            self.search_failure(low, high, old, new, any_failure=True)
            return
        if old.is_error or new.is_error:
            self.report.status = Status.END_FAILS
            if old.is_error != new.is_error:
                self.search_failure(low, high, old, new, any_failure=False)
            return
        terms = terms_for(old, new, self.request.term_old, self.request.term_new)
        self.report.term_old, self.report.term_new = terms.old_name, terms.new_name
        if old == new:
            self.label_steps(terms)
            self.finish_no_change(low, high, old)
            return
        state = self.narrow(low, high, terms)
        self.finish(state, terms, low)

    def gather_evidence(self, low: int, high: int) -> None:
        """Every stored result for the same question inside the range is evidence: taken into
        the search (it costs nothing) and into the answer (a non-monotonic range says so)."""
        for i in range(low + 1, high):
            spec = self.specs[i]
            if i in self.records or spec is None:
                continue
            ahead = self.runner.ahead.take(spec, self.request.scenario)
            if ahead is not None:  # run ahead of its round: this bisection's own run
                self.trials.took(i, ahead)
            if ahead is not None or self.runner.ahead.holds(spec, self.request.scenario):
                continue  # one still running ahead: its round takes it
            stored = self.runner.stored(spec, self.request.scenario)
            if stored is not None:
                self.records[i] = stored
                self.trials.add_step(i, stored, 0.0, True, round_=0)  # round 0: known before this bisection

    def narrow(self, low: int, high: int, judgement: Judgement) -> BisectState:
        """Rounds between two ends of different classes, until the change point is pinned."""
        state = BisectState(high - low + 1, self.request.jobs)
        for i in self.records:
            if low <= i <= high:
                state.record(i - low, judgement.classify(self.state(i)))
        for i in range(low, high + 1):
            if self.specs[i] is None:
                state.record(i - low, Class.SKIP)
                self.trials.note_unavailable(i)
        while True:
            todo = state.next_round()
            if not todo:
                break
            self.trials.search_round(state, todo, low)
            for i in todo:
                state.record(i, judgement.classify(self.state(i + low)))
        return state

    def failure_at(self, index: int) -> str:
        record = self.records[index]
        return failure_text(record, self.request.probe) or record.verdict_summary

    def search_failure(self, low: int, high: int, old: State, new: State, *, any_failure: bool) -> None:
        """Where a failure began (or went away): its own finding, never a good or a bad."""
        if old.is_error == new.is_error:  # only with --regress error: both ends fail, or neither
            self.report.status = Status.NO_CHANGE
            return
        terms = failure_terms(
            old,
            new,
            any_failure=any_failure,
            term_old=self.request.term_old if any_failure else None,
            term_new=self.request.term_new if any_failure else None,
        )
        failing_index = low if terms.failing_old else high
        failure = self.failure_at(failing_index)
        if any_failure:
            stops = terms.failing_old
            self.report.question = f"where the scenario {'stops failing' if stops else 'starts to fail'}"
        state = self.narrow(low, high, terms)
        result = state.result()
        change = self.confirm(result.change, state, terms, low)
        self.report.failure_finding = failure_finding(
            failure, self.report.versions[low:], change, failing_old=terms.failing_old
        )
        self.label_steps(terms)
        if any_failure:
            self.report.term_old, self.report.term_new = terms.old_name, terms.new_name
            self.finish(state, terms, low)

    def finish_no_change(self, low: int, high: int, end_state: State) -> None:
        """Both ends agree; but stored results inside the range may not, and then that is the answer."""
        decisive = [
            (i, self.state(i))
            for i in sorted(self.records)
            if low <= i <= high and self.state(i) is not None and not self.state(i).is_error  # type: ignore[union-attr]
        ]
        names = self.report.versions
        changes = [(names[i], names[j]) for (i, a), (j, b) in itertools.pairwise(decisive) if a != b]
        if changes:
            self.report.status = Status.NON_MONOTONIC
            self.report.changes = changes
            return
        self.report.status = Status.NO_CHANGE

    def decide_end(self, index: int, step: int) -> int | None:
        """The end itself if it can be tested, else the nearest testable version inward (up to 3 tries)."""
        for _ in range(4):
            if not 0 <= index < len(self.releases):
                return None
            self.trials.run_round([index])
            if self.state(index) is not None:
                return index
            self.trials.tell_untestable(index)
            index += step
        return None

    def finish_undecidable(self) -> None:
        self.report.status = Status.UNDECIDABLE

    def label_steps(self, terms: Judgement) -> None:
        """Name each step old/new/skip/other now that the ends have fixed what those mean."""
        self.report.steps = [
            replace(step, cls=terms.classify(State(step.state) if step.state else None))
            for step in self.report.steps
        ]

    def finish(self, state: BisectState, terms: Judgement, low: int) -> None:
        result = state.result()
        change = self.confirm(result.change, state, terms, low)
        result = state.result()
        names = self.report.versions
        last_old, first_new = names[change.last_old + low], names[change.first_new + low]
        self.report.last_old, self.report.first_new = last_old, first_new
        self.report.candidates = [names[i + low] for i in change.candidates]
        self.report.changes = [
            (names[c.last_old + low], names[c.first_new + low]) for c in result.all_changes
        ]
        for version, index in ((last_old, change.last_old + low), (first_new, change.first_new + low)):
            record = self.records.get(index)
            self.report.git_versions[version] = record.git_version if record else None
        self.report.compare_url = compare_url(
            ref_of(last_old, self.report.git_versions[last_old]),
            ref_of(first_new, self.report.git_versions[first_new]),
        )
        self.label_steps(terms)
        if not result.monotonic:
            self.report.status = Status.NON_MONOTONIC
        elif change.unresolved:
            self.report.status = Status.AMBIGUOUS
        else:
            self.report.status = Status.FOUND

    def confirm(self, change: ChangePoint, state: BisectState, terms: Judgement, low: int) -> ChangePoint:
        """Check the versions next to the change point when that is cheap (stored) or asked for."""
        neighbours = [change.last_old - 1, change.first_new + 1]
        cheap = []
        for i in neighbours:
            if 0 <= i < state.size and i not in state.known and self.specs[i + low] is not None:
                spec = self.specs[i + low]
                assert spec is not None
                if self.request.confirm or self.runner.stored(spec, self.request.scenario) is not None:
                    cheap.append(i)
        if cheap:
            self.trials.run_round([i + low for i in cheap])
            for i in cheap:
                state.record(i, terms.classify(self.state(i + low)))
        return state.result().change


def collaborators(
    request: BisectRequest,
    runner: Runner,
    progress: Progress,
    execute: Execute | None,
    prefetch: Prefetch | None,
) -> tuple[RoundExecutor, Prefetcher]:
    """The rounds' executor and the work ahead: the runner's unless a test scripts them.  The
    runner's preparation ahead goes after the runs' own (its foreground is the gate), and with a
    core the round's workers leave idle here (a swarm's runs go elsewhere), what is prepared
    ahead is run ahead too (runs/ahead.py), the rounds after next's among it."""
    gate, run = None, True  # scripted work ahead: as a local search with a core to spare
    if prefetch is None and execute is None:
        local = registry.registration(request.backend).capacity is None
        run = request.run_ahead and local and len(os.sched_getaffinity(0)) > request.jobs
        prefetch = lambda spec: runner.prefetch(spec, request.scenario, run=run)  # noqa: E731
        gate = runner.preparing.foreground
    rounds = RoundExecutor(execute or (lambda spec: runner.run(spec, request.scenario)), request.jobs)
    return rounds, Prefetcher(prefetch, request.prefetch, progress.say, gate=gate, later=run)


def reversed_note(good: str, bad: str) -> str:
    """What a search makes of --good newer than --bad: the two are the range's ends either way,
    and the runs at them say whether it looks for a change or for a fix (`judge.terms_for`)."""
    return (
        f"--good TF {good} is newer than --bad TF {bad}: the search takes both as the range's ends, "
        "and the runs at them say which side is good (it looks for a fix when the older end is the "
        "bad one).\n  What to do: nothing; the order of --good and --bad does not change the search, "
        "and the answer names each side by what its runs show."
    )


def failure_finding(
    failure: str, names: Sequence[str], change: ChangePoint, *, failing_old: bool
) -> dict[str, object]:
    """Where a failure begins (or goes away) in `names` (the versions from the range's low end),
    as the log keeps it."""
    last_old, first_new = names[change.last_old], names[change.first_new]
    candidates = [names[i] for i in change.candidates]
    without, with_ = (first_new, last_old) if failing_old else (last_old, first_new)
    return {
        "failure": failure,
        "direction": "stops" if failing_old else "starts",
        "last_without": None if failing_old else without,
        "first_with": with_ if not failing_old else None,
        "last_with": with_ if failing_old else None,
        "first_without": without if failing_old else None,
        "candidates": candidates,
    }


def ref_of(version: str, git_version: str | None) -> str | None:
    """Where a build lives in tensorflow/tensorflow: a release's (or RC's) tag; a nightly has no
    tag, so the commit its `tf.version.GIT_VERSION` names (None when the run did not report one)."""
    return commit_of(git_version) if is_nightly(version) else git_tag(version)


def compare_url(old_ref: str | None, new_ref: str | None) -> str | None:
    return COMPARE.format(old=old_ref, new=new_ref) if old_ref and new_ref else None


def log_name(request: BisectRequest, folder: Path | None = None) -> str:
    """The file name of a new bisection log: UTC to the microsecond, the scenario, the question and
    the variant.  With `folder`, the file is also created there, exclusively (O_EXCL), so that two
    bisections started at the same moment (two terminals, two CI jobs) never write the same log:
    the second takes the name with "-2" (and so on) before ".json"."""
    what = safe_component(request.probe or "verdict")
    variant = f"{safe_component(request.flavour.value)}-{safe_component(request.keras.value)}"
    name = f"{fine_stamp()}-{request.scenario.slug}-{what}-{variant}"
    if folder is None:
        return name + ".json"
    folder.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        taken = f"{name}.json" if n == 1 else f"{name}-{n}.json"
        try:
            os.close(os.open(folder / taken, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            continue
        return taken
    raise AssertionError("unreachable")  # itertools.count never ends
