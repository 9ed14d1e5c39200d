"""The ranking's tie-breaks from when and how deep the lines ran: among equal densities, the unit
where the failing runs of the two versions first diverge before the others, then the one nearer
the probe, on small sources and traces made in the test (pure logic); traces without order or
depth (stored before the tracer recorded them) rank as before, and damaged order or depth fields are refused."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from test_suspects import FakeRun
from tfbisect.core.spec import EnvSpec
from tfbisect.narrow.ranking import find_suspects, ranking_key
from tfbisect.narrow.traces import ProbeRunner, ProbeTraces, Trace

# `early` gains a line inside a statement the tracer reports at its first line (2), `late` one
# before its return: code added with nothing in its place, where the runs part.  `early` is the
# larger unit (a lower share of it changed).
OLD = """\
def early(x):
    y = combine(
        x,
        1,
    )
    a = 1
    b = 2
    c = 3
    d = 4
    return y + a + b + c + d


def late(x):
    return x * 2


def combine(x, y, scale=1):
    return (x + y) * scale
"""
NEW = OLD.replace("        1,\n", "        1,\n        scale=2,\n").replace(
    "    return x * 2\n", "    x = abs(x)\n    return x * 2\n"
)
EARLY = {"old": [2, 18, 6, 7, 8, 9, 10], "new": [2, 20, 7, 8, 9, 10, 11]}  # with combine's line
LATE = {"old": [14], "new": [15, 16]}
# The same units with their text replaced, not added to: the statements stand where they stood.
REPLACED = OLD.replace("        1,\n", "        2,\n").replace("x * 2", "x * 3")

# Two units of one size (far enough apart to be two hunks), each gaining one line that runs:
# their density ties, so the order and the depth decide between them.
EVEN_OLD = """\
def early(x):
    y = x + 1
    return y


def spacer():
    a = 1
    b = 2
    c = 3
    return a + b + c


def late(x):
    y = x * 2
    return -y
"""
EVEN_NEW = EVEN_OLD.replace("    y = x + 1\n", "    x = abs(x)\n    y = x + 1\n").replace(
    "    y = x * 2\n", "    x = -x\n    y = x * 2\n"
)
EVEN_EARLY = {"old": [2, 3], "new": [2, 3, 4]}
EVEN_LATE = {"old": [14, 15], "new": [15, 16, 17]}

Step = tuple[str, int, int | None]  # a line as it first ran: file, line, call depth


def schema_1(files: Mapping[str, Sequence[int]]) -> Trace:
    """A trace as the tracer wrote it before it recorded order and depth."""
    return Trace.from_dict(
        {
            "schema": 1,
            "python": "3.8.18",
            "exit_code": 0,
            "packages": {},
            "files": {path: {"lines": sorted(set(lines)), "functions": []} for path, lines in files.items()},
        }
    )


def document(steps: Sequence[Step], *, order: bool = True) -> dict[str, Any]:
    """A schema 2 document: `steps` in the order the lines first ran."""
    files: dict[str, dict[int, tuple[int, int | None]]] = {}
    for number, (path, line, depth) in enumerate(steps):
        files.setdefault(path, {}).setdefault(line, (number, depth))
    written: dict[str, Any] = {}
    for path, lines in files.items():
        ordered = sorted(lines)
        written[path] = {"lines": ordered, "functions": [], "depth": [lines[n][1] for n in ordered]}
        if order:
            written[path]["first"] = [lines[n][0] for n in ordered]
    return {"schema": 2, "python": "3.12.1", "exit_code": 0, "packages": {}, "files": written}


def run(steps: Sequence[Step], *, order: bool = True) -> Trace:
    return Trace.from_dict(document(steps, order=order))


def steps(lines: Sequence[int], depth: int | None = 1, path: str = "p/m.py") -> list[Step]:
    return [(path, line, depth) for line in lines]


def ranked(failing: ProbeTraces, old: str = OLD, new: str = NEW) -> list[str]:
    return [s.function for s in find_suspects({"p/m.py": old}, {"p/m.py": new}, failing).suspects]


def both(
    first: dict[str, list[int]], then: dict[str, list[int]], depths: tuple[Any, Any] = (1, 1)
) -> ProbeTraces:
    """Both failing runs, `first`'s lines running before `then`'s, at those call depths."""
    return ProbeTraces(
        *(run([*steps(first[side], depths[0]), *steps(then[side], depths[1])]) for side in ("old", "new"))
    )


def test_the_unit_where_the_runs_first_diverge_breaks_the_tie() -> None:
    """Both units' changes ran, their own flow the same (no passing probe: both score 1), their
    density the same.  Without order the first in the file ranks first; with it, the one where
    the runs part first, whichever that is."""
    without = ProbeTraces(
        schema_1({"p/m.py": [*EVEN_EARLY["old"], *EVEN_LATE["old"]]}),
        schema_1({"p/m.py": [*EVEN_EARLY["new"], *EVEN_LATE["new"]]}),
    )
    assert ranked(without, EVEN_OLD, EVEN_NEW) == ["early", "late"]
    assert ranked(both(EVEN_EARLY, EVEN_LATE), EVEN_OLD, EVEN_NEW) == ["early", "late"]
    assert ranked(both(EVEN_LATE, EVEN_EARLY), EVEN_OLD, EVEN_NEW) == ["late", "early"]


def test_the_denser_change_comes_before_the_first_divergence() -> None:
    """The runs part first in `early`, but `late`'s change is denser: density decides first (on
    tensorflow#55573 refactorings that ran early parted the runs long before the cause did)."""
    assert ranked(both(EARLY, LATE)) == ["late", "early"]


