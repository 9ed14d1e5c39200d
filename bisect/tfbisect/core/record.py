"""A stored run: the spec, the outcome, the scenario's document and what is needed to redo it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tfbisect import __version__
from tfbisect.core import jsonread
from tfbisect.core.outcome import VERDICT_EXIT, Outcome, signal_name
from tfbisect.core.schema import problems
from tfbisect.core.spec import EnvSpec, Flavour
from tfbisect.core.textsafe import bounded, clip

RECORD_VERSION = 1
_EXCEPTION_LINE = re.compile(
    r"^(?P<type>[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)):\s*(?P<msg>.*)$"
)


@dataclass(frozen=True)
class Failure:
    """Why a run is `error`, `timeout` or `skip`: compared by type and normalised message."""

    type: str
    message: str

    @property
    def signature(self) -> str:
        # Addresses, numbers and paths differ from run to run of the same failure.
        text = re.sub(r"0x[0-9a-f]+", "ADDR", self.message.lower())
        text = re.sub(r"/[^\s:'\"]+", "PATH", text)
        text = re.sub(r"\d+", "N", text)
        return f"{self.type}: {' '.join(text.split())[:200]}"

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message}


@dataclass(frozen=True)
class RunRecord:
    spec: EnvSpec
    scenario: str
    scenario_sha256: str
    outcome: Outcome
    exit_code: int | None
    document: dict[str, Any] | None
    failure: Failure | None
    log_tail: str
    command: str
    started_at: str
    duration_s: float
    lock_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    tool_version: str = __version__
    timeout_s: float | None = None  # the --timeout it ran under: a timeout is only as final as that
    infrastructure: bool = False  # a skip made by the environment (no install, no engine): retried

    def answers(self, timeout: float) -> bool:
        """Whether this stored record answers a run with `timeout`, so it can be reused.

        An infrastructure skip (a failed install, no engine) is retried; a timeout is final
        only for a timeout no longer than the one it ran under."""
        if self.infrastructure:
            return False
        if self.outcome is Outcome.TIMEOUT:
            return self.timeout_s is not None and self.timeout_s >= timeout
        return True

    @property
    def verdict_summary(self) -> str:
        if self.document and self.document.get("verdict"):
            return str(self.document["verdict"]["summary"])
        if self.failure:
            return f"{self.failure.type}: {self.failure.message}"
        return self.outcome.value

    @property
    def git_version(self) -> str | None:
        if self.document:
            value = self.document.get("environment", {}).get("git_version")
            return str(value) if value else None
        return None

    @property
    def ran_on(self) -> str | None:
        """For a CUDA cell, where its TF ran: the GPU it saw, or "CPU" (None for a CPU cell)."""
        if self.spec.flavour is not Flavour.CUDA:
            return None
        return ran_on(self.document)

    def probe(self, name: str) -> dict[str, Any] | None:
        for probe in (self.document or {}).get("probes", []):
            if probe.get("name") == name:
                return dict(probe)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "record_version": RECORD_VERSION,
            "tool_version": self.tool_version,
            "spec": self.spec.to_dict(),
            "key": self.spec.key,
            "scenario": self.scenario,
            "scenario_sha256": self.scenario_sha256,
            "lock_sha256": self.lock_sha256,
            "outcome": self.outcome.value,
            "exit_code": self.exit_code,
            "failure": self.failure.to_dict() if self.failure else None,
            "command": self.command,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "timeout_s": self.timeout_s,
            "infrastructure": self.infrastructure,
            "extra": self.extra,
            "log_tail": self.log_tail,
            "document": self.document,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        failure = data.get("failure")
        return cls(
            spec=EnvSpec.from_dict(data["spec"]),
            scenario=data["scenario"],
            scenario_sha256=data["scenario_sha256"],
            outcome=Outcome(data["outcome"]),
            exit_code=data.get("exit_code"),
            document=data.get("document"),
            failure=Failure(failure["type"], failure["message"]) if failure else None,
            log_tail=data.get("log_tail", ""),
            command=data.get("command", ""),
            started_at=data.get("started_at", ""),
            duration_s=float(data.get("duration_s", 0.0)),
            lock_sha256=data.get("lock_sha256", ""),
            extra=dict(data.get("extra") or {}),
            tool_version=data.get("tool_version", "?"),
            timeout_s=float(data["timeout_s"]) if data.get("timeout_s") is not None else None,
            # records of the first landing kept the flag in `extra`
            infrastructure=bool(
                data.get("infrastructure", (data.get("extra") or {}).get("infrastructure", False))
            ),
        )


def ran_on(document: dict[str, Any] | None) -> str:
    """Where a CUDA image's TF ran, from what the scenario saw: "GPU: <name> (compute X.Y,
    driver D)" or "CPU (no GPU visible)"; "unknown" when the scenario did not get that far."""
    environment = (document or {}).get("environment")
    if not isinstance(environment, dict) or "tensorflow" not in environment:
        return "unknown (the scenario did not report its devices)"
    gpus = environment.get("gpus")
    if gpus is None:  # a scenario that lists devices only
        reported = environment.get("devices")
        devices: list[Any] = reported if isinstance(reported, list) else []
        gpus = [{"name": d.get("name")} for d in devices if isinstance(d, dict) and d.get("type") == "GPU"]
    if not gpus:
        return "CPU (no GPU visible)"
    listed = [gpu for gpu in gpus if isinstance(gpu, dict)] if isinstance(gpus, list) else []
    shown = []
    for gpu in listed[:8]:  # what the scenario reports is bounded here: 8 GPUs, 300 characters
        capability = (
            f"compute {clip(str(gpu['compute_capability']), 20)}" if gpu.get("compute_capability") else ""
        )
        shown.append(clip(str(gpu.get("name", "?")), 80) + (f" ({capability})" if capability else ""))
    more = f" and {len(listed) - 8} more" if len(listed) > 8 else ""
    driver = (
        f"; driver {clip(str(environment['nvidia_driver']), 40)}" if environment.get("nvidia_driver") else ""
    )
    text = "GPU: " + "; ".join(shown) + more + driver
    return " ".join(clip(text, 300).split())  # one line, whatever the names hold


