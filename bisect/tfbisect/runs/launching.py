"""One run launched in a prepared environment and waited for, and what it left read back: the
step a stored run (runner.py) and a traced run (tracing.py) share.

The backend (`environments.Environments`) makes the command and reads how it ended in its own
terms; here the process runs under the runner's timeout with a bounded log, the result document
(and the trace) are read before the run's folder goes, and `record_of` turns it into a record.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfbisect.core import jsonread
from tfbisect.core.errors import MACHINE_TODO, MachineFaultError, TfbisectError, machine_fault_in
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.record import Failure, RunRecord, classify, ran_on
from tfbisect.core.resultfile import read_result
from tfbisect.core.scenario import Scenario
from tfbisect.core.spec import EnvSpec, Flavour
from tfbisect.envs.environments import Ended, Environments, Launch, Traced
from tfbisect.envs.locks import Lock
from tfbisect.platform.process import Finished, run_logged, temporary_prefix

# A trace of one TF probe is a few hundred files' line numbers (well under a MB); the cap bounds
# what a hostile environment can make the driver read.
TRACE_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Launched:
    """One launched process, waited for, with what it left read before its folder went."""

    launch: Launch
    finished: Finished
    raw: bytes | None  # the result document's bytes
    unreadable: Failure | None  # why a result document there could not be read
    ended: Ended
    trace: tuple[dict[str, Any] | None, str]  # the trace document (or None and why); ({}, "") untraced


@dataclass(frozen=True)
class Waiting:
    """How a launched run is waited for: the runner's timeout, and where its probe lines go."""

    timeout: float
    progress: Progress


def launch_and_wait(
    environments: Environments[Any],
    spec: EnvSpec,
    scenario: Scenario,
    prepared: object,
    log_path: Path,
    doing: str,
    waiting: Waiting,
    traced: Traced | None = None,
) -> Launched:
    """Launch a run in a prepared environment and wait for it (the timeout), probe lines shown as
    they come; its result (and trace) are read before its folder is removed."""
    progress = waiting.progress
    with (
        # A container's user may leave files the driver cannot remove unless it is root.
        # Named for this driver, so that a later command removes it if the driver is killed.
        tempfile.TemporaryDirectory(prefix=temporary_prefix("run"), ignore_cleanup_errors=True) as tmp,
        environments.launch(spec, scenario, prepared, Path(tmp), traced) as launch,
    ):
        progress.say(f"[{spec.label}] {doing} (timeout {waiting.timeout:g}s)")
        finished = run_logged(
            launch.argv,
            log_path=log_path,
            timeout=waiting.timeout,
            env=launch.env,
            on_line=lambda line: progress.line(spec.label, line) if _is_probe_line(line) else None,
        )
        raw, unreadable = read_result(launch.results or Path(tmp))
        trace = read_json_object(launch.trace) if launch.trace else ({}, "")
        ended = environments.ended(launch, finished, raw is not None or unreadable is not None)
    if finished.log_error is not None:
        # The run's log is not whole because the machine failed (a full or read-only disk): what
        # the run did is not judged, and the command ends with the fault.
        raise MachineFaultError(
            f"the machine failed during a run of {spec.label}: {finished.log_error}", MACHINE_TODO
        )
    return Launched(launch, finished, raw, unreadable, ended, trace)


@dataclass(frozen=True)
class Cell:
    """What a record says beyond how the run went: which scenario, when, under which timeout."""

    spec: EnvSpec
    scenario: Scenario
    started: str
    timeout: float


def record_of(cell: Cell, done: Launched, lock: Lock, extra: dict[str, object]) -> RunRecord:
    """The record of a run that started: its outcome classified from how it ended and what it left."""
    finished, ended = done.finished, done.ended
    outcome, document, failure = classify(
        ended.exit_code,
        done.raw,
        finished.log_tail,
        timed_out=finished.timed_out,
        expected_sha256=cell.scenario.sha256,
        unreadable=done.unreadable,
        timeout=cell.timeout,
        memory_limit=ended.memory_limit,
    )
    found = dict(done.launch.extra)
    if cell.spec.flavour is Flavour.CUDA:
        found["ran_on"] = ran_on(document)
    if finished.leftovers:
        found["leftover_processes_killed"] = finished.leftovers
    return RunRecord(
        spec=cell.spec,
        scenario=cell.scenario.name,
        scenario_sha256=cell.scenario.sha256,
        outcome=outcome,
        exit_code=ended.exit_code,
        document=document,
        failure=failure,
        log_tail=finished.log_tail,
        command=done.launch.shown,
        started_at=cell.started,
        duration_s=round(finished.seconds, 3),  # as stored, so a reload compares equal
        lock_sha256=lock.sha256,
        extra={**extra, **found},
        timeout_s=cell.timeout,
    )


def skip_record(cell: Cell, exc: TfbisectError) -> RunRecord:
    """Infrastructure, not behaviour: a skip with its reason, that a later run retries.

    Raises MachineFaultError instead when the reason is the machine's (a full disk under `pip
    wheel`, a node's engine out of space while pulling: "No such image"): no skip is stored for
    a version that only a failing machine kept from being tested."""
    fault = machine_fault_in(f"{exc.what}\n{exc.todo}", f"preparing {cell.spec.label}")
    if fault is not None:
        raise fault from exc
    return RunRecord(
        spec=cell.spec,
        scenario=cell.scenario.name,
        scenario_sha256=cell.scenario.sha256,
        outcome=Outcome.SKIP,
        exit_code=None,
        document=None,
        failure=Failure(type(exc).__name__, exc.what),
        log_tail=exc.what[-4000:],
        command="",
        started_at=cell.started,
        duration_s=0.0,
        extra={"todo": exc.todo},
        infrastructure=True,
        timeout_s=cell.timeout,
    )


def _is_probe_line(line: str) -> bool:
    return line.startswith(("probe ", "verdict:"))


def read_json_object(path: Path, limit: int = TRACE_MAX_BYTES) -> tuple[dict[str, Any] | None, str]:
    """A JSON object a run left (hostile input), or None and why not: only a regular file, never
    through a link, never past the cap."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return None, "wrote no trace"
    except OSError as exc:  # a link (ELOOP), a FIFO with no writer …
        return None, f"left a trace that cannot be opened safely ({exc.strerror})"
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, "left a trace that is not a regular file"
        raw = stream.read(limit + 1)
    if len(raw) > limit:
        return None, f"left a trace larger than the {limit // (1024 * 1024)} MiB cap"
    return parse_json_object(raw)


def parse_json_object(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        found = jsonread.loads(raw)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deeply
        return None, f"left a trace that is not JSON ({str(exc)[:200]})"
    if not isinstance(found, dict):
        return None, "left a trace that is not a JSON object"
    return found, ""
