from __future__ import annotations

import http.server
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tfbisect.core import catalogue
from tfbisect.core.errors import CatalogueError, UnknownVersionError

from conftest import loopback


def page(project: str, files: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "meta": {"api-version": "1.1"},
        "name": project,
        "versions": [],
        "files": [
            {
                "filename": name,
                "upload-time": time,
                "hashes": {"sha256": "0" * 64},
                "url": "x",
                "yanked": False,
            }
            for name, time in files
        ],
    }


TF_PAGE = page(
    "tensorflow",
    [
        ("tensorflow-2.2.0-cp38-cp38-manylinux2010_x86_64.whl", "2020-05-07T18:00:00Z"),
        ("tensorflow-2.2.0-cp37-cp37m-manylinux2010_x86_64.whl", "2020-05-07T17:00:00Z"),
        ("tensorflow-2.2.0-cp38-cp38-win_amd64.whl", "2020-05-07T16:00:00Z"),
        ("tensorflow-2.3.0rc0-cp38-cp38-manylinux2010_x86_64.whl", "2020-06-20T00:00:00Z"),
        ("tensorflow-2.3.0-cp38-cp38-manylinux2010_x86_64.whl", "2020-07-27T00:00:00Z"),
        ("tensorflow-1.15.0-cp37-cp37m-manylinux2010_x86_64.whl", "2019-10-16T00:00:00Z"),
        (
            "tensorflow-2.16.1-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "2024-03-09T00:00:00Z",
        ),
    ],
)
CPU_PAGE = page(
    "tensorflow-cpu", [("tensorflow_cpu-2.3.0-cp38-cp38-manylinux2010_x86_64.whl", "2020-07-27T01:00:00Z")]
)
KERAS_PAGE = page(
    "tf-keras",
    [
        ("tf_keras-2.16.0-py3-none-any.whl", "2024-03-09T02:00:00Z"),
        ("tf_keras-2.16.0.tar.gz", "2024-03-09T02:00:00Z"),
    ],
)


def small() -> catalogue.Catalogue:
    dists = [
        *catalogue.dists_from_simple_json("tensorflow", TF_PAGE),
        *catalogue.dists_from_simple_json("tensorflow-cpu", CPU_PAGE),
        *catalogue.dists_from_simple_json("tf-keras", KERAS_PAGE),
    ]
    return catalogue.Catalogue(dists=tuple(dists), fetched_at="2026-01-01T00:00:00+00:00")


def test_folds_files_into_versions_with_first_upload_and_linux_pythons() -> None:
    dists = {d.version: d for d in catalogue.dists_from_simple_json("tensorflow", TF_PAGE)}
    assert dists["2.2.0"].uploaded == "2020-05-07T16:00:00Z"  # the earliest file, whatever platform
    assert dists["2.2.0"].pythons == ("3.7", "3.8")  # the windows wheel adds nothing
    assert dists["2.16.1"].pythons == ("3.12",)
    assert dists["2.3.0rc0"].prerelease


def test_releases_skip_tf1_and_prereleases_unless_asked() -> None:
    cat = small()
    assert [r.version for r in cat.releases()] == ["2.2.0", "2.3.0", "2.16.1"]
    assert [r.version for r in cat.releases(pre=True)] == ["2.2.0", "2.3.0rc0", "2.3.0", "2.16.1"]
    assert cat.resolve("2.3").cpu_project == "tensorflow-cpu"
    assert cat.resolve("2.2").cpu_project == "tensorflow"


def test_resolve_line_exact_and_unknown() -> None:
    cat = small()
    assert cat.resolve("2.2").version == "2.2.0"
    assert cat.resolve("2.3.0rc0").version == "2.3.0rc0"
    with pytest.raises(UnknownVersionError) as info:
        cat.resolve("2.4")
    assert "nearest first: 2.3.0, 2.2.0" in str(info.value)
    assert "What to do" in str(info.value)


def test_tf_keras_matches_the_line() -> None:
    cat = small()
    found = cat.tf_keras_for(cat.resolve("2.16"))
    assert found is not None and found.version == "2.16.0"
    assert cat.tf_keras_for(cat.resolve("2.3")) is None


def test_snapshot_round_trip(tmp_path: Path) -> None:
    cat = small()
    path = tmp_path / "cat.json"
    catalogue.save_snapshot(cat, path)
    again = catalogue.load_snapshot(path)
    assert again.releases() == cat.releases()


def test_corrupted_snapshot_says_how_to_restore(tmp_path: Path) -> None:
    path = tmp_path / "cat.json"
    path.write_text("{not json")
    with pytest.raises(CatalogueError) as info:
        catalogue.load_snapshot(path)
    assert "git checkout" in info.value.todo


def test_committed_snapshot_covers_tf_2_0_to_2_21() -> None:
    cat = catalogue.load_snapshot()
    lines = cat.lines()
    assert lines[0] == "2.0" and "2.21" in lines
    assert cat.resolve("2.2").pythons[-1] == "3.8"
    assert "3.13" in cat.resolve("2.21").pythons and "3.9" not in cat.resolve("2.21").pythons


class _Index(http.server.BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, Any]] = {
        "tensorflow": TF_PAGE,
        "tensorflow-cpu": CPU_PAGE,
        "tf-keras": KERAS_PAGE,
    }
    seen_accept: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen_accept.append(self.headers.get("Accept", ""))
        project = self.path.strip("/").split("/")[-1]
        body = json.dumps(self.pages[project]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def index() -> Iterator[str]:
    with loopback(_Index) as url:
        yield f"{url}/simple"


def test_fetch_speaks_pep_691(index: str) -> None:
    cat = catalogue.fetch(index)
    assert [r.version for r in cat.releases()] == ["2.2.0", "2.3.0", "2.16.1"]
    assert all("application/vnd.pypi.simple.v1+json" in accept for accept in _Index.seen_accept)


def test_fetch_failure_points_at_the_snapshot() -> None:
    with pytest.raises(CatalogueError) as info:
        catalogue.fetch("http://127.0.0.1:9/simple", timeout=2)
    assert "snapshot" in info.value.todo
