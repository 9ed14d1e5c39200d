"""The changed code the probe ran: real Keras wheels diffed, the tracer run for real under every
Python found here (settrace before 3.12, sys.monitoring after), and the ranking (Ochiai,
documentation last, callers) on small sources and traces made in the test."""

from __future__ import annotations

import difflib
import json
import math
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tfbisect.core.spec import EnvSpec
from tfbisect.envs.cache import wheel_cache_dir
from tfbisect.narrow import diff as diffing
from tfbisect.narrow import ranking, traces
from tfbisect.narrow.diff import EXCERPT_MAX_LINES, FileDiff, Hunk, diff_file, diff_sources, excerpt
from tfbisect.narrow.links import github_link, release_tag
from tfbisect.narrow.ranking import find_suspects, kept_suspects, ochiai, ranking_key
from tfbisect.narrow.sources import MEMBER_MAX_BYTES, read_sources, read_wheel_sources, source_lines
from tfbisect.narrow.traces import RANKING_SUFFIX, KeptTraces, ProbeTraces, Trace
from tfbisect.search.narrowlog import SUSPECTS_KEPT, Suspects

ROOT = Path(__file__).resolve().parents[1]
TRACER = ROOT / "bisect" / "tfbisect" / "data" / "probe_tracer.py"
KERAS = ("2.12.0", "2.13.1", "2.15.0")
CACHED_WHEELS = wheel_cache_dir() / "py3.11"  # the machine's wheel cache, which other tests fill


# ---- Helpers --------------------------------------------------------------------------------------


def make_wheel(path: Path, members: Mapping[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name), content)
    return path


def trace(files: Mapping[str, Iterable[int]], versions: Mapping[str, str] | None = None) -> Trace:
    """A trace as the tracer writes it, read back through the validating reader."""
    return Trace.from_dict(
        {
            "schema": 1,
            "python": "3.11.7",
            "exit_code": 0,
            "packages": {
                name: {"root": f"/site/{name}", "version": v} for name, v in (versions or {}).items()
            },
            "files": {path: {"lines": sorted(set(lines)), "functions": []} for path, lines in files.items()},
        }
    )


def patched(old: list[str], hunks: Iterable[Hunk]) -> list[str]:
    """Apply hunks the way `patch` does, checking every context and changed line number on the way."""
    out: list[str] = []
    at = 1
    for hunk in hunks:
        out.extend(old[at - 1 : hunk.old_first - 1])
        at, new_at = hunk.old_first, hunk.new_first
        removed, added = [], []
        for line in hunk.body:
            kind, text = line[0], line[1:]
            if kind in " -":
                assert old[at - 1] == text
                if kind == "-":
                    removed.append(at)
                at += 1
            if kind in " +":
                out.append(text)
                if kind == "+":
                    added.append(new_at)
                new_at += 1
        assert tuple(removed) == hunk.old_changed and tuple(added) == hunk.new_changed
        assert at - 1 == hunk.old_last and new_at - 1 == hunk.new_last
    out.extend(old[at - 1 :])
    return out


def by_old_line(suspects: Iterable[Any], line: int) -> Any:
    return next(s for s in suspects if s.old_lines and s.old_lines[0] <= line <= s.old_lines[1])


# ---- Real wheels ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def keras_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Three real Keras wheels (from tfbisect's cache when there, else downloaded once), read once."""
    wheels: dict[str, Path] = {}
    for version in KERAS:
        cached = sorted(CACHED_WHEELS.glob(f"keras-{version}-*.whl"))
        if cached:
            wheels[version] = cached[0]
    missing = [version for version in KERAS if version not in wheels]
    if missing:
        folder = tmp_path_factory.mktemp("wheels")
        for version in missing:  # one at a time: pip refuses two versions of one project in one call
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
            command += ["--dest", str(folder), f"keras=={version}"]
            subprocess.run(command, check=True, capture_output=True, timeout=600)
            wheels[version] = next(folder.glob(f"keras-{version}-*.whl"))
    return {version: read_wheel_sources(wheel) for version, wheel in wheels.items()}


def test_keras_2_13_moved_every_module_under_src(keras_sources: dict[str, dict[str, str]]) -> None:
    old, new = keras_sources["2.12.0"], keras_sources["2.13.1"]
    assert "keras/losses.py" in old and "keras/src/losses.py" in new
    assert "keras/losses.py" not in new and "keras/src/losses.py" not in old
    diffs = {diff.path: diff for diff in diff_sources(old, new)}
    assert len(diffs) > 0
    identical = sorted(path for path in set(old) & set(new) if old[path] == new[path])
    assert identical == [
        "keras/protobuf/__init__.py",
        "keras/protobuf/projector_config_pb2.py",
        "keras/protobuf/saved_metadata_pb2.py",
        "keras/protobuf/versions_pb2.py",
    ]
    for path in identical:
        assert path not in diffs and diff_file(path, old[path], new[path]).hunks == ()
    # Each moved file is diffed against its old self under its new path: what it kept is unchanged.
    assert "keras/losses.py" not in diffs
    moved = diffs["keras/src/losses.py"]
    assert moved.old_path == moved.old_at == "keras/losses.py" and moved.old == old["keras/losses.py"]
    lines = len(source_lines(old["keras/losses.py"]))
    changed = sum(len(hunk.old_changed) for hunk in moved.hunks)
    assert 0 < changed < lines // 10, (changed, lines)  # the imports moved with it; the code stayed
    before, after = source_lines(old["keras/losses.py"]), source_lines(new["keras/src/losses.py"])
    assert patched(before, moved.hunks) == after
    # Without the move, a file only in the old version is one hunk, every line removed.
    gone = diff_file("keras/losses.py", old["keras/losses.py"], None)
    assert gone.new is None and len(gone.hunks) == 1
    assert gone.hunks[0].old_changed == tuple(range(1, lines + 1))
    assert gone.hunks[0].new_changed == () and gone.hunks[0].header.endswith(" +0,0 @@")
    assert sum(1 for diff in diffs.values() if diff.old_path) > 300  # every module moved under src


