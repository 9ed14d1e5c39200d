"""The wheel cache's fast path and the image builds' installer, on loopback: a lock's exact file
is found by its digest and the target's tags, a file whose digest is not the lock's is refused
and deleted, and the installer refuses a uv binary whose sha256 is not the one named."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tfbisect.core import local_http
from tfbisect.core.packagedata import data_file
from tfbisect.envs import pages, wheelfetch
from tfbisect.envs.wheelhouse import Pin

TAGS = ["cp311-cp311-manylinux_2_17_x86_64", "py3-none-any"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wheel_bytes(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name}.py", "X = 1\n")
    return buffer.getvalue()


class _Index(http.server.SimpleHTTPRequestHandler):
    """A PEP 691 index of a folder: `/<name>/` answers with the JSON page `<name>.json`; a file
    with a `<file>.stream` beside it is sent as those bytes, with no Content-Length (a server
    that does not say how much is coming)."""

    def do_GET(self) -> None:
        stream = Path(self.directory) / (self.path.strip("/") + ".stream")
        if stream.is_file():
            self.send_response(200)
            self.end_headers()
            self.wfile.write(stream.read_bytes())
            return
        page = Path(self.directory) / (self.path.strip("/") + ".json")
        if self.path.endswith("/") and page.is_file():
            body = page.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", pages.JSON_PAGE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "index"
    folder.mkdir()
    with local_http.serve(partial(_Index, directory=str(folder))) as url:
        monkeypatch.setenv("PIP_INDEX_URL", url)
        yield folder


def publish(folder: Path, name: str, files: dict[str, tuple[bytes, str]], **extra: object) -> None:
    """Files of a project on the index, each listed with the digest given (which may lie), and
    `extra` fields in each entry (a size, another url)."""
    entries = []
    for filename, (data, digest) in files.items():
        (folder / filename).write_bytes(data)
        entry = {"filename": filename, "url": f"../{filename}", "hashes": {"sha256": digest}, **extra}
        entries.append(entry)
    (folder / f"{name}.json").write_text(json.dumps({"files": entries}))


def fetch_one(pin: Pin, tmp_path: Path) -> tuple[list[wheelfetch.Fetched], list[str], Path]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    notes: list[str] = []
    return wheelfetch.fetch([pin], TAGS, out, notes), notes, out


def two_parts(note: str) -> bool:
    """What happened; what to do (here: the index to check, pip wheel trying instead)."""
    what, _, todo = note.partition("; ")
    return bool(what) and "PIP_INDEX_URL" in todo and "pip wheel" in todo


def test_the_locks_wheel_is_chosen_by_its_digest_and_the_most_preferred_tag(
    index: Path, tmp_path: Path
) -> None:
    native, pure, other = wheel_bytes("a"), wheel_bytes("b"), wheel_bytes("c")
    publish(
        index,
        "alpha",
        {
            "alpha-1.0-py3-none-any.whl": (pure, sha(pure)),
            "alpha-1.0-cp311-cp311-manylinux_2_17_x86_64.whl": (native, sha(native)),
            "alpha-1.0-cp312-cp312-manylinux_2_17_x86_64.whl": (other, sha(other)),  # not this Python's
            "alpha-1.0.tar.gz": (b"sdist", sha(b"sdist")),
        },
    )
    pin = Pin("alpha", "1.0", frozenset({sha(native), sha(pure), sha(other), sha(b"sdist")}))
    out = tmp_path / "out"
    out.mkdir()
    notes: list[str] = []
    [found] = wheelfetch.fetch([pin], TAGS, out, notes)
    assert found.path.name == "alpha-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    assert found.path.read_bytes() == native and found.sha256 == sha(native)
    assert notes == []


def test_a_file_whose_digest_is_not_the_locks_is_refused_and_deleted(index: Path, tmp_path: Path) -> None:
    good, served = wheel_bytes("a"), wheel_bytes("tampered")
    # The index lists the lock's digest, but serves other bytes (a damaged mirror, a proxy).
    publish(index, "beta", {"beta-2.0-py3-none-any.whl": (served, sha(good))})
    pin = Pin("beta", "2.0", frozenset({sha(good)}))
    out = tmp_path / "out"
    out.mkdir()
    notes: list[str] = []
    assert wheelfetch.fetch([pin], TAGS, out, notes) == []
    assert list(out.iterdir()) == []
    assert len(notes) == 1 and "sha256" in notes[0] and "beta==2.0" in notes[0]


def test_an_sdist_only_pin_is_left_to_pip(index: Path, tmp_path: Path) -> None:
    publish(index, "gamma", {"gamma-3.0.tar.gz": (b"sdist", sha(b"sdist"))})
    pin = Pin("gamma", "3.0", frozenset({sha(b"sdist")}))
    notes: list[str] = []
    assert wheelfetch.fetch([pin], TAGS, tmp_path, notes) == []
    assert notes and "sdist" in notes[0]


def test_a_page_over_the_cap_is_refused_not_read(
    index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = wheel_bytes("a")
    publish(index, "delta", {"delta-1.0-py3-none-any.whl": (data, sha(data))}, padding="x" * 4000)
    monkeypatch.setattr(pages, "PAGE_MAX_BYTES", 2000)
    fetched, notes, out = fetch_one(Pin("delta", "1.0", frozenset({sha(data)})), tmp_path)
    assert fetched == [] and list(out.iterdir()) == []
    [note] = notes
    assert "delta==1.0: the index's page of delta" in note and "over 0 MiB: not read" in note
    assert two_parts(note), note


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("page", "said"),
    [
        ("[]", "has no list of files"),
        ('{"files": {"a": 1}}', "has no list of files"),
        ("{not json", "is not JSON"),
        ('{"files": [1e999]}', "is not JSON"),  # a float that overflows
        ('{"files": [' + "9" * 40 + "]}", "is not JSON"),  # an integer too long to format
        ("\udcff".encode("utf-8", "surrogatepass").decode("latin-1"), "is not JSON"),  # not UTF-8
        ('{"files": ' + _deep(100_000) + "}", "is not JSON"),  # nesting past the recursion limit
    ],
)
def test_a_hostile_page_gives_a_clear_note_never_a_crash(
    index: Path, tmp_path: Path, page: str, said: str
) -> None:
    (index / "eps.json").write_bytes(page.encode("latin-1"))
    fetched, notes, out = fetch_one(Pin("eps", "1.0", frozenset({"0" * 64})), tmp_path)
    assert fetched == [] and list(out.iterdir()) == []
    [note] = notes
    assert said in note and two_parts(note), note


def test_entries_of_the_wrong_shape_are_skipped_never_used(index: Path, tmp_path: Path) -> None:
    data = wheel_bytes("a")
    digest = sha(data)
    (index / "zeta-1.0-py3-none-any.whl").write_bytes(data)
    good = {"filename": "zeta-1.0-py3-none-any.whl", "url": "../zeta-1.0-py3-none-any.whl"}
    bad = [
        1,
        None,
        "zeta-1.0-py3-none-any.whl",
        {**good, "hashes": {"sha256": 7}},
        {**good, "hashes": [digest]},
        {**good, "hashes": {"sha256": digest.upper()}},
        {**good, "filename": 5, "hashes": {"sha256": digest}},
        {**good, "url": ["x"], "hashes": {"sha256": digest}},
        {**good, "size": True, "hashes": {"sha256": digest}},
        {**good, "size": -1, "hashes": {"sha256": digest}},
        {**good, "size": "12", "hashes": {"sha256": digest}},
        # A name that is a path: never written outside the fetch's folder.
        {**good, "filename": "../../zeta-1.0-py3-none-any.whl", "hashes": {"sha256": digest}},
        {**good, "filename": ".zeta-1.0-py3-none-any.whl", "hashes": {"sha256": digest}},
    ]
    (index / "zeta.json").write_text(json.dumps({"files": bad}))
    fetched, notes, out = fetch_one(Pin("zeta", "1.0", frozenset({digest})), tmp_path)
    assert (
        fetched == [] and list(out.iterdir()) == [] and not (tmp_path / "zeta-1.0-py3-none-any.whl").exists()
    )
    assert len(notes) == 1 and "built by pip" in notes[0], notes
    # The one well-formed entry among them is used.
    (index / "zeta.json").write_text(json.dumps({"files": [*bad, {**good, "hashes": {"sha256": digest}}]}))
    fetched, notes, out = fetch_one(Pin("zeta", "1.0", frozenset({digest})), tmp_path)
    assert [f.path.read_bytes() for f in fetched] == [data] and notes == []


@pytest.mark.parametrize("announced", [True, False])
def test_a_download_never_goes_past_the_size_the_index_declared(
    index: Path, tmp_path: Path, announced: bool
) -> None:
    """The server sends more than the page declared, saying so in its Content-Length or not."""
    data = wheel_bytes("a")
    name = "eta-1.0-py3-none-any.whl"
    publish(index, "eta", {name: (data, sha(data))}, size=len(data) - 10)
    if not announced:
        (index / f"{name}.stream").write_bytes(data)
    fetched, notes, out = fetch_one(Pin("eta", "1.0", frozenset({sha(data)})), tmp_path)
    assert fetched == [] and list(out.iterdir()) == []
    [note] = notes
    told = "its server announces" if announced else "its server sent more than"
    assert told in note and f"over the {len(data) - 10} bytes the index declared" in note, note
    assert "refused and deleted" in note and two_parts(note)


def test_a_download_never_goes_past_the_cap(
    index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = wheel_bytes("a")
    name = "theta-1.0-py3-none-any.whl"
    monkeypatch.setattr(wheelfetch, "WHEEL_MAX_BYTES", len(data) - 1)
    publish(index, "theta", {name: (data, sha(data))})  # no size declared: the cap bounds it
    (index / f"{name}.stream").write_bytes(data)
    fetched, notes, out = fetch_one(Pin("theta", "1.0", frozenset({sha(data)})), tmp_path)
    assert fetched == [] and list(out.iterdir()) == []
    assert len(notes) == 1 and f"over the cap of {len(data) - 1} bytes" in notes[0] and two_parts(notes[0])
    # A size declared over the cap: not even asked for.
    publish(index, "theta", {name: (data, sha(data))}, size=10**12)
    fetched, notes, _ = fetch_one(Pin("theta", "1.0", frozenset({sha(data)})), tmp_path)
    assert fetched == [] and "over the cap" in notes[0] and "not fetched" in notes[0] and two_parts(notes[0])


@pytest.mark.parametrize(
    ("link", "said"),
    [
        ("file:///etc/passwd", "not an http(s) address"),
        ("ftp://127.0.0.1/iota-1.0-py3-none-any.whl", "not an http(s) address"),
        ("http://user:secret@127.0.0.1:1/iota-1.0-py3-none-any.whl", "with credentials in it"),
        ("http://[::1/iota-1.0-py3-none-any.whl", "not an http(s) address"),
    ],
)
def test_links_that_are_no_plain_http_address_are_refused(
    index: Path, tmp_path: Path, link: str, said: str
) -> None:
    data = wheel_bytes("a")
    publish(index, "iota", {"iota-1.0-py3-none-any.whl": (data, sha(data))}, url=link)
    fetched, notes, out = fetch_one(Pin("iota", "1.0", frozenset({sha(data)})), tmp_path)
    assert fetched == [] and list(out.iterdir()) == []
    assert len(notes) == 1 and said in notes[0] and "secret" not in notes[0] and two_parts(notes[0]), notes


def test_a_link_to_another_host_is_followed_the_digest_decides(
    index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyPI's pages link to files.pythonhosted.org: the host is free (here `localhost` for the
    index's 127.0.0.1), and an https index's files must be https."""
    data = wheel_bytes("a")
    port = os.environ["PIP_INDEX_URL"].rsplit(":", 1)[1]
    name = "kappa-1.0-py3-none-any.whl"
    publish(index, "kappa", {name: (data, sha(data))}, url=f"http://localhost:{port}/{name}")
    fetched, notes, _ = fetch_one(Pin("kappa", "1.0", frozenset({sha(data)})), tmp_path)
    assert [f.path.read_bytes() for f in fetched] == [data] and notes == []
    with pytest.raises(wheelfetch.Refused, match="plain http"):
        wheelfetch._checked_url(f"http://localhost:{port}/{name}", "https://pypi.org/simple", "kappa")


