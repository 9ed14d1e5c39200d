from __future__ import annotations

import json
from typing import Any

from tfbisect.core.outcome import Outcome
from tfbisect.core.record import Failure, classify, exception_from_log
from tfbisect.core.schema import problems


def run(
    code: int | None, document: Any, *, timed_out: bool = False, log: str = "", sha: str | None = None
) -> tuple[Outcome, dict[str, Any] | None, Failure | None]:
    text = document if isinstance(document, str) or document is None else json.dumps(document)
    raw = text.encode() if text is not None else None
    expected = sha or (document["scenario"]["sha256"] if isinstance(document, dict) else "0" * 64)
    return classify(code, raw, log, timed_out=timed_out, expected_sha256=expected)


def test_recorded_real_document_validates(tf22_document: dict[str, Any]) -> None:
    assert problems(tf22_document) == []


def test_reproduced_and_not(tf22_document: dict[str, Any]) -> None:
    outcome, document, failure = run(1, tf22_document)
    assert outcome is Outcome.REPRODUCED and failure is None and document == tf22_document
    tf22_document["verdict"]["outcome"] = "not_reproduced"
    assert run(0, tf22_document)[0] is Outcome.NOT_REPRODUCED


def test_exit_code_must_agree_with_verdict(tf22_document: dict[str, Any]) -> None:
    outcome, _, failure = run(0, tf22_document)
    assert outcome is Outcome.ERROR and failure is not None and failure.type == "InconsistentResult"


def test_skip_exit_125(tf22_document: dict[str, Any]) -> None:
    tf22_document["verdict"]["outcome"] = "skip"
    outcome, _, failure = run(125, tf22_document)
    assert outcome is Outcome.SKIP and failure is not None


def test_timeout_is_never_good_or_bad(tf22_document: dict[str, Any]) -> None:
    outcome, _, failure = run(None, tf22_document, timed_out=True)
    assert outcome is Outcome.TIMEOUT and failure is not None and failure.type == "Timeout"


def test_crash_records_exception_type_and_message() -> None:
    log = (
        'Traceback (most recent call last):\n  File "x.py", line 3\nRuntimeError: boom at 0x7f00 in /tmp/x\n'
    )
    outcome, _, failure = run(1, None, log=log)
    # exit 1 without a document is a crash (Python's own exit code), not "reproduced"
    assert outcome is Outcome.ERROR and failure == Failure("RuntimeError", "boom at 0x7f00 in /tmp/x")
    assert run(1, None, log="just text")[2] == Failure(
        "NoResult", "exited 1 without writing a result document"
    )
    outcome, _, failure = run(3, None, log=log)
    assert outcome is Outcome.ERROR and failure == Failure("RuntimeError", "boom at 0x7f00 in /tmp/x")


def test_killed_by_signal() -> None:
    outcome, _, failure = run(-9, None, log="Segmentation fault")
    assert outcome is Outcome.ERROR and failure is not None and failure.type == "Killed"


def test_invalid_json_and_schema(tf22_document: dict[str, Any]) -> None:
    outcome, _, failure = run(0, "{half")
    assert outcome is Outcome.ERROR and failure is not None and failure.type == "InvalidResult"
    del tf22_document["verdict"]
    outcome, _, failure = run(1, tf22_document)
    assert (
        outcome is Outcome.ERROR
        and failure is not None
        and "'verdict' is a required property" in failure.message
    )


def test_probe_error_needs_error_details(tf22_document: dict[str, Any]) -> None:
    broken = next(p for p in tf22_document["probes"] if p["outcome"] == "error")
    del broken["error"]
    assert any("'error' is a required property" in p for p in problems(tf22_document))


def test_changed_scenario_is_not_trusted(tf22_document: dict[str, Any]) -> None:
    outcome, _, failure = run(1, tf22_document, sha="f" * 64)
    assert outcome is Outcome.ERROR and failure is not None and failure.type == "StaleScenario"


def test_failure_signature_ignores_numbers_paths_and_addresses() -> None:
    one = Failure("ValueError", "Shapes (50, 1, 3) and (50, 3) at 0xdeadbeef in /tmp/a/b.py")
    two = Failure("ValueError", "Shapes (32, 1, 3) and (32, 3) at 0x1234 in /home/u/c.py")
    assert one.signature == two.signature
    assert one.signature != Failure("TypeError", one.message).signature


def test_exception_from_log_without_traceback() -> None:
    assert exception_from_log("").type == "Crash"
    assert exception_from_log("last words\n").message == "last words"