def test_real_hunks_rebuild_the_new_version(keras_sources: dict[str, dict[str, str]]) -> None:
    old, new = keras_sources["2.13.1"], keras_sources["2.15.0"]
    diffs = diff_sources(old, new)
    # Facts of these two releases: all of 2.13.1's files are still there, one was added.
    assert (len(old), len(new), len(diffs)) == (604, 605, 118)
    assert sum(len(diff.hunks) for diff in diffs) == 365
    assert [diff.path for diff in diffs if diff.old is None] == [
        "keras/src/utils/steps_per_execution_tuning.py"
    ]
    for diff in diffs:
        before = source_lines(diff.old) if diff.old is not None else []
        after = source_lines(diff.new) if diff.new is not None else []
        assert patched(before, diff.hunks) == after, diff.path
        headers = [line for line in difflib.unified_diff(before, after, lineterm="") if line.startswith("@@")]
        assert [hunk.header for hunk in diff.hunks] == headers, diff.path


def test_real_code_change_ranks_above_documentation(keras_sources: dict[str, dict[str, str]]) -> None:
    """Every changed line of keras/src/losses.py "ran": the one-token code change in
    `categorical_crossentropy`'s `_smooth_labels` (`[-1]` became `[axis]`) outranks the many
    docstring re-indentations of 2.15, which all rank last."""
    old, new = keras_sources["2.13.1"], keras_sources["2.15.0"]
    path = "keras/src/losses.py"
    (diff,) = diff_sources(old, new, [path])
    failing = ProbeTraces(
        old=trace({path: [line for h in diff.hunks for line in h.old_changed]}, {"keras": "2.13.1"}),
        new=trace({path: [line for h in diff.hunks for line in h.new_changed]}, {"keras": "2.15.0"}),
    )
    found = find_suspects(old, new, failing)
    suspects = found.suspects
    assert (found.files_traced, found.files_changed, found.hunks) == (1, 1, len(diff.hunks))
    assert len(suspects) == len(diff.hunks) and found.executed_python_changed
    kinds = [s.documentation_only for s in suspects]
    assert kinds == sorted(kinds), "documentation-only hunks rank after every code hunk"
    assert 0 < kinds.count(False) < len(kinds)

    smooth = by_old_line(suspects, 2113)
    assert smooth.function == "categorical_crossentropy.<locals>._smooth_labels"
    assert not smooth.documentation_only and smooth.score == 1.0
    assert (smooth.executed_old, smooth.executed_new) == ((2113,), (2212,))
    assert (smooth.old_lines, smooth.new_lines) == ((2110, 2116), (2209, 2215))
    assert (
        smooth.old_link == "https://github.com/keras-team/keras/blob/v2.13.1/keras/src/losses.py#L2110-L2116"
    )
    assert (
        smooth.new_link == "https://github.com/keras-team/keras/blob/v2.15.0/keras/src/losses.py#L2209-L2215"
    )
    assert "-        num_classes = tf.cast(tf.shape(y_true)[-1], y_pred.dtype)" in smooth.excerpt
    assert "+        num_classes = tf.cast(tf.shape(y_true)[axis], y_pred.dtype)" in smooth.excerpt
    assert smooth.excerpt.splitlines()[0] == "@@ -2110,7 +2209,7 @@"

    docstring = by_old_line(suspects, 47)  # "`y_pred`." re-indented inside the `Loss` docstring
    assert docstring.documentation_only and docstring.function == "<module>"
    document = json.loads(json.dumps(found.to_dict()))
    assert document["suspects"][0]["documentation_only"] is False
    assert all(len(s["excerpt"].splitlines()) <= EXCERPT_MAX_LINES for s in document["suspects"])


# ---- Wheels as hostile input ----------------------------------------------------------------------


def test_wheel_members_are_checked(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path / "pkg-1.0-py3-none-any.whl",
        {
            "pkg/ok.py": "x = 1\n",
            "pkg/latin.py": "# -*- coding: latin-1 -*-\nname = 'caf\xe9'\n".encode("latin-1"),
            "pkg-1.0.data/purelib/pkg/extra.py": "y = 2\n",
            "../evil.py": "boom\n",
            "/absolute.py": "boom\n",
            "pkg/../up.py": "boom\n",
            "pkg\\windows.py": "boom\n",
            "C:/drive.py": "boom\n",
            "pkg/data.json": "{}",
            "pkg/big.py": b"#" * (MEMBER_MAX_BYTES + 1),
        },
    )
    sources = read_wheel_sources(wheel)
    assert sorted(sources) == ["pkg/extra.py", "pkg/latin.py", "pkg/ok.py"]
    assert sources["pkg/latin.py"].splitlines()[1] == "name = 'café'"
    assert read_wheel_sources(wheel, only={"pkg/ok.py"}) == {"pkg/ok.py": "x = 1\n"}
    other = make_wheel(tmp_path / "other.whl", {"other/mod.py": "z = 3\n"})
    assert sorted(read_sources([wheel, other])) == [
        "other/mod.py",
        "pkg/extra.py",
        "pkg/latin.py",
        "pkg/ok.py",
    ]
    (tmp_path / "not-a-wheel.whl").write_text("not a zip")
    with pytest.raises(zipfile.BadZipFile):
        read_wheel_sources(tmp_path / "not-a-wheel.whl")


def test_line_numbers_are_pythons() -> None:
    # A form feed is not a line end for Python; `str.splitlines` would say it is.
    assert source_lines("a = 1\n\x0cb = 2\r\nc = 3\rd = 4") == ["a = 1", "\x0cb = 2", "c = 3", "d = 4"]


@pytest.mark.parametrize(
    "document",
    [
        None,
        {"schema": 2},
        {"schema": 1, "python": "3.11", "exit_code": "0", "packages": {}, "files": {}},
        {"schema": 1, "python": "3.11", "exit_code": 0, "packages": [], "files": {}},
        {"schema": 1, "python": "3.11", "exit_code": 0, "packages": {}, "files": {"../x.py": {"lines": [1]}}},
        {"schema": 1, "python": "3.11", "exit_code": 0, "packages": {}, "files": {"p/x.py": {"lines": [0]}}},
        {
            "schema": 1,
            "python": "3.11",
            "exit_code": 0,
            "packages": {},
            "files": {"p/x.py": {"lines": [True]}},
        },
        {"schema": 1, "python": "3.11", "exit_code": 0, "packages": {}, "files": {"p/x.py": {"lines": "1"}}},
        {"schema": 1, "python": "3.11", "exit_code": 0, "packages": {"p": {"version": 3}}, "files": {}},
    ],
)
def test_malformed_traces_are_refused(document: object) -> None:
    with pytest.raises(ValueError, match="probe trace"):
        Trace.from_dict(document)


