"""The narrowing's measuring runs beside the stored ones: some probes alone, in an environment
prepared (or reused) exactly as for a stored run, under the probe tracer, read back; and where an
environment's installed sources can be read (`source_places`).

A traced run is stored under the reports' results (`traces/`, beside the proof runs), keyed like
a run: the environment and its lock, the scenario's sha256 (a plain script's harness, its text
and its --bad-if-raises too), the probes, the traced packages, traced or not, and the tracer's
own text; so a repeated bisection or narrowing reuses it (unless `--force`).  A stored one is read
back bounded (a regular file only, never through a link) and checked; a damaged one is run again,
with a note.  A run is stored only when its caller, having checked it, keeps it
(`TraceRun.keep`: the narrowing keeps a trace its checks accept, so one they reject is rerun next
time, never reused); and only one that answered (the scenario wrote its result and, traced, the
tracer saw lines).  A disk that cannot store it loses nothing but the reuse: a note says so.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfbisect.core import interrupt
from tfbisect.core.errors import TfbisectError, TraceError
from tfbisect.core.fsio import now_iso, stamp, write_text_atomic
from tfbisect.core.packagedata import data_file
from tfbisect.core.scenario import HARNESS, Scenario
from tfbisect.core.spec import EnvSpec
from tfbisect.envs.environments import Traced
from tfbisect.runs.launching import Launched, launch_and_wait, parse_json_object, read_json_object

if TYPE_CHECKING:
    from tfbisect.runs.runner import Runner

# The tracer documents a stored traced run may hold: 1 (lines only) and 2 (with order and depth);
# narrow.traces reads both (its TRACE_SCHEMAS).
TRACE_SCHEMAS = (1, 2)
TRACER = "probe_tracer.py"  # package data: the tracer a traced run runs the scenario under
PROBE_NAME = re.compile(r"[a-z0-9_]{1,100}")  # as the result schema names probes; part of a log's name
STORE_FOLDER = "traces"  # under the reports' results folder, beside the proofs' "proofs"
# A stored traced run is its tracer document and the scenario's result: a real TF step's is a few
# hundred KB; one larger than this is not stored (and a file larger than this is not read).
STORED_MAX_BYTES = 64 * 1024 * 1024
STORED_SCHEMA = 1
# Not ".json": the stored runs' listing (`tfbisect show`) reads every .json under the results as
# a run's record, which a traced run is not.
STORED_SUFFIX = ".trace"


@dataclass(frozen=True)
class TraceRun:
    """What `Runner.trace` did: some probes run alone, traced (or not: the tracer's yardstick)."""

    spec: EnvSpec
    probes: tuple[str, ...]
    document: dict[str, Any]  # the tracer's document, parsed, not checked further ({} when untraced)
    result: dict[str, Any] | None  # the scenario's result document, parsed, unchecked; None without one
    seconds: float  # the wall time of the (traced) process
    exit_code: int | None  # the scenario's, through the tracer; None when it timed out
    log: Path
    reused: bool = False  # read back from the store: no run now (`seconds` are the stored run's)
    slot: StoreSlot | None = field(default=None, compare=False, repr=False)  # where it is stored

    def keep(self) -> None:
        """Store this run (its caller checked it): a repeat reuses it.  Nothing for a reused one."""
        if self.slot is not None and not self.reused:
            self.slot.tracer.store(self.slot.scenario, self.slot.key, self, self.slot.traced)

    def drop(self) -> None:
        """Forget this reused run (its caller's checks reject it): a repeat runs it again."""
        if self.slot is not None and self.reused:
            self.slot.tracer.forget(self.spec, self.slot.scenario, self.slot.key)


@dataclass(frozen=True)
class StoreSlot:
    """Where a traced run is stored: its scenario's folder and its key, by which tracer."""

    tracer: Tracer
    scenario: Scenario
    key: str
    traced: bool


class Tracer:
    """Traced runs and source reading in the runner's environments (prepared through it)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def source_places(self, spec: EnvSpec, scenario: Scenario) -> list[Path]:
        """Where the spec's environment's installed Python sources can be read (its site-packages,
        or the wheels it was built from); the environment is prepared (reused) first."""
        try:
            lock, prepared = self.runner.prepare(spec, scenario)
        except self.runner.PREPARE_FAILURES as exc:
            raise TraceError(
                f"{spec.label}: the environment's sources cannot be read: {exc.what}", exc.todo
            ) from exc
        return self.runner.environment(spec.backend).source_places(spec, prepared, lock)

    def trace(
        self,
        spec: EnvSpec,
        scenario: Scenario,
        probes: Sequence[str],
        packages: Sequence[str],
        *,
        window_only: bool = True,
        traced: bool = True,
    ) -> TraceRun:
        """See `Runner.trace`.  A new run comes back unstored: its caller stores it with
        `TraceRun.keep` once its checks accept it."""
        interrupt.check()
        names = tuple(probes)
        _refuse(spec, names, traced)
        what = f"{', '.join(names) or 'the whole scenario'} alone"
        try:  # the lock alone names a stored run: a reused one needs no environment
            lock = self.runner.lock_for(spec, scenario.dependencies)
        except self.runner.PREPARE_FAILURES as exc:
            raise _unprepared(spec, what, exc) from exc
        key = trace_key(spec, lock.sha256, scenario, names, tuple(packages), window_only, traced)
        slot = StoreSlot(self, scenario, key, traced)
        if not self.runner.settings.force:
            stored = self.stored(spec, slot)
            if stored is not None:
                self.runner.progress.say(
                    f"[{spec.label}] {what}{' traced' if traced else ''}: reusing the stored run "
                    f"(exit {stored.exit_code}, {stored.seconds:.1f}s)"
                )
                return stored
        try:
            _, prepared = self.runner.prepare(spec, scenario)
        except self.runner.PREPARE_FAILURES as exc:
            raise _unprepared(spec, what, exc) from exc
        request = Traced(
            Path(str(data_file(TRACER))) if traced else None, tuple(packages), names, window_only
        )
        kind = f"{'trace' if traced else 'probes'}-{'+'.join(names)[:120] or 'whole'}"
        log_path = self.runner.log_dir(scenario) / f"{spec.key}.{kind}.{stamp()}-{os.getpid()}.log"
        done = launch_and_wait(
            self.runner.environment(spec.backend),
            spec,
            scenario,
            prepared,
            log_path,
            f"running {what}{' under the tracer' if traced else ''}",
            self.runner.waiting,
            request,
        )
        return replace(self._read(spec, names, done, log_path), slot=slot)

    # -- the stored traced runs --------------------------------------------------------------
    def store_path(self, scenario: Scenario, key: str) -> Path:
        return (
            self.runner.settings.reports_dir
            / "results"
            / STORE_FOLDER
            / scenario.slug
            / f"{key}{STORED_SUFFIX}"
        )

    def store(self, scenario: Scenario, key: str, run: TraceRun, traced: bool) -> None:
        """Keep a run that answered (see the module's docstring); one too large is not kept, and
        one the disk cannot hold (full, read-only) is not kept either: a note, the run goes on."""
        if run.result is None or (traced and not run.document.get("files")):
            return
        stored = {
            "schema": STORED_SCHEMA,
            "key": key,
            "spec": run.spec.key,
            "probes": list(run.probes),
            "traced": traced,
            "stored_at": now_iso(),
            "seconds": round(run.seconds, 3),
            "exit_code": run.exit_code,
            "log": str(run.log),
            "result": run.result,
            "document": run.document,
        }
        try:
            text = json.dumps(stored, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError):  # parsed from JSON, so it serialises
            return
        if len(text.encode("utf-8")) > STORED_MAX_BYTES:
            self.runner.progress.say(
                f"[{run.spec.label}] the traced run's document is over {STORED_MAX_BYTES // 2**20} MiB: "
                "not stored, so a repeat traces it again (nothing to do)"
            )
            return
        path = self.store_path(scenario, key)
        try:
            write_text_atomic(path, text + "\n")
        except OSError as exc:  # a full or read-only disk: the run stands, only its reuse is lost
            self.runner.progress.say(
                f"[{run.spec.label}] the traced run of {', '.join(run.probes) or 'the whole scenario'} "
                f"was not stored ({str(exc)[:200]}), so a repeat runs it again; free space (or make "
                f"{path.parent} writable) for a repeat to store and reuse it"
            )

    def forget(self, spec: EnvSpec, scenario: Scenario, key: str) -> None:
        """Remove a stored run its caller rejected, so that no repeat reuses it."""
        path = self.store_path(scenario, key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            self.runner.progress.say(
                f"[{spec.label}] the rejected stored traced run {path} could not be removed "
                f"({str(exc)[:200]}); remove it by hand, or repeat with --force"
            )

    def stored(self, spec: EnvSpec, slot: StoreSlot) -> TraceRun | None:
        """The stored run of the slot's key, read back bounded (a regular file only: a link or a
        FIFO there is damage, never followed nor waited on) and checked; None when there is none,
        and (with a note) when it is damaged: it is then run again and replaced."""
        path = self.store_path(slot.scenario, slot.key)
        if not os.path.lexists(path):
            return None
        try:
            data, why = read_json_object(path, STORED_MAX_BYTES)
            if data is None:
                # launching's words are of a run's trace: "left a trace that is not JSON"
                said = why.replace("left a trace that ", "it ").replace("left a trace ", "it is ")
                raise ValueError(said.replace("wrote no trace", "it went missing"))
            return replace(stored_run(data, spec, slot.key, slot.traced), slot=slot)
        except (OSError, ValueError, RecursionError) as exc:
            self.runner.progress.say(
                f"[{spec.label}] the stored traced run {path} is damaged ({str(exc)[:200]}): "
                "running it again, which replaces it (nothing to do)"
            )
            return None

    def _read(self, spec: EnvSpec, names: tuple[str, ...], done: Launched, log_path: Path) -> TraceRun:
        finished, raw, ended = done.finished, done.raw, done.ended
        document, problem = done.trace
        if ended.unstarted is not None:
            raise TraceError(
                ended.unstarted, f"see {log_path}; run again (the image is rebuilt if it went missing)."
            )
        if document is None:
            ending = "timed out" if finished.timed_out else f"exited {ended.exit_code}"
            last = (finished.log_tail.strip().splitlines() or ["(no output)"])[-1]
            raise TraceError(
                f"{spec.label}: the traced run of {', '.join(names) or 'the whole scenario'} {ending} and {problem}; its last "
                f"output: {last[:300]}",
                f"see its log at {log_path}.",
            )
        result = parse_json_object(raw)[0] if raw is not None else None
        self.runner.progress.say(
            f"[{spec.label}] {', '.join(names) or 'the whole scenario'} alone: exit {ended.exit_code} in {finished.seconds:.1f}s"
        )
        return TraceRun(spec, names, document, result, finished.seconds, ended.exit_code, log_path)


def _unprepared(spec: EnvSpec, what: str, exc: TfbisectError) -> TraceError:
    return TraceError(
        f"{spec.label}: the environment for running {what} could not be prepared: {exc.what}", exc.todo
    )


def data_sha256(name: str) -> str:
    """A package data file's text, hashed: a stored trace made with an older tracer (or, for a
    plain script, an older harness) is not reused."""
    return hashlib.sha256(Path(str(data_file(name))).read_bytes()).hexdigest()


def tracer_sha256() -> str:
    """The tracer's own text, hashed."""
    return data_sha256(TRACER)