def exception_from_log(log: str) -> Failure:
    """The last `SomeError: message` line of a traceback, else the last line of the log."""
    lines = [line.strip() for line in log.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line)
        if match:
            return Failure(clip(match.group("type").rsplit(".", 1)[-1], 200), clip(match.group("msg")))
    return Failure("Crash", clip(lines[-1]) if lines else "no output")


def classify(
    exit_code: int | None,
    raw_document: bytes | None,
    log: str,
    *,
    timed_out: bool,
    expected_sha256: str,
    unreadable: Failure | None = None,
    timeout: float | None = None,
    memory_limit: str | None = None,
) -> tuple[Outcome, dict[str, Any] | None, Failure | None]:
    """Map a finished process onto an outcome; only a valid, consistent document is good or bad.

    `raw_document` is untrusted bytes; `unreadable` says why there is none to read (a symlink,
    a FIFO …); `memory_limit` is set when the container was killed for running out of memory.
    The document returned is bounded (long strings clipped, deep nesting cut)."""
    if timed_out:
        limit = f" in {timeout:g}s" if timeout is not None else " in time"
        return Outcome.TIMEOUT, None, Failure("Timeout", f"the scenario did not finish{limit} and was killed")
    if memory_limit is not None:
        return (
            Outcome.ERROR,
            None,
            Failure(
                "OutOfMemory",
                f"out of memory: the container's {memory_limit} limit was reached and it was killed",
            ),
        )
    if unreadable is not None:
        return Outcome.ERROR, None, unreadable
    document, invalid = _parse(raw_document)
    if invalid is not None:
        return Outcome.ERROR, None, invalid
    if exit_code not in VERDICT_EXIT.values():
        failure = exception_from_log(log)
        signame = signal_name(exit_code)
        if signame is not None:
            failure = Failure("Killed", f"killed by {signame}; last output: {failure.message}")
        # Only a document that validates is kept: reports and summaries read it without doubt.
        return Outcome.ERROR, document if document is not None and not _problems(document) else None, failure
    if document is None:
        # Python exits 1 on an uncaught exception, which is also "reproduced": without a
        # document it is a crash, named by its traceback when there is one.
        crash = exception_from_log(log)
        if crash.type == "Crash":
            crash = Failure("NoResult", f"exited {exit_code} without writing a result document")
        return Outcome.ERROR, None, crash
    found = _problems(document)
    if found:
        return (
            Outcome.ERROR,
            None,
            Failure("InvalidResult", "the result does not match the schema: " + clip("; ".join(found[:5]))),
        )
    verdict = document["verdict"]["outcome"]
    if VERDICT_EXIT[verdict] != exit_code:
        return (
            Outcome.ERROR,
            document,
            Failure("InconsistentResult", f"exit code {exit_code} disagrees with the verdict {verdict!r}"),
        )
    if document["scenario"]["sha256"] != expected_sha256:
        return (
            Outcome.ERROR,
            document,
            Failure("StaleScenario", "the scenario file changed while it ran (its hash differs)"),
        )
    if verdict == "skip":
        return Outcome.SKIP, document, Failure("Skip", clip(document["verdict"]["summary"]))
    return Outcome(verdict), document, None


def _problems(document: Any) -> list[str]:
    try:
        return problems(document)
    except RecursionError:
        return ["(document): nested too deeply to validate"]


def _parse(raw: bytes | None) -> tuple[Any, Failure | None]:
    """The document as a bounded JSON value, or why it is not one."""
    if raw is None:
        return None, None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, Failure("InvalidResult", f"the result is not UTF-8: invalid byte at offset {exc.start}")
    try:
        value = jsonread.loads(text)
    except RecursionError:
        return None, Failure("InvalidResult", "the result is JSON nested too deeply to read")
    except ValueError as exc:
        return None, Failure("InvalidResult", clip(f"the result is not JSON: {exc}"))
    return bounded(value), None