# ---- Ranking ----------------------------------------------------------------------------------------

OLD_MODULE = '''\
"""Small ops."""


def documented(x):
    """Return x."""
    return x  # as it is


def helper(x):
    return x


def first(a, b):
    return combine(
        a,
        b,
    )


def spacer_one(x):
    return x


def second(x):
    return x + 1


def spacer(x):
    return x


def never(x):
    return x - 1
'''

NEW_MODULE = '''\
"""Small ops."""


def documented(x):
    """Return x unchanged."""
    return x  # unchanged

    # (a new comment line, a blank one above)

def helper(x):
    return x


def first(a, b):
    return combine(
        a + 0,
        b * 2,
    )


def spacer_one(x):
    return x


def second(x):
    return x + 2


def spacer(x):
    return x


def never(x):
    return x - 2
'''


def test_ochiai() -> None:
    assert ochiai(1, 0) == 1.0 and ochiai(0, 1) == 0.0 and ochiai(0, 0) == 0.0
    assert ochiai(1, 1) == pytest.approx(1 / math.sqrt(2))
    assert ochiai(2, 2, total_failed=4) == pytest.approx(2 / math.sqrt(4 * 4))


def test_failing_path_only_ranks_above_both_paths_and_documentation_last() -> None:
    old, new = {"pkg/ops.py": OLD_MODULE}, {"pkg/ops.py": NEW_MODULE}
    # The failing probe runs everything but `never`'s body (old line 33, new line 34).
    failing = ProbeTraces(trace({"pkg/ops.py": range(1, 33)}), trace({"pkg/ops.py": range(1, 34)}))
    # The passing probe runs `first` but not `second`; the tracer reports `first`'s call at
    # `return combine(` (old 14, new 15), and the changes lie further down that statement.
    passing = ProbeTraces(trace({"pkg/ops.py": [1, 4, 9, 13, 14]}), trace({"pkg/ops.py": [1, 4, 10, 14, 15]}))
    found = find_suspects(old, new, failing, passing)
    ranked = [(s.function, round(s.score, 4), s.documentation_only, s.passed) for s in found.suspects]
    assert ranked == [
        ("second", 1.0, False, 0),  # run by the failing probe only
        ("first", 0.7071, False, 1),  # run by both
        ("documented", 1.0, True, 0),  # docstring, trailing comment, comment line, blank line: last
    ]
    first = found.suspects[1]
    assert (first.executed_old, first.executed_new) == ((15, 16), (16, 17))
    assert first.old_link is None and first.excerpt.startswith("@@ -")
    assert found.hunks == 4 and found.files_changed == 1  # `never` changed, but no probe ran it
    # Without a passing probe every score is 1: neither function's own flow diverged, so the
    # denser change ranks first (2 changed lines of `second`'s 2 before 4 of `first`'s 5), and
    # documentation stays last.
    alone = find_suspects(old, new, failing)
    assert [(s.function, s.changed_executed) for s in alone.suspects][:2] == [("second", 2), ("first", 4)]
    assert alone.suspects[-1].function == "documented"


def test_documentation_is_decided_by_tokens_not_text() -> None:
    def only(old: str, new: str) -> bool:
        found = find_suspects(
            {"p/m.py": old},
            {"p/m.py": new},
            ProbeTraces(trace({"p/m.py": [1, 2, 3]}), trace({"p/m.py": [1, 2, 3]})),
        )
        (suspect,) = found.suspects
        return suspect.documentation_only

    assert only('def f():\n    """One."""\n    return 1\n', 'def f():\n    """Two."""\n    return 1\n')
    assert only("x = 1  # one\ny = 2\n", "x = 1  # two\ny = 2\n")
    assert only("x = [1,\n     2]\n", "x = [1,\n  # why\n     2]\n")
    assert not only('x = "one"\ny = 2\n', 'x = "two"\ny = 2\n'), "a string that is not a docstring is code"
    assert not only("x = 1\ny = 2\n", "x = 1\n# y = 2\n"), "commenting code out changes code"
    assert not only("if a:\n    x()\ny()\n", "if a:\n    x()\n    y()\n"), "indenting into a block is code"
    assert not only("x = (\n", "x = (1\n"), "what cannot be parsed counts as code"


def test_a_call_made_in_one_version_only_points_at_its_caller() -> None:
    old = "def run(x):\n    return x\n" + "\n" * 10 + "def other():\n    return 0\n"
    new = "def run(x):\n    return added(x)\n" + "\n" * 10 + "def added(x):\n    return x + 1\n"
    failing = ProbeTraces(trace({"p/m.py": [1, 2, 13]}), trace({"p/m.py": [1, 2, 13, 14]}))
    found = find_suspects({"p/m.py": old}, {"p/m.py": new}, failing)
    added = next(s for s in found.suspects if s.function == "added")
    assert added.only_in == "new" and added.caller == "p/m.py:run (line 2)"
    run = next(s for s in found.suspects if s.function == "run")
    assert run.only_in is None and run.caller is None


def test_traced_files_without_source_are_reported() -> None:
    failing = ProbeTraces(trace({"p/gone.py": [1]}), trace({"p/m.py": [1]}))
    found = find_suspects({"p/m.py": "x = 1\n"}, {"p/m.py": "x = 1\n"}, failing)
    assert found.suspects == () and not found.executed_python_changed
    assert found.missing_sources == ("p/gone.py",) and found.files_changed == 0
    assert found.to_dict()["executed_python_changed"] is False


