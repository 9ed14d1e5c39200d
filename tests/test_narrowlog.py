"""The narrowing's log model: notes as codes with fields, worded only in findings.py (the same
sentences as when the narrowing wrote them itself), a narrowing of the previous version (notes as
text) still read word for word, and the suspects read back from a log once, defensively."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tfbisect.report import findings, narrowdata, reportdata
from tfbisect.search.bisectlog import BisectReport, Status
from tfbisect.search.narrowlog import (
    NARROWING_VERSION,
    NOTE_FIELDS,
    SUSPECTS_KEPT,
    Narrowing,
    NarrowNote,
    NarrowStatus,
    NoteCode,
    Suspect,
    Suspects,
    TraceSummary,
)

# Each code with the fields the narrowing fills, and the sentence it wrote before notes had codes.
SENTENCES: dict[NoteCode, tuple[dict[str, str], str]] = {
    NoteCode.LEGACY_TEXT: ({"text": "anything {at} all"}, "anything {at} all"),
    NoteCode.NO_RCS: ({"version": "2.13.0"}, "the index has no release candidates of 2.13.0"),
    NoteCode.RCS_DELETED: (
        {"version": "2.4.0", "oldest": "2.6.0rc0", "uploaded": "2021-06-29"},
        "the index has no release candidates of 2.4.0 (its oldest release candidate is 2.6.0rc0, uploaded "
        "2021-06-29): old RCs were deleted",
    ),
    NoteCode.NO_NIGHTLIES: ({}, "the index has no tf-nightly builds"),
    NoteCode.NIGHTLIES_GONE: (
        {"start": "2026-02-02", "version": "2.4.0", "uploaded": "2020-12-14"},
        "nightlies on the index start at 2026-02-02, after this range (2.4.0 was uploaded on 2020-12-14): "
        "older nightlies are gone",
    ),
    NoteCode.NO_NIGHTLY_BETWEEN: ({}, "no tf-nightly build lies between these two in version order"),
    NoteCode.BUILDS_FLIP: (
        {},
        "the builds in between flip back and forth, so no pair was compared or traced",
    ),
    NoteCode.CANNOT_RUN: (
        {"version": "2.13.0rc0"},
        "2.13.0rc0 cannot run here, so nothing was compared or traced",
    ),
    NoteCode.STOPPED: (
        {"error_type": "OSError", "message": "disk full"},
        "the narrowing stopped: OSError: disk full",
    ),
    NoteCode.NO_LOCKS: ({"error": "no lock at x"}, "the dependency changes are not listed: no lock at x"),
    NoteCode.NO_PROBE_CHANGED: ({}, "no probe changed between the two builds, so none was traced"),
    NoteCode.PASSING_UNTRACED: (
        {"probe": "forward", "error": "it timed out"},
        "the passing probe forward could not be traced (it timed out); the suspects are ranked without it",
    ),
    NoteCode.UNTRACED_FAILED: (
        {"probe": "grad", "error": "it crashed"},
        "the untraced run of grad failed: it crashed",
    ),
    NoteCode.TRACE_FAILED: (
        {"what": "the trace is empty", "todo": "run it again"},
        "the trace is empty (what to do: run it again)",
    ),
    NoteCode.PROOF_FAILED: (
        {"what": "proof runs in venvs"},
        "the suspects were not proven: proof runs in venvs",
    ),
    NoteCode.BACKWARDS_IN_TIME: (
        {"old": "2.3.4", "old_uploaded": "2021-08-11", "new": "2.4.0", "new_uploaded": "2020-12-14"},
        "the last good release 2.3.4 (uploaded 2021-08-11) was published after the first bad one 2.4.0 "
        "(uploaded 2020-12-14): the dependency changes below run backwards in time",
    ),
}


@pytest.mark.parametrize("code", list(NoteCode), ids=lambda code: code.value)
def test_each_note_says_what_the_narrowing_said_before(code: NoteCode) -> None:
    fields, sentence = SENTENCES[code]
    note = NarrowNote.of(code, **fields)
    assert findings.note_text(note) == sentence
    # through a log and back, the same note
    kept = json.loads(json.dumps(note.to_dict()))
    assert kept == {"code": code.value, **fields}
    assert NarrowNote.read(kept) == note


def test_a_note_has_exactly_its_codes_fields() -> None:
    assert set(findings.NOTE_WORDS) == set(NoteCode) == set(NOTE_FIELDS)
    with pytest.raises(ValueError, match="no_rcs"):
        NarrowNote.of(NoteCode.NO_RCS)
    with pytest.raises(ValueError):
        NarrowNote.of(NoteCode.NO_NIGHTLIES, version="2.4.0")
    # a field holding braces is printed as it is, never read as a format
    note = NarrowNote.of(NoteCode.NO_LOCKS, error="{text} {0} {__class__}")
    assert findings.note_text(note) == "the dependency changes are not listed: {text} {0} {__class__}"


def test_a_note_from_an_edited_log_is_read_or_left_out() -> None:
    assert NarrowNote.read({"code": "no_such_code"}) is None
    assert NarrowNote.read(5) is None and NarrowNote.read(None) is None and NarrowNote.read(["x"]) is None
    assert NarrowNote.read({"code": "no_rcs", **{str(i): "x" for i in range(30)}}) is None  # too big
    odd = NarrowNote.read({"code": "cannot_run", "version": 7})
    assert (
        odd is not None and findings.note_text(odd) == "? cannot run here, so nothing was compared or traced"
    )
    assert (
        findings.note_text(NarrowNote(NoteCode.CANNOT_RUN))
        == "? cannot run here, so nothing was compared or traced"
    )


def version_one_narrowing() -> dict[str, Any]:
    """A narrowing as tfbisect wrote it before notes had codes: no "version", notes and a trace's
    error as text."""
    return {
        "release_range": ["2.3.4", "2.4.0"],
        "status": "nothing_finer",
        "notes": ["the index has no release candidates of 2.4.0", "{a note} with braces", 5],
        "trace": {
            "probe": "grad",
            "passing_probe": None,
            "old": "2.3.4",
            "new": "2.4.0",
            "seconds": {},
            "untraced_seconds": None,
            "packages": ["tensorflow"],
            "error": "the trace is empty (what to do: run it again)",
        },
        "suspects": None,
    }


def test_a_narrowing_of_the_previous_version_reads_word_for_word() -> None:
    found = Narrowing.from_dict(version_one_narrowing())
    assert [note.code for note in found.notes] == [NoteCode.LEGACY_TEXT, NoteCode.LEGACY_TEXT]  # 5 is no note
    assert narrowdata.notes_of(found) == [
        "the index has no release candidates of 2.4.0",
        "{a note} with braces",
    ]
    assert found.trace is not None and found.trace.error == NarrowNote.legacy(
        "the trace is empty (what to do: run it again)"
    )
    assert "no suspect code is named: the trace is empty (what to do: run it again). " in (
        findings.trace_failed_text(found.trace)
    )
    summary = reportdata.narrowing_summary(found)
    assert summary["notes"] == ["the index has no release candidates of 2.4.0", "{a note} with braces"]
    assert summary["trace"]["error"] == "the trace is empty (what to do: run it again)"
    # written again, it is of this version, and reads back the same
    again = found.to_dict()
    assert again["version"] == NARROWING_VERSION and again["notes"][0]["code"] == "legacy_text"
    assert Narrowing.from_dict(json.loads(json.dumps(again))) == found


def test_a_narrowing_newer_than_this_tfbisect_is_dropped_not_misread() -> None:
    report = BisectReport(
        request={},
        command="tfbisect bisect",
        versions=["2.3.4", "2.4.0"],
        status=Status.FOUND,
        last_old="2.3.4",
        first_new="2.4.0",
    )
    data = report.to_dict()
    data["narrowing"] = {**version_one_narrowing(), "version": NARROWING_VERSION + 1}
    assert BisectReport.from_dict(data).narrowing is None  # the bisection stays; `narrow` redoes it
    data["narrowing"]["version"] = NARROWING_VERSION
    assert BisectReport.from_dict(data).narrowing is not None


def suspect(file: str = "tensorflow/python/ops/math_grad.py", **changes: Any) -> Suspect:
    made = Suspect(
        file=file,
        function="grad",
        score=0.7071067811,
        failed=1,
        passed=1,
        executed_old=(3,),
        executed_new=(3, 4),
        documentation_only=False,
        old_lines=(1, 4),
        new_lines=(1, 6),
        excerpt="@@ -1,4 +1,6 @@\n def grad(x):\n-    return x\n+    return -x",
        only_in="new",
        caller="a.py:f (line 3)",
        old_link="https://github.com/tensorflow/tensorflow/blob/v2.4.0-rc0/a.py#L1-L4",
        new_link="https://github.com/tensorflow/tensorflow/blob/v2.4.0-rc1/a.py#L1-L6",
        generated=True,
    )
    return dataclasses.replace(made, **changes)


def test_suspects_read_back_as_they_were_written() -> None:
    found = Suspects.of(
        tuple(suspect(f"f{i}.py", documentation_only=i > 0) for i in range(SUSPECTS_KEPT + 5)),
        files_traced=40,
        files_changed=30,
        hunks=31,
        missing_sources=("gone.py",),
    )
    assert found.total == SUSPECTS_KEPT + 5 and found.executed_python_changed
    kept = found.cut()
    assert len(kept.suspects) == SUSPECTS_KEPT and kept.total == SUSPECTS_KEPT + 5
    document = json.loads(json.dumps(kept.to_dict()))
    assert document["suspects_total"] == SUSPECTS_KEPT + 5 and document["suspects"][0]["generated"] is True
    back = Suspects.read(document)
    assert back is not None
    assert back.suspects[0] == dataclasses.replace(kept.suspects[0], score=round(kept.suspects[0].score, 6))
    assert (back.total, back.files_traced, back.files_changed, back.hunks) == (SUSPECTS_KEPT + 5, 40, 30, 31)
    assert back.missing_sources == ("gone.py",) and back.executed_python_changed
    # the flag is the narrowing's: the first 25 kept need not show the code change that set it
    assert not Suspects.of((suspect(documentation_only=True),), 1, 1, 1, ()).executed_python_changed


def test_suspects_from_a_hostile_log_are_bounded_and_linked_only_to_github() -> None:
    evil = suspect(old_link="javascript:alert(1)", new_link="https://github.com/x y").to_dict()
    evil["excerpt"] = "x" * 10**6
    evil["file"] = "f" * 10_000
    evil["executed_new"] = list(range(20_000))
    data = {"suspects": [evil] * (SUSPECTS_KEPT + 10) + ["x"], "suspects_total": True, "hunks": -1}
    back = Suspects.read(data)
    assert back is not None and len(back.suspects) == SUSPECTS_KEPT
    first = back.suspects[0]
    assert first.old_link is None and first.new_link is None
    assert len(first.excerpt) < 20_000 and len(first.file) == 300 and len(first.executed_new) == 10_000
    assert back.total == SUSPECTS_KEPT and back.hunks == 0
    assert Suspects.read("all") is None and Suspects.read(None) is None


def test_a_narrowing_keeps_its_model_through_the_log() -> None:
    n = Narrowing(
        release_range=("2.3.4", "2.4.0"),
        status=NarrowStatus.NARROWED,
        notes=[NarrowNote.of(NoteCode.NO_RCS, version="2.4.0"), NarrowNote.legacy("old words")],
        trace=TraceSummary(
            "grad",
            None,
            "2.3.4",
            "2.4.0",
            {},
            None,
            ("tensorflow",),
            error=NarrowNote.of(NoteCode.TRACE_FAILED, what="w", todo="t"),
        ),
        suspects=Suspects.of((suspect(score=1.0),), 1, 1, 1, ()),
    )
    document = json.loads(json.dumps(n.to_dict()))
    assert document["notes"] == [
        {"code": "no_rcs", "version": "2.4.0"},
        {"code": "legacy_text", "text": "old words"},
    ]
    assert document["trace"]["error"] == {"code": "trace_failed", "what": "w", "todo": "t"}
    assert Narrowing.from_dict(document) == n