def test_text_replaced_in_place_is_no_divergence() -> None:
    """A statement whose text changed but that ran where its old text ran in the other version
    parts nothing: with no divergence known for either unit, the density decides (a tie)."""
    runs = [*steps([2, 18, 6, 7, 8, 9, 10]), *steps([14])]
    found = find_suspects({"p/m.py": OLD}, {"p/m.py": REPLACED}, ProbeTraces(run(runs), run(runs)))
    assert [s.function for s in found.suspects] == ["late", "early"]


def test_a_line_removed_where_it_ran_is_where_the_runs_diverge() -> None:
    """A line taken out (`early` and `late` each lose their first line, nothing in its place: equal
    density) parts the runs where it ran in the old run: the unit whose removed line ran first
    ranks first."""
    new = EVEN_OLD.replace("    y = x + 1\n", "").replace("    y = x * 2\n", "")
    old_run, new_run = steps([2, 3, 14, 15]), steps([2, 13])
    assert ranked(ProbeTraces(run(old_run), run(new_run)), EVEN_OLD, new) == ["early", "late"]
    old_run, new_run = steps([14, 15, 2, 3]), steps([13, 2])
    assert ranked(ProbeTraces(run(old_run), run(new_run)), EVEN_OLD, new) == ["late", "early"]


def test_the_unit_nearer_the_probe_breaks_the_tie_where_no_order_is_known() -> None:
    """The old side kept from before the tracer recorded order (an interrupted narrowing's kept
    trace): no divergence is known, the call depth of the new side decides, unknown depth (a
    thread's lines) after every known one, then the place in the file as before."""
    old = schema_1({"p/m.py": [*EVEN_EARLY["old"], *EVEN_LATE["old"]]})

    def new(early: int | None, late: int | None) -> ProbeTraces:
        return ProbeTraces(old, run([*steps(EVEN_EARLY["new"], early), *steps(EVEN_LATE["new"], late)]))

    def order(traces: ProbeTraces) -> list[str]:
        return ranked(traces, EVEN_OLD, EVEN_NEW)

    assert order(new(2, 5)) == ["early", "late"]
    assert order(new(4, 3)) == ["late", "early"]
    assert order(new(None, 9)) == ["late", "early"]
    assert order(new(9, None)) == ["early", "late"]
    assert order(new(None, None)) == ["early", "late"], "the place in the file decides"


def test_the_first_divergence_comes_before_the_depth() -> None:
    """`late` is nearer the probe, but the runs parted first in `early`: the earlier divergence
    wins (what differs first causes what differs after it)."""
    assert ranked(both(EVEN_EARLY, EVEN_LATE, (6, 1)), EVEN_OLD, EVEN_NEW) == ["early", "late"]