def test_excerpt_is_bounded_around_what_ran() -> None:
    old = [f"x{i} = {i}" for i in range(1, 101)]
    new = [f"x{i} = {i + 1}" for i in range(1, 101)]
    (hunk,) = diff_file("p/m.py", "\n".join(old) + "\n", "\n".join(new) + "\n").hunks
    text = excerpt(hunk, {90}, set())
    lines = text.splitlines()
    assert len(lines) <= EXCERPT_MAX_LINES and lines[0] == "@@ -1,100 +1,100 @@"
    assert "-x90 = 90" in lines and lines[1].startswith("… ") and lines[-1].startswith("… ")
    assert excerpt(hunk, set(), set()).splitlines()[1] == "-x1 = 1"


# ---- Links ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "version", "link"),
    [
        (
            "tensorflow/python/ops/math_ops.py",
            "2.4.0",
            "https://github.com/tensorflow/tensorflow/blob/v2.4.0/tensorflow/python/ops/math_ops.py#L10-L20",
        ),
        (
            "tensorflow/python/eager/backprop.py",
            "2.4.0rc1",
            "https://github.com/tensorflow/tensorflow/blob/v2.4.0-rc1/tensorflow/python/eager/backprop.py#L10-L20",
        ),
        (
            "tensorflow_core/python/ops/nn_ops.py",
            "2.1.4",
            "https://github.com/tensorflow/tensorflow/blob/v2.1.4/tensorflow/python/ops/nn_ops.py#L10-L20",
        ),
        (
            "keras/engine/training.py",
            "2.12.0",
            "https://github.com/keras-team/keras/blob/v2.12.0/keras/engine/training.py#L10-L20",
        ),
        (
            "keras/src/losses.py",
            "2.15.0",
            "https://github.com/keras-team/keras/blob/v2.15.0/keras/src/losses.py#L10-L20",
        ),
        (
            "keras/src/losses/loss.py",
            "3.4.1",
            "https://github.com/keras-team/keras/blob/v3.4.1/keras/src/losses/loss.py#L10-L20",
        ),
        (
            "tf_keras/src/losses.py",
            "2.15.1",
            "https://github.com/keras-team/tf-keras/blob/v2.15.1/tf_keras/src/losses.py#L10-L20",
        ),
        ("keras/api/losses/__init__.py", "3.4.1", None),  # generated at build time
        ("keras/losses.py", "2.4.3", None),  # before standalone Keras 2.6: no such repository layout
        ("tensorflow/python/ops/gen_math_ops.py", "2.4.0", None),
        ("tensorflow/_api/v2/math/__init__.py", "2.4.0", None),
        ("tensorflow/python/ops/math_ops.py", "2.17.0.dev20240301", None),  # a nightly has no tag
        ("numpy/core/numeric.py", "1.26.4", None),
    ],
)
def test_github_links(path: str, version: str, link: str | None) -> None:
    assert github_link(path, version, 10, 20) == link


def test_links_at_a_commit_and_tags() -> None:
    assert github_link("tensorflow/python/ops/math_ops.py", "2.17.0.dev20240301", 3, 3, ref="0123abc") == (
        "https://github.com/tensorflow/tensorflow/blob/0123abc/tensorflow/python/ops/math_ops.py#L3-L3"
    )
    assert (release_tag("2.4.0"), release_tag("2.4.0rc0"), release_tag("2.4.0.dev1")) == (
        "v2.4.0",
        "v2.4.0-rc0",
        None,
    )


# ---- The tracer, for real ---------------------------------------------------------------------------

PACKAGE_MODULE = '''\
"""Doc."""

import os


def deco(f):
    return f


@deco
def add(a, b):
    total = (a +
             b)
    return total


def unused():
    return 0


class K:
    def m(self, x):
        if x:
            return "yes"
        return "no"


def branch(x):
    return K().m(x)
'''

PROBE = """\
import builtins
import sys

import pkg
import probe_helper  # next to the script: its folder is on the path, as for `python probe.py`

pkg.add(1, 2)
window = getattr(builtins, "__tfbisect_trace__", None) if "window" in sys.argv else None
if window is not None:
    window(True)
pkg.branch(0)
if window is not None:
    window(False)
pkg.branch(1)
if "raise" in sys.argv:
    raise ValueError("the probe failed")
if "message" in sys.argv:
    sys.exit("a message is exit status 1")
sys.exit(int(sys.argv[1]))
"""


def interpreters() -> list[Any]:
    """This Python, and the oldest and newest others pyenv has here: both tracing paths get run."""
    found = [pytest.param(sys.executable, id=f"python{sys.version_info[0]}.{sys.version_info[1]}")]
    for minor in ("3.7", "3.8", "3.9", "3.12", "3.13"):
        if minor == f"{sys.version_info[0]}.{sys.version_info[1]}":
            continue
        matches = sorted(Path.home().glob(f".pyenv/versions/{minor}.*/bin/python"))
        if matches:
            found.append(pytest.param(str(matches[-1]), id=f"python{minor}"))
    return found


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "__init__.py").write_text("from pkg.mod import add, branch\n")
    (folder / "pkg" / "mod.py").write_text(PACKAGE_MODULE)
    dist = folder / "pkg-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pkg\nVersion: 1.2.3\n")
    (dist / "top_level.txt").write_text("pkg\n")
    (dist / "RECORD").write_text("")
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "probe_helper.py").write_text("")
    return folder


