"""What counts as old and new: a record's state under the search's terms.

By default the state is the scenario's verdict (reproduced or not); `--probe NAME`
narrows it to one probe (mismatch or match).  An error has a state of its own, named by
exception type and normalised message, so that an error just like the bad end's counts as
bad and any other is a different failure, never bad.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tfbisect.core.outcome import Outcome
from tfbisect.core.record import Failure, RunRecord
from tfbisect.search.state import Class


@dataclass(frozen=True)
class State:
    name: str  # "reproduced", "not_reproduced", "mismatch", "match" or "error: <signature>"

    @property
    def is_error(self) -> bool:
        return self.name.startswith("error")


def state_of(record: RunRecord, probe: str | None) -> State | None:
    """The record's state, or None when it cannot be tested (a skip)."""
    if record.outcome is Outcome.SKIP:
        return None
    if record.outcome in (Outcome.ERROR, Outcome.TIMEOUT):
        signature = record.failure.signature if record.failure else record.outcome.value
        return State(f"error: {signature}")
    if probe is None:
        return State(record.outcome.value)
    found = record.probe(probe)
    if found is None:
        return State(f"error: NoSuchProbe: {probe}")
    if found["outcome"] == "error":
        error = found.get("error") or {}
        return State(f"error: {Failure(error.get('type', '?'), error.get('message', '')).signature}")
    return State(str(found["outcome"]))


def failure_text(record: RunRecord, probe: str | None) -> str | None:
    """The real failure ("RuntimeError: shapes (3, 4) …") when the record's state is one, else None.

    The normalised signature is only for comparing failures; people are shown this."""
    if record.outcome in (Outcome.ERROR, Outcome.TIMEOUT):
        failure = record.failure or Failure(record.outcome.value, "")
        return f"{failure.type}: {failure.message}"
    if probe is None or record.outcome is Outcome.SKIP:
        return None
    found = record.probe(probe)
    if found is None:
        return f"NoSuchProbe: the document has no probe {probe!r}"
    if found.get("outcome") == "error":
        error = found.get("error") or {}
        return f"{error.get('type', '?')}: {error.get('message', '')}"
    return None


class Judgement(Protocol):
    """How a search classifies states, and what it calls its two sides."""

    @property
    def old_name(self) -> str: ...

    @property
    def new_name(self) -> str: ...

    def classify(self, state: State | None) -> Class: ...


@dataclass(frozen=True)
class FailureTerms:
    """Failing or not, as a search of its own: `--regress error` (any failure counts), or where
    the failure of a failing end began (that failure only: another one is `other`).  Runs that
    answer the question either way are the side without the failure."""

    failing_old: bool  # the older end is the one that fails: the search is for where it went away
    signature: str | None  # the failing end's state name; None: any failure
    old_name: str
    new_name: str

    def fails(self, state: State) -> bool:
        return state.is_error and (self.signature is None or state.name == self.signature)

    def classify(self, state: State | None) -> Class:
        if state is None:
            return Class.SKIP
        if self.fails(state):
            return Class.OLD if self.failing_old else Class.NEW
        if state.is_error:
            return Class.OTHER
        return Class.NEW if self.failing_old else Class.OLD


def failure_terms(
    old: State, new: State, *, any_failure: bool, term_old: str | None, term_new: str | None
) -> FailureTerms:
    """Terms for a search between a failing and a working end (in either order)."""
    failing_old = old.is_error and not new.is_error
    failing = old if failing_old else new
    without, with_ = "working", "failing"
    return FailureTerms(
        failing_old=failing_old,
        signature=None if any_failure else failing.name,
        old_name=term_old or (with_ if failing_old else without),
        new_name=term_new or (without if failing_old else with_),
    )


@dataclass(frozen=True)
class Terms:
    old: State
    new: State
    old_name: str  # what the report calls the older end's state ("good")
    new_name: str  # ... and the newer end's ("bad")

    def classify(self, state: State | None) -> Class:
        if state is None:
            return Class.SKIP
        if state == self.old:
            return Class.OLD
        if state == self.new:
            return Class.NEW
        return Class.OTHER


BAD_STATES = {"reproduced", "mismatch"}


def terms_for(old: State, new: State, term_old: str | None = None, term_new: str | None = None) -> Terms:
    """Regression (good -> bad) or fix (bad -> good), read from the ends unless named."""
    if old.name in BAD_STATES or (new.name not in BAD_STATES and not new.is_error and old.is_error):
        default_old, default_new = "bad", "good"  # searching for the fix
    else:
        default_old, default_new = "good", "bad"
    return Terms(old=old, new=new, old_name=term_old or default_old, new_name=term_new or default_new)