def test_the_own_flow_diverging_still_comes_first() -> None:
    """A unit whose own unchanged lines ran differently (`late` takes a branch in the new
    version only) ranks before the unit where the runs parted first."""
    body = "def late(x):\n    w = x\n    if w:\n        w = 1\n    return x * 2\n"
    old = OLD.replace("def late(x):\n    return x * 2\n", body)
    new = NEW.replace("def late(x):\n    x = abs(x)\n    return x * 2\n", body.replace("x * 2", "x * 3"))
    old_run = steps([2, 21, 6, 7, 8, 9, 10, 14, 15, 17])
    new_run = steps([2, 22, 7, 8, 9, 10, 11, 15, 16, 17, 18])  # late: the branch's line too
    assert ranked(ProbeTraces(run(old_run), run(new_run)), old, new) == ["late", "early"]


def test_the_ranking_key_covers_the_order_and_the_depth() -> None:
    """A stored ranking is reused only for the same traces: order and depth included."""
    sources = {"p/m.py": OLD}, {"p/m.py": NEW}
    keys = {
        ranking_key(*sources, failing, None, (None, None))
        for failing in (both(EARLY, LATE), both(LATE, EARLY), both(EARLY, LATE, (2, 2)))
    }
    plain = schema_1({"p/m.py": [*EARLY["old"], *LATE["old"]]})
    keys.add(ranking_key(*sources, ProbeTraces(plain, plain), None, (None, None)))
    assert len(keys) == 4


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ({"first": "0,1"}, "first-execution order for p/m.py is not one per line"),
        ({"first": [0]}, "first-execution order for p/m.py is not one per line"),
        ({"first": [0, -1]}, "first-execution order for p/m.py is not all counts"),
        ({"first": [0, True]}, "first-execution order for p/m.py is not all counts"),
        ({"first": [0, 1.5]}, "first-execution order for p/m.py is not all counts"),
        ({"first": [0, 2**60]}, "first-execution order for p/m.py is not all counts"),
        ({"first": [0, None]}, "first-execution order for p/m.py is not all counts"),
        ({"depth": {"1": 1}}, "call depths for p/m.py are not one per line"),
        ({"depth": [1, 2, 3]}, "call depths for p/m.py are not one per line"),
        ({"depth": [1, 0]}, "call depths for p/m.py are not all depths"),
        ({"depth": [1, "2"]}, "call depths for p/m.py are not all depths"),
        ({"depth": [1, False]}, "call depths for p/m.py are not all depths"),
        ({"depth": [1, 10**9]}, "call depths for p/m.py are not all depths"),
    ],
)
def test_damaged_order_or_depth_is_no_trace(damage: dict[str, Any], message: str) -> None:
    """A damaged trace is refused whole (the narrowing notes it and traces again), never read
    as a partly known order."""
    written = document(steps([1, 2]))
    written["files"]["p/m.py"].update(damage)
    with pytest.raises(ValueError, match=message):
        Trace.from_dict(written)


def test_order_and_depth_are_read_beside_the_lines() -> None:
    trace = run([("p/m.py", 5, 1), ("p/a.py", 2, None), ("p/m.py", 3, 2)])
    assert trace.first == {"p/m.py": {3: 2, 5: 0}, "p/a.py": {2: 1}}
    assert trace.depth == {"p/m.py": {3: 2, 5: 1}, "p/a.py": {}}
    # Either may be absent from a file (nothing known of it); a schema of the future is refused.
    assert run([("p/m.py", 5, 1)], order=False).first == {}
    with pytest.raises(ValueError, match="schema 1 or 2 expected"):
        Trace.from_dict({**document(steps([1])), "schema": 3})


def test_a_stored_trace_with_damaged_order_is_a_note_and_traced_again() -> None:
    """A stored traced run whose order field was damaged is no usable trace: forgotten, with a
    note, and traced again (the fresh one is kept)."""
    good = {**document(steps([1, 2])), "window": {"opened": 1}}
    damaged = {**good, "files": {"p/m.py": {**good["files"]["p/m.py"], "first": [0, "1"]}}}
    events: list[str] = []
    said: list[str] = []
    ran = {"probes": [{"name": "f"}]}
    answers = [FakeRun(damaged, ran, True, events=events), FakeRun(good, ran, False, events=events)]
    probes = ProbeRunner(lambda *args: answers.pop(0), ("p",), said.append)
    assert probes.traced(EnvSpec("2.21.0", "3.12"), "f").document is good
    assert events == ["drop", "keep"] and (probes.runs, probes.reused) == (1, 1)
    assert "is no usable trace" in said[-1] and "first-execution order" in said[-1], said
