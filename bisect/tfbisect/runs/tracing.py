"""The narrowing's measuring runs beside the stored ones: some probes alone, in an environment
prepared (or reused) exactly as for a stored run, under the probe tracer, read back and never
stored; and where an environment's installed sources can be read (`source_places`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfbisect.core import interrupt
from tfbisect.core.errors import TraceError
from tfbisect.core.fsio import stamp
from tfbisect.core.packagedata import data_file
from tfbisect.core.scenario import Scenario
from tfbisect.core.spec import EnvSpec
from tfbisect.envs.environments import Traced
from tfbisect.runs.launching import Launched, launch_and_wait, parse_json_object

if TYPE_CHECKING:
    from tfbisect.runs.runner import Runner

TRACER = "probe_tracer.py"  # package data: the tracer a traced run runs the scenario under
PROBE_NAME = re.compile(r"[a-z0-9_]{1,100}")  # as the result schema names probes; part of a log's name


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
        """See `Runner.trace`."""
        interrupt.check()
        names = tuple(probes)
        _refuse(spec, names, traced)
        try:
            _, prepared = self.runner.prepare(spec, scenario)
        except self.runner.PREPARE_FAILURES as exc:
            raise TraceError(
                f"{spec.label}: the environment for running {', '.join(names) or 'the whole scenario'} alone could not be "
                f"prepared: {exc.what}",
                exc.todo,
            ) from exc
        request = Traced(
            Path(str(data_file(TRACER))) if traced else None, tuple(packages), names, window_only
        )
        what = f"{'trace' if traced else 'probes'}-{'+'.join(names)[:120] or 'whole'}"
        log_path = self.runner.log_dir(scenario) / f"{spec.key}.{what}.{stamp()}-{os.getpid()}.log"
        done = launch_and_wait(
            self.runner.environment(spec.backend),
            spec,
            scenario,
            prepared,
            log_path,
            f"running {', '.join(names) or 'the whole scenario'} alone{' under the tracer' if traced else ''}",
            self.runner.waiting,
            request,
        )
        return self._read(spec, names, done, log_path)

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
