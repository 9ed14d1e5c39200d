"""The wheel cache's fast path and the image builds' installer, on loopback: a lock's exact file
is found by its digest and the target's tags, a file whose digest is not the lock's is refused
and deleted, and the installer refuses a uv binary whose sha256 is not the one named."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tfbisect.core import local_http
from tfbisect.core.packagedata import data_file
from tfbisect.envs import wheelfetch
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
    """A PEP 691 index of a folder: `/<name>/` answers with the JSON page `<name>.json`."""

    def do_GET(self) -> None:
        page = Path(self.directory) / (self.path.strip("/") + ".json")
        if self.path.endswith("/") and page.is_file():
            body = page.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", wheelfetch.JSON_PAGE)
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


def publish(folder: Path, name: str, files: dict[str, tuple[bytes, str]]) -> None:
    """Files of a project on the index, each listed with the digest given (which may lie)."""
    entries = []
    for filename, (data, digest) in files.items():
        (folder / filename).write_bytes(data)
        entries.append({"filename": filename, "url": f"../{filename}", "hashes": {"sha256": digest}})
    (folder / f"{name}.json").write_text(json.dumps({"files": entries}))


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


def test_the_image_installer_runs_uv_offline_with_no_deps(served: tuple[str, Path], tmp_path: Path) -> None:
    url, root = served
    [tool] = (root / "tools").iterdir()
    done = installer(url, tool.name.removeprefix("uv-"))
    assert done.returncode == 0, done.stderr
    assert "installing with uv" in done.stdout
    calls = (tmp_path / "calls.txt").read_text().split("\n")
    assert calls[0] == "--version"
    install = calls[1:]
    assert install[:3] == ["pip", "install", "--python"] and "/opt/venv/bin/python" in install
    assert "--no-index" in install and "--no-deps" in install
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