def trace_key(
    spec: EnvSpec,
    lock_sha256: str,
    scenario: Scenario,
    probes: tuple[str, ...],
    packages: tuple[str, ...],
    window_only: bool,
    traced: bool,
) -> str:
    """The stored key of a traced (or untraced) run, hashed like a proof run's: the environment,
    its lock, the scenario (a plain script: the harness it runs under and the harness's verdict
    flags too), the probes, and how it was traced (by which tracer)."""
    how = [sorted(packages), window_only, tracer_sha256()] if traced else None
    harness = [list(scenario.bad_if_raises), data_sha256(HARNESS)] if scenario.script else None
    payload = json.dumps(["trace", spec.key, lock_sha256, scenario.sha256, harness, list(probes), how])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def stored_run(data: object, spec: EnvSpec, key: str, traced: bool) -> TraceRun:
    """A stored traced run checked (the results folder is anyone's to edit): ValueError saying
    what is wrong.  The tracer's document itself is checked by its reader (narrow/traces.py)."""
    if not isinstance(data, dict) or data.get("schema") != STORED_SCHEMA:
        raise ValueError(f"not a stored traced run of schema {STORED_SCHEMA}")
    if data.get("key") != key or data.get("spec") != spec.key:
        raise ValueError("it is stored under another run's key")
    if data.get("traced") is not traced:
        raise ValueError(f"it is stored as {'an untraced' if traced else 'a traced'} run")
    probes, document, result = data.get("probes"), data.get("document"), data.get("result")
    seconds, exit_code, log = data.get("seconds"), data.get("exit_code"), data.get("log")
    if not isinstance(probes, list) or not all(
        isinstance(p, str) and PROBE_NAME.fullmatch(p) for p in probes
    ):
        raise ValueError("its probes are not probe names")
    if not isinstance(document, dict) or not isinstance(result, dict):
        raise ValueError("its tracer document or its result document is not an object")
    if traced and (
        document.get("schema") not in TRACE_SCHEMAS or not isinstance(document.get("files"), dict)
    ):
        raise ValueError("its tracer document is not a probe trace")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds < math.inf:
        raise ValueError("its seconds are not a duration")
    if exit_code is not None and (not isinstance(exit_code, int) or isinstance(exit_code, bool)):
        raise ValueError("its exit code is not an integer")
    if not isinstance(log, str) or len(log) > 4096:
        raise ValueError("its log is not a path")
    return TraceRun(spec, tuple(probes), document, result, float(seconds), exit_code, Path(log), reused=True)


def _refuse(spec: EnvSpec, names: tuple[str, ...], traced: bool) -> None:
    """Probes a log cannot be named after, and a tracer on a Python it cannot run on, are refused."""
    if not all(PROBE_NAME.fullmatch(name) for name in names):  # none: the scenario whole
        raise TraceError(
            f"Cannot run the probes {', '.join(repr(n[:60]) for n in names[:5]) or '(none)'} alone: a probe is "
            "named by lower-case letters, digits and underscores.",
            "name the probes as the scenario's result document does (e.g. gradient_eager_plain).",
        )
    if traced and spec.python == "3.6":
        raise TraceError(
            f"{spec.label}: the probe tracer needs Python 3.7 or newer.",
            "bisect (or narrow) with a newer Python for these releases (--python 3.7).",
        )