def test_the_target_pythons_tags_come_from_its_own_pip() -> None:
    tags = wheelfetch.target_tags(Path(sys.executable))
    assert tags is not None
    major, minor = sys.version_info[:2]
    assert f"cp{major}{minor}" in tags[0] and "py3-none-any" in tags


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A wheel cache as an image build sees it: a requirement file and a stand-in uv that
    records how it was called."""
    root = tmp_path / "wheels"
    (root / "req").mkdir(parents=True)
    (root / "py3.11").mkdir()
    (root / "req" / "x.txt").write_text("six==1.16.0\n")
    calls = tmp_path / "calls.txt"
    fake = f'#!/bin/sh\nprintf "%s\\n" "$@" >> {calls}\n'.encode()
    (root / "tools").mkdir()
    (root / "tools" / f"uv-{sha(fake)}").write_bytes(fake)
    with local_http.serve(partial(http.server.SimpleHTTPRequestHandler, directory=str(root))) as url:
        yield url, root


def installer(url: str, uv_sha: str) -> subprocess.CompletedProcess[str]:
    script = str(data_file("install_wheels.py"))
    return subprocess.run(
        [sys.executable, script, url, "3.11", "x.txt", uv_sha], capture_output=True, text=True, check=False
    )


def test_the_image_installer_runs_uv_offline_with_no_deps_and_the_locks_hashes(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = served
    [tool] = (root / "tools").iterdir()
    done = installer(url, tool.name.removeprefix("uv-"))
    assert done.returncode == 0, done.stderr
    assert "installing with uv" in done.stdout
    calls = (tmp_path / "calls.txt").read_text().split("\n")
    assert calls[0] == "--version"
    install = calls[1:]
    assert install[:3] == ["pip", "install", "--python"] and "/opt/venv/bin/python" in install
    assert "--no-index" in install and "--no-deps" in install and "--require-hashes" in install
    assert install[install.index("--find-links") + 1] == f"{url}/py3.11/"


def test_the_image_installer_refuses_a_uv_whose_sha256_differs(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = served
    [tool] = (root / "tools").iterdir()
    expected = tool.name.removeprefix("uv-")
    tool.write_bytes(tool.read_bytes() + b"# changed on the way\n")  # served under the old name
    done = installer(url, expected)
    assert done.returncode != 0
    assert "refused" in done.stderr and expected in done.stderr
    assert not (tmp_path / "calls.txt").exists()  # never run