def traced(
    python: str, site: Path, script: str, *args: str, packages: str = "pkg,absent", output: str = "trace.json"
) -> tuple[int, dict[str, Any]]:
    """Run `script` (in the folder above `site`) under the tracer with `site` on the path; its exit
    status and the document it wrote."""
    written = site.parent / output
    written.unlink(missing_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["PYTHONPATH"] = str(site)
    command = [python, str(TRACER), "--packages", packages, "--output", output, "--", script, *args]
    done = subprocess.run(
        command, cwd=site.parent, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert written.exists(), done.stderr
    return done.returncode, json.loads(written.read_text())


def run_tracer(python: str, site: Path, *args: str) -> tuple[int, dict[str, Any]]:
    return traced(python, site, "probe.py", *args)


def version_of(python: str) -> tuple[int, int]:
    done = subprocess.run(
        [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
        capture_output=True,
        text=True,
        check=True,
    )
    major, minor = done.stdout.split()
    return int(major), int(minor)


@pytest.mark.parametrize("python", interpreters())
def test_tracer_counts_the_lines_that_ran(python: str, site: Path) -> None:
    code, document = run_tracer(python, site, "0")
    version = version_of(python)
    assert code == 0 and document["schema"] == 2 and document["exit_code"] == 0
    assert document["python"].startswith(f"{version[0]}.{version[1]}.")
    assert document["packages"] == {
        "pkg": {"root": str(site / "pkg"), "version": "1.2.3" if version >= (3, 8) else None}
    }  # "absent" is not installed: left out
    assert sorted(document["files"]) == ["pkg/__init__.py", "pkg/mod.py"]
    assert document["files"]["pkg/__init__.py"]["lines"] == [1]
    expected = [1, 3, 6, 7, 10, 11, 12, 13, 14, 17, 21, 22, 23, 24, 25, 28, 29]
    if version < (3, 8):
        expected.remove(11)  # 3.7 reports a decorated `def` at its decorator only
    assert document["files"]["pkg/mod.py"]["lines"] == expected  # `unused` (line 18) never ran
    method = "K.m" if version >= (3, 11) else "m"  # co_qualname is 3.11+
    assert document["files"]["pkg/mod.py"]["functions"] == [
        ["<module>", 1],
        ["deco", 6],
        ["add", 10],
        ["K", 21],
        [method, 22],
        ["branch", 28],
    ]
    assert document["files_left_out"] == 0


@pytest.mark.parametrize("python", interpreters())
def test_tracer_window_and_exit_status(python: str, site: Path) -> None:
    code, document = run_tracer(python, site, "3", "window")
    assert code == 3 and document["exit_code"] == 3
    # Only `branch(0)` ran inside the window: not the import, not `add`, not `branch(1)`'s "yes".
    assert list(document["files"]) == ["pkg/mod.py"]
    assert document["files"]["pkg/mod.py"]["lines"] == [23, 25, 29]
    assert [name for name, _ in document["files"]["pkg/mod.py"]["functions"]][1] == "branch"


@pytest.mark.parametrize("python", interpreters())
def test_tracer_writes_the_trace_when_the_probe_fails(python: str, site: Path) -> None:
    code, document = run_tracer(python, site, "0", "window", "raise")
    assert (
        code == 1 and document["exit_code"] == 1 and document["files"]["pkg/mod.py"]["lines"] == [23, 25, 29]
    )
    code, document = run_tracer(python, site, "0", "message")
    assert code == 1 and document["exit_code"] == 1 and 18 not in document["files"]["pkg/mod.py"]["lines"]


OPS_OLD = '''\
"""Small ops."""


def unused_one():
    return 1


def unused_two():
    return 2


def scale(x, factor):
    """Multiply x by factor."""
    return x * factor


def unused_three():
    return 3


def unused_four():
    return 4


def loss(x):
    return scale(x, 2) + 1


def unused_five():
    return 5


def metric(x):
    return scale(x, 2)


def unused_six():
    return 6
'''

OPS_NEW = (
    OPS_OLD.replace('"""Small ops."""', '"""Small ops, documented."""')
    .replace("return x * factor", "return factor * x")
    .replace("scale(x, 2) + 1", "scale(x, 2) + 2")
    .replace("return 6", "return 6.0")
)

FAILING_PROBE = """\
__tfbisect_trace__(True)
import pkg.ops
pkg.ops.loss(3)
__tfbisect_trace__(False)
"""

PASSING_PROBE = FAILING_PROBE.replace("loss", "metric")


def test_traced_probes_in_two_environments_rank_the_failing_path_first(tmp_path: Path) -> None:
    """The whole step on a package made here: two versions installed, each probe traced for real in
    each, the two "wheels" diffed, and the suspects ranked."""
    traces: dict[tuple[str, str], Trace] = {}
    wheels = {}
    for side, text, version in (("old", OPS_OLD, "1.0.0"), ("new", OPS_NEW, "2.0.0")):
        site = tmp_path / side
        (site / "pkg").mkdir(parents=True)
        (site / "pkg" / "__init__.py").write_text("")
        (site / "pkg" / "ops.py").write_text(text)
        dist = site / f"pkg-{version}.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: pkg\nVersion: {version}\n")
        wheels[side] = make_wheel(
            tmp_path / f"pkg-{version}-py3-none-any.whl", {"pkg/__init__.py": "", "pkg/ops.py": text}
        )
        for probe, script in (("failing", FAILING_PROBE), ("passing", PASSING_PROBE)):
            (tmp_path / f"{probe}.py").write_text(script)
            code, document = traced(
                sys.executable, site, f"{probe}.py", packages="pkg", output=f"{side}-{probe}.json"
            )
            assert code == 0
            traces[side, probe] = Trace.from_dict(document)
    assert traces["new", "failing"].version_of("pkg/ops.py") == "2.0.0"
    found = find_suspects(
        read_wheel_sources(wheels["old"]),
        read_wheel_sources(wheels["new"]),
        ProbeTraces(traces["old", "failing"], traces["new", "failing"]),
        ProbeTraces(traces["old", "passing"], traces["new", "passing"]),
    )
    ranked = [(s.function, round(s.score, 4), s.documentation_only, s.executed_new) for s in found.suspects]
    assert ranked == [
        ("loss", 1.0, False, (26,)),  # the failing probe's path only
        ("scale", 0.7071, False, (14,)),  # both probes' paths
        ("<module>", 0.7071, True, (1,)),  # the module docstring: documentation
    ]  # `unused_six` changed too, but no probe ran it
    assert found.hunks == 4 and all(s.old_link is None for s in found.suspects)  # `pkg` has no repository


def test_diff_of_a_new_file(tmp_path: Path) -> None:
    diff = diff_file("p/new.py", None, "a = 1\nb = 2\n")
    assert diff == FileDiff("p/new.py", None, "a = 1\nb = 2\n", diff.hunks)
    (hunk,) = diff.hunks
    assert hunk.header == "@@ -0,0 +1,2 @@" and hunk.new_changed == (1, 2) and hunk.old_changed == ()
    failing = ProbeTraces(trace({}), trace({"p/new.py": [2]}))
    (suspect,) = find_suspects({}, {"p/new.py": "a = 1\nb = 2\n"}, failing).suspects
    assert suspect.old_lines is None and suspect.new_lines == (1, 2) and suspect.executed_new == (2,)


# ---- Ties broken by what the traces say; moves are no change ----------------------------------------

DIVERGING_OLD = """\
def loss(x, cached):
    y = x
    if cached:
        y = y + 1
    z = y * 2
    w = z - 1
    return w


def spacer():
    return 0


def rewritten(a):
    b = a + 1
    c = b + 2
    d = c + 3
    return d
"""
# `loss` gains one line that returns early: its unchanged lines after it stop running (its own
# flow diverged).  `rewritten` has every line rewritten: more changed lines ran, its flow is the same.
DIVERGING_NEW = """\
def loss(x, cached):
    y = x
    if cached:
        return y
    z = y * 2
    w = z - 1
    return w


def spacer():
    return 0


def rewritten(a):
    b2 = a + 1
    c2 = b2 + 2
    d2 = c2 + 3
    return d2
"""


def test_a_unit_whose_own_flow_diverged_breaks_the_tie_before_more_changed_lines() -> None:
    failing = ProbeTraces(
        trace({"p/m.py": [1, 2, 3, 4, 5, 6, 7, 14, 15, 16, 17, 18]}),
        trace({"p/m.py": [1, 2, 3, 4, 14, 15, 16, 17, 18]}),
    )
    found = find_suspects({"p/m.py": DIVERGING_OLD}, {"p/m.py": DIVERGING_NEW}, failing)
    ranked = [(s.function, s.score, s.changed_executed) for s in found.suspects]
    assert ranked == [("loss", 1.0, 2), ("rewritten", 1.0, 8)]
    # The same change where the flow after it did not diverge (the branch was not taken in either
    # run): the rewrite's more changed lines rank first again.
    same_flow = ProbeTraces(
        trace({"p/m.py": [1, 2, 3, 5, 6, 7, 14, 15, 16, 17, 18]}),
        trace({"p/m.py": [1, 2, 3, 5, 6, 7, 14, 15, 16, 17, 18]}),
    )
    found = find_suspects({"p/m.py": DIVERGING_OLD}, {"p/m.py": DIVERGING_NEW}, same_flow)
    assert [s.function for s in found.suspects] == ["rewritten"], "loss's changed line did not run"


def test_the_denser_change_breaks_the_tie() -> None:
    small_old = "def small(x):\n    return x\n"
    small_new = "def small(x):\n    return x + 1\n"
    body = "".join(f"    v{i} = {i}\n" for i in range(40))
    big_old = f"def big(x):\n{body}    a = 1\n    b = 2\n    return x\n"
    big_new = f"def big(x):\n{body}    a = 10\n    b = 20\n    return x\n"
    old = {"p/small.py": small_old, "p/big.py": big_old}
    new = {"p/small.py": small_new, "p/big.py": big_new}
    failing = ProbeTraces(
        trace({"p/small.py": [1, 2], "p/big.py": range(1, 45)}),
        trace({"p/small.py": [1, 2], "p/big.py": range(1, 45)}),
    )
    found = find_suspects(old, new, failing)
    assert [(s.function, s.changed_executed) for s in found.suspects] == [("small", 2), ("big", 4)]


def test_a_moved_file_counts_only_what_changed_in_it() -> None:
    """`p/losses.py` moved to `p/src/losses.py` with one function changed on the way: one
    suspect, under the new path, its old lines and link those of the old path."""
    helpers = "".join(f"def helper{i}(x):\n    return x + {i}\n\n\n" for i in range(10))
    old_text = helpers + "def loss(x):\n    return x * 2\n"
    new_text = helpers + "def loss(x):\n    return x * 3\n"
    lines = len(old_text.splitlines())
    failing = ProbeTraces(
        trace({"p/losses.py": range(1, lines + 1)}, {"p": "1.0"}),
        trace({"p/src/losses.py": range(1, lines + 1)}, {"p": "1.1"}),
    )
    found = find_suspects({"p/losses.py": old_text}, {"p/src/losses.py": new_text}, failing)
    (suspect,) = found.suspects
    assert (suspect.file, suspect.function) == ("p/src/losses.py", "loss")
    assert suspect.executed_old == suspect.executed_new == (lines,)
    assert found.files_changed == 1 and found.hunks == 1
    # Another file of that name that is mostly different is no move: every line counts.
    other = "".join(f"x{i} = {i}\n" for i in range(30)) + "def loss(x):\n    return x * 3\n"
    elsewhere = find_suspects(
        {"p/losses.py": old_text},
        {"p/src/losses.py": other},
        ProbeTraces(trace({"p/losses.py": range(1, lines + 1)}), trace({"p/src/losses.py": range(1, 33)})),
    )
    assert elsewhere.files_changed == 2


def test_the_same_function_code_under_a_new_path_is_no_suspect() -> None:
    """`clip` left `p/ops.py` for a file of its own, as a method (indented deeper), its signature
    wrapped and a comment added: the same code, an unchanged unit.  `scale`, changed in place,
    stays the one suspect."""
    old = {"p/ops.py": "def scale(x):\n    return x * 2\n\n\ndef clip(x):\n    return min(x, 1)\n"}
    moved = "class Ops:\n    def clip(\n        x\n    ):\n        return min(x, 1)  # moved\n"
    new = {"p/ops.py": "def scale(x):\n    return x * 3\n", "p/clipping.py": moved}
    failing = ProbeTraces(
        trace({"p/ops.py": [1, 2, 5, 6]}), trace({"p/ops.py": [1, 2], "p/clipping.py": [5]})
    )
    found = find_suspects(old, new, failing)
    assert [(s.file, s.function) for s in found.suspects] == [("p/ops.py", "scale")]
    # Changed on the way, it is a suspect in its new file (its removal shares `scale`'s hunk).
    new["p/clipping.py"] = moved.replace("min(", "max(")
    found = find_suspects(old, new, failing)
    assert {(s.file, s.function) for s in found.suspects} == {
        ("p/ops.py", "scale"),
        ("p/clipping.py", "Ops.clip"),
    }


class Memo:
    """A ranking memo in memory (KeptTraces keeps them in files: test_narrowing)."""

    def __init__(self) -> None:
        self.kept: dict[str, Suspects] = {}
        self.asked = 0

    def ranking(self, key: str) -> Suspects | None:
        self.asked += 1
        return self.kept.get(key)

    def keep_ranking(self, key: str, suspects: Suspects) -> None:
        self.kept[key] = suspects


def test_a_ranking_of_the_same_inputs_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = {"p/m.py": DIVERGING_OLD}, {"p/m.py": DIVERGING_NEW}
    failing = ProbeTraces(trace({"p/m.py": range(1, 19)}), trace({"p/m.py": range(1, 19)}))
    memo = Memo()
    first = kept_suspects(memo, old, new, failing)
    assert len(memo.kept) == 1 and first == find_suspects(old, new, failing).cut(SUSPECTS_KEPT)
    calls: list[object] = []
    monkeypatch.setattr(ranking, "find_suspects", lambda *args, **kwargs: calls.append(args))
    assert kept_suspects(memo, old, new, failing) is first and not calls, "reused, not ranked"
    key = ranking_key(old, new, failing, None, (None, None))
    # Anything the ranking follows from changes the key: a source, a trace, a ref, a passing probe.
    assert key != ranking_key(old, {"p/m.py": DIVERGING_NEW + "\n"}, failing, None, (None, None))
    other = ProbeTraces(failing.old, trace({"p/m.py": range(1, 18)}))
    assert key != ranking_key(old, new, other, None, (None, None))
    assert key != ranking_key(old, new, failing, None, ("v1", None))
    assert key != ranking_key(old, new, failing, failing, (None, None))


def test_rankings_kept_in_files_are_read_back_defensively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = {"p/m.py": DIVERGING_OLD}, {"p/m.py": DIVERGING_NEW}
    failing = ProbeTraces(trace({"p/m.py": range(1, 19)}), trace({"p/m.py": range(1, 19)}))
    kept = KeptTraces(tmp_path / "log.traces", store=tmp_path / "rankings")
    first = kept_suspects(kept, old, new, failing)
    [path] = (tmp_path / "rankings").iterdir()
    assert path.suffix == RANKING_SUFFIX and first.suspects
    ranked: list[object] = []
    real = ranking.find_suspects

    def counted(*args: Any, **kwargs: Any) -> Suspects:
        ranked.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ranking, "find_suspects", counted)
    assert kept_suspects(kept, old, new, failing) == first and not ranked
    for damage in ("{", "[]", json.dumps({"key": "0" * 64, "suspects": first.to_dict()}), "x" * 100):
        path.write_text(damage)
        assert kept_suspects(kept, old, new, failing) == first  # ranked again, and kept again
    assert len(ranked) == 4 and kept.ranking(path.stem) == first
    monkeypatch.setattr(traces, "RANKING_MAX_BYTES", 10)
    assert kept.ranking(path.stem) is None, "a file over the cap is not read"
    monkeypatch.undo()
    assert (
        KeptTraces(tmp_path / "log.traces", force=True, store=tmp_path / "rankings").ranking(path.stem)
        is None
    )
    assert KeptTraces(tmp_path / "log.traces").ranking(path.stem) is None, "no store: nothing kept"
    assert kept.ranking("../../x") is None


@pytest.mark.parametrize(
    "damage", ["a FIFO", "a link to /dev/zero", "nested too deeply", "suspects not a ranking"]
)
def test_a_damaged_stored_ranking_is_ranked_again_with_a_note(tmp_path: Path, damage: str) -> None:
    """A FIFO would hang a plain read and /dev/zero fill the memory: neither is read."""
    old, new = {"p/m.py": DIVERGING_OLD}, {"p/m.py": DIVERGING_NEW}
    failing = ProbeTraces(trace({"p/m.py": range(1, 19)}), trace({"p/m.py": range(1, 19)}))
    said: list[str] = []
    kept = KeptTraces(tmp_path / "log.traces", store=tmp_path / "rankings", say=said.append)
    first = kept_suspects(kept, old, new, failing)
    [path] = (tmp_path / "rankings").iterdir()
    path.unlink()
    if damage == "a FIFO":
        os.mkfifo(path)
    elif damage == "a link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif damage == "nested too deeply":
        path.write_text("[" * 200_000 + "]" * 200_000)
    else:
        path.write_text(json.dumps({"key": path.stem, "suspects": []}))
    assert kept.ranking(path.stem) is None
    assert len(said) == 1 and f"the stored ranking {path} is damaged (" in said[0], said
    assert "ranking again, which replaces it" in said[0]
    assert kept_suspects(kept, old, new, failing) == first
    assert path.is_file() and not path.is_symlink() and kept.ranking(path.stem) == first, "replaced"
    assert KeptTraces(tmp_path / "log.traces", store=tmp_path / "none").ranking(path.stem) is None
    assert len(said) == 2, "no ranking stored yet is no damage"


def test_a_disk_that_cannot_store_a_ranking_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = {"p/m.py": DIVERGING_OLD}, {"p/m.py": DIVERGING_NEW}
    failing = ProbeTraces(trace({"p/m.py": range(1, 19)}), trace({"p/m.py": range(1, 19)}))
    said: list[str] = []
    kept = KeptTraces(tmp_path / "log.traces", store=tmp_path / "rankings", say=said.append)

    def read_only(path: Path, data: object) -> None:
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(traces, "write_json_atomic", read_only)
    found = kept_suspects(kept, old, new, failing)
    assert found == find_suspects(old, new, failing).cut(SUSPECTS_KEPT) and found.suspects
    [note] = said
    assert "the ranking of the suspects was not stored (" in note and "Read-only file system" in note
    assert "free space (or make" in note, "what to do"


def test_the_ranking_key_covers_all_the_ranking_code_and_the_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = {"p/m.py": DIVERGING_OLD}, {"p/m.py": DIVERGING_NEW}
    failing = ProbeTraces(trace({"p/m.py": range(1, 19)}), trace({"p/m.py": range(1, 19)}))

    def key() -> str:
        ranking.code_digest.cache_clear()
        return ranking_key(old, new, failing, None, (None, None))

    here = key()
    copy = tmp_path / "narrow"
    copy.mkdir()
    for path in ranking.RANKED_BY_FOLDER.glob("*.py"):
        (copy / path.name).write_bytes(path.read_bytes())
    log = tmp_path / "narrowlog.py"
    log.write_bytes(ranking.RANKED_BY_FILES[0].read_bytes())
    monkeypatch.setattr(ranking, "RANKED_BY_FOLDER", copy)
    monkeypatch.setattr(ranking, "RANKED_BY_FILES", (log,))
    assert key() == here, "the same code, the same key"
    for changed in (copy / "traces.py", copy / "proof.py", log):  # any module of narrow/, the log's
        text = changed.read_bytes()
        changed.write_bytes(text + b"\n# changed\n")
        assert key() != here, changed
        changed.write_bytes(text)
    assert key() == here
    monkeypatch.setattr(sys, "version_info", (3, 99, 0, "final", 0))  # tokenize and ast differ
    assert key() != here
    monkeypatch.undo()
    assert key() == here


def test_matching_moved_files_costs_a_few_comparisons_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """800 `__init__.py` files removed and 800 added, all different: the same name everywhere, so
    each added one used to be compared with every removed one (7.8 s)."""
    gone = {f"pkg/old{i}/__init__.py": f"value_{i} = {i}\nother_{i} = {i}\n" for i in range(800)}
    added = {f"pkg/new{i}/__init__.py": f"value_{i}_{i} = 0\n" for i in range(800)}
    # Two real moves among them: the same folder under src/, and a renamed folder.
    gone["pkg/layers/__init__.py"] = added["pkg/src/layers/__init__.py"] = "from .core import Dense\n"
    gone["pkg/ops/util.py"] = "def f():\n    return 1\n"
    added["pkg/ops2/util.py"] = "def f():\n    return 1\n\n# moved\n"
    compared: list[int] = []
    real = diffing._shared

    def counted(first: frozenset[str], second: frozenset[str]) -> float:
        compared.append(1)
        return real(first, second)

    monkeypatch.setattr(diffing, "_shared", counted)
    started = time.monotonic()
    found = diffing.moves(gone, added)
    seconds = time.monotonic() - started
    assert found == {
        "pkg/src/layers/__init__.py": "pkg/layers/__init__.py",
        "pkg/ops2/util.py": "pkg/ops/util.py",
    }
    assert len(compared) <= len(added) * diffing.MOVE_CANDIDATES, len(compared)
    assert seconds < 5, f"{seconds:.1f}s (under 0.5 s on the 2-core machine)"


def test_the_best_candidate_by_folder_tail_is_paired_first() -> None:
    gone = {"a/x/mod.py": "one\ntwo\n", "b/y/mod.py": "one\ntwo\n", "c/y/mod.py": "one\ntwo\n"}
    assert diffing.moves(gone, {"src/c/y/mod.py": "one\ntwo\n"}) == {"src/c/y/mod.py": "c/y/mod.py"}
    assert diffing.moves(gone, {"z/mod.py": "one\ntwo\n"}) == {"z/mod.py": "a/x/mod.py"}, "then by path"
    # Each old file is paired once: the second is paired with the next best.
    two = diffing.moves(gone, {"src/c/y/mod.py": "one\ntwo\n", "src2/c/y/mod.py": "one\ntwo\n"})
    assert two == {"src/c/y/mod.py": "c/y/mod.py", "src2/c/y/mod.py": "b/y/mod.py"}


@dataclass(frozen=True)
class FakeRun:
    """A traced run as `runs.tracing.TraceRun` hands it back, its store counted."""

    document: dict[str, Any]
    result: dict[str, Any] | None
    reused: bool
    log: Path = Path("/log")
    seconds: float = 1.0
    exit_code: int | None = 0
    events: list[str] = field(default_factory=list)

    def keep(self) -> None:
        self.events.append("keep")

    def drop(self) -> None:
        self.events.append("drop")


def test_only_a_trace_the_checks_accept_is_stored_and_a_rejected_stored_one_is_run_again() -> None:
    good = {
        "schema": 1,
        "python": "3.11",
        "exit_code": 0,
        "packages": {},
        "files": {"p/m.py": {"lines": [1]}},
    }
    good["window"] = {"opened": 1}
    ran = {"probes": [{"name": "f"}]}
    events: list[str] = []
    answers: list[FakeRun] = []
    said: list[str] = []
    spec = EnvSpec("2.21.0", "3.11")

    def runner(*answered: FakeRun) -> traces.ProbeRunner:
        answers[:] = answered
        events.clear()
        return traces.ProbeRunner(lambda *args: answers.pop(0), ("p",), said.append)

    assert runner(FakeRun(good, ran, False, events=events)).traced(spec, "f").document is good
    assert events == ["keep"]
    no_window = {**good, "window": {"opened": 0}}
    runner(FakeRun(no_window, ran, False, events=events)).traced(spec, "f")
    assert events == [], "the narrowing rejects it: not stored, so a repeat traces it again"
    runner(FakeRun({**good, "files": {"../x.py": {"lines": [1]}}}, ran, False, events=events)).traced(
        spec, "f"
    )
    assert events == [], "not a valid trace: not stored"
    probes = runner(FakeRun(no_window, ran, True, events=events), FakeRun(good, ran, False, events=events))
    assert probes.traced(spec, "f").document is good and events == ["drop", "keep"]
    assert (probes.runs, probes.reused) == (1, 1)
    assert "the stored traced run of f is no usable trace" in said[-1] and "tracing it again" in said[-1]
    untraced = runner(
        FakeRun({}, ran, False, events=events), FakeRun({}, {"probes": []}, False, events=events)
    )
    untraced.untraced(spec, "f")
    untraced.untraced(spec, "f")
    assert events == ["keep"], "a yardstick that did not run the probe is not stored"
