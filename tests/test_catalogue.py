from __future__ import annotations

import http.server
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tfbisect.core import catalogue
from tfbisect.core.catalogue import Dist, ReleaseKind
from tfbisect.core.errors import CatalogueError, UnknownVersionError
from tfbisect.envs import index as package_index
from tfbisect.envs import pages

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
NIGHTLY_PAGE = page(
    "tf-nightly",
    [
        ("tf_nightly-2.17.0.dev20240301-cp312-cp312-manylinux_2_17_x86_64.whl", "2024-03-01T20:00:00Z"),
        ("tf_nightly-2.17.0.dev20240302-cp312-cp312-macosx_12_0_arm64.whl", "2024-03-02T20:00:00Z"),
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
        "tf-nightly": NIGHTLY_PAGE,
    }
    seen_accept: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen_accept.append(self.headers.get("Accept", ""))
        project = self.path.strip("/").split("/")[-1]
        if project not in self.pages:
            self.send_error(404)
            return
        page = self.pages[project]
        body = page.encode() if isinstance(page, str) else json.dumps(page).encode()  # str: as served
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
    cat = package_index.fetch(index)
    assert [r.version for r in cat.releases()] == ["2.2.0", "2.3.0", "2.16.1"]
    assert all("application/vnd.pypi.simple.v1+json" in accept for accept in _Index.seen_accept)
    # the nightly without a linux wheel is kept as a dist, but is no build one can run
    assert [r.version for r in cat.nightlies()] == ["2.17.0.dev20240301"]
    assert [d.version for d in cat.dists if d.project == "tf-nightly"] == [
        "2.17.0.dev20240301",
        "2.17.0.dev20240302",
    ]


def test_fetch_does_without_nightlies_on_a_mirror_that_lacks_them(
    index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Index, "pages", {k: v for k, v in _Index.pages.items() if k != "tf-nightly"})
    cat = package_index.fetch(index)
    assert [r.version for r in cat.releases()] == ["2.2.0", "2.3.0", "2.16.1"]
    assert cat.nightlies() == [] and cat.nightly_window() is None


def test_fetch_without_tensorflow_is_an_error(index: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Index, "pages", {k: v for k, v in _Index.pages.items() if k != "tensorflow"})
    with pytest.raises(CatalogueError, match="404") as info:
        package_index.fetch(index)
    assert "--index-url" in info.value.todo


def test_fetch_failure_points_at_the_snapshot() -> None:
    with pytest.raises(CatalogueError) as info:
        package_index.fetch("http://127.0.0.1:9/simple", timeout=2)
    assert "snapshot" in info.value.todo


# -- release candidates and nightlies ------------------------------------------------------------


def dist(
    project: str, version: str, uploaded: str, pythons: str = "3.11 3.12", *, yanked: bool = False
) -> Dist:
    return Dist(project, version, uploaded, tuple(pythons.split()), yanked)


def builds() -> catalogue.Catalogue:
    """The shape of the index around TF 2.21-2.23: releases, RCs, daily nightlies with gaps."""
    dists = [
        dist("tensorflow", "2.20.0", "2025-08-13T18:00:00Z"),
        dist("tensorflow", "2.21.0rc0", "2026-01-20T18:00:00Z"),
        dist("tensorflow", "2.21.0rc1", "2026-02-10T18:00:00Z"),
        dist("tensorflow", "2.21.0", "2026-03-06T18:00:00Z"),
        dist("tensorflow", "2.21.1rc0", "2026-05-01T18:00:00Z", yanked=True),
        dist("tensorflow", "2.22.0rc0", "2026-09-20T18:00:00Z"),
        dist("tensorflow", "2.22.0", "2026-10-01T18:00:00Z"),
        dist("tensorflow-cpu", "2.21.0", "2026-03-06T19:00:00Z", "3.10 3.11 3.12 3.13"),
        dist("tf-keras", "2.21.0", "2026-03-18T00:00:00Z", "any"),
        dist("tf-keras", "2.22.0", "2026-10-02T00:00:00Z", "any"),
        dist("tf-nightly", "2.21.0.dev20260202", "2026-02-02T16:27:26Z", "3.10 3.11 3.12 3.13"),
        dist("tf-nightly", "2.22.0.dev20260204", "2026-02-04T16:00:00Z"),
        dist("tf-nightly", "2.22.0.dev20260321", "2026-03-21T14:18:20Z", ""),  # no linux wheel
        dist("tf-nightly", "2.22.0.dev20260913", "2026-09-14T01:00:00Z"),  # uploaded the day after
        dist("tf-nightly", "2.22.0.dev20260914", "2026-09-14T22:00:00Z"),
        dist("tf-nightly", "2.23.0.dev20261012", "2026-10-12T20:40:59Z", "3.11 3.12 3.13 3.14"),
        dist("tf-nightly", "2.23.0.dev20261013", "2026-10-13T20:40:59Z", yanked=True),
    ]
    return catalogue.Catalogue(dists=tuple(dists), fetched_at="2026-11-01T00:00:00+00:00")


def versions(releases: list[catalogue.Release]) -> list[str]:
    return [r.version for r in releases]


def test_releases_keep_nightlies_out_unless_asked() -> None:
    cat = builds()
    assert versions(cat.releases()) == ["2.20.0", "2.21.0", "2.22.0"]
    assert versions(cat.releases(pre=True)) == [
        "2.20.0",
        "2.21.0rc0",
        "2.21.0rc1",
        "2.21.0",
        "2.22.0rc0",
        "2.22.0",
    ]
    assert cat.lines() == ["2.20", "2.21", "2.22"]  # no 2.23 line: it exists only as nightlies
    assert {r.kind for r in cat.releases(pre=True)} == {ReleaseKind.RELEASE, ReleaseKind.RC}
    assert versions(cat.releases(nightly=True)) == [
        "2.20.0",
        "2.21.0.dev20260202",
        "2.21.0",
        "2.22.0.dev20260204",
        "2.22.0.dev20260913",
        "2.22.0.dev20260914",
        "2.22.0",
        "2.23.0.dev20261012",
    ]


def test_a_nightly_is_a_release_of_tf_nightly() -> None:
    nightly = builds().resolve("2.23.0.dev20261012")
    assert nightly.kind is ReleaseKind.NIGHTLY and nightly.prerelease
    assert nightly.cpu_project == "tf-nightly"
    assert nightly.cpython3 == ["3.11", "3.12", "3.13", "3.14"]
    assert nightly.line == "2.23" and nightly.date == "2026-10-12"
    assert builds().tf_keras_for(nightly) is None  # tf-keras 2.23 would not be its Keras


def test_resolve_nightlies() -> None:
    cat = builds()
    assert cat.resolve("2.22.0.dev20260204").kind is ReleaseKind.NIGHTLY  # exact: whatever `pre` says
    assert cat.resolve("2.22.0.dev20260204", pre=True).version == "2.22.0.dev20260204"
    assert cat.resolve("2.22.0dev20260204").version == "2.22.0.dev20260204"  # PEP 440 spellings
    assert cat.resolve("nightly").version == "2.23.0.dev20261012"  # the yanked one after it does not count
    assert cat.resolve("nightly:2026-09-14").version == "2.22.0.dev20260914"  # the newest that day
    assert cat.resolve("nightly:2026-02-02").version == "2.21.0.dev20260202"
    # lines and final versions never pick a nightly
    assert cat.resolve("2.22").version == "2.22.0"
    assert cat.resolve("2.21", pre=True).version == "2.21.0"
    with pytest.raises(UnknownVersionError):
        cat.resolve("2.23")


def test_unknown_nightly_day_lists_the_nearest_days() -> None:
    with pytest.raises(UnknownVersionError) as info:
        builds().resolve("nightly:2026-03-21")
    assert "2.22.0.dev20260321 has no linux x86_64 wheel" in info.value.what
    assert "nightlies run from 2026-02-02 to 2026-10-12" in info.value.what
    assert info.value.todo.startswith(
        "pick a nearby day: nightly:2026-02-04 (2.22.0.dev20260204), nightly:2026-02-02 (2.21.0.dev20260202), "
    )
    with pytest.raises(UnknownVersionError) as info:
        builds().resolve("nightly:2026-10-20")
    assert "has no linux" not in info.value.what
    assert info.value.todo.startswith("pick a nearby day: nightly:2026-10-12 (2.23.0.dev20261012)")


@pytest.mark.parametrize(
    "text", ["nightly:2026-02-30", "nightly:20260202", "nightly:", "nightly:2026-02-02 ", "nightlyx"]
)
def test_malformed_nightly_day_says_how_to_write_one(text: str) -> None:
    with pytest.raises(UnknownVersionError) as info:
        builds().resolve(text)
    assert "nightly:YYYY-MM-DD" in info.value.todo


def test_unknown_nightly_lists_nearest_nightlies() -> None:
    cat = builds()
    with pytest.raises(UnknownVersionError) as info:
        cat.resolve("2.22.0.dev20260320")  # no linux wheel that week: the nearest days instead
    assert "pick one of these, nearest first: 2.22.0.dev20260204, 2.21.0.dev20260202, 2.22.0.dev20260913" in (
        info.value.todo
    )
    with pytest.raises(UnknownVersionError) as info:
        cat.resolve("2.22.0.dev2026…")  # cut short: the newest that share its prefix
    assert "nearest first: 2.22.0.dev20260914, 2.22.0.dev20260913, 2.22.0.dev20260204;" in info.value.todo
    with pytest.raises(UnknownVersionError) as info:
        cat.resolve("2.23.0.dev20261013")  # yanked
    assert "nearest first: 2.23.0.dev20261012," in info.value.todo


def test_nightly_without_nightlies_says_refresh() -> None:
    with pytest.raises(UnknownVersionError) as info:
        small().resolve("nightly")
    assert "--refresh" in info.value.todo


def test_between_lists_rcs_and_nightlies_in_pep440_order() -> None:
    cat = builds()
    assert versions(cat.between("2.20.0", "2.21.0")) == ["2.21.0.dev20260202", "2.21.0rc0", "2.21.0rc1"]
    # the yanked 2.21.1rc0 and the nightly without a linux wheel are left out
    assert versions(cat.between("2.21.0", "2.22.0")) == [
        "2.22.0.dev20260204",
        "2.22.0.dev20260913",
        "2.22.0.dev20260914",
        "2.22.0rc0",
    ]
    assert cat.between("2.22.0", "2.21.0") == cat.between("2.21.0", "2.22.0")
    wide = cat.between("2.20.0", "2.22.0")
    assert "2.21.0" not in versions(wide) and all(r.kind is not ReleaseKind.RELEASE for r in wide)
    assert cat.between("2.21.0", "2.21.0") == []
    assert cat.between("2.21.0rc0", "2.21.0") == [cat.resolve("2.21.0rc1")]  # strictly between
    with pytest.raises(ValueError):
        cat.between("2.21.0", "two")


def test_window_and_oldest_rc() -> None:
    assert builds().nightly_window() == ("2026-02-02", "2026-10-12")
    oldest = builds().oldest_rc()
    assert oldest is not None and oldest.version == "2.21.0rc0"
    assert catalogue.Catalogue(dists=(), fetched_at="x").oldest_rc() is None
    assert small().nightly_window() is None


def test_snapshot_round_trip_keeps_nightlies(tmp_path: Path) -> None:
    path = tmp_path / "cat.json"
    catalogue.save_snapshot(builds(), path)
    again = catalogue.load_snapshot(path)
    assert again.releases(pre=True, nightly=True) == builds().releases(pre=True, nightly=True)


def test_committed_snapshot_has_rcs_and_nightlies() -> None:
    cat = catalogue.load_snapshot()
    oldest = cat.oldest_rc()
    assert oldest is not None and oldest.version == "2.6.0rc0"  # the index deleted TF 2.0-2.5's RCs
    assert cat.between("2.3.4", "2.4.0") == []
    window = cat.nightly_window()
    assert window is not None and window[0] == "2026-02-02"
    assert versions(cat.between("2.20.0", "2.21.0"))[:3] == [
        "2.21.0.dev20260202",
        "2.21.0.dev20260203",
        "2.21.0rc0",
    ]
    assert all(r.cpu_project == "tf-nightly" for r in cat.nightlies())
    assert "2.23" not in cat.lines()


def test_unknown_nightly_without_nightlies_says_refresh() -> None:
    with pytest.raises(UnknownVersionError) as info:
        small().resolve("2.23.0.dev20261012")
    assert "it has no nightlies" in info.value.what
    assert info.value.todo.startswith("refresh the catalogue")


def test_a_page_over_the_bound_is_refused_unread(index: str, monkeypatch: pytest.MonkeyPatch) -> None:
    padded = dict(TF_PAGE, padding="x" * 5000)
    monkeypatch.setattr(_Index, "pages", dict(_Index.pages, tensorflow=padded))
    monkeypatch.setattr(pages, "PAGE_MAX_BYTES", 4000)
    with pytest.raises(CatalogueError, match="over 0 MiB: not read") as info:
        package_index.fetch(index)
    assert "/tensorflow/" in str(info.value) and "snapshot" in info.value.todo


def test_the_bound_is_checked_before_reading_and_while_reading() -> None:
    read: list[int] = []

    def chunks(count: int) -> Iterator[bytes]:
        for number in range(count):
            read.append(number)
            yield b"x" * 100

    assert pages.bounded(chunks(5), declared=None) == b"x" * 500
    assert pages.bounded(chunks(5), declared=pages.PAGE_MAX_BYTES + 1) is None  # declared: nothing read
    assert len(read) == 5
    big = pages.PAGE_MAX_BYTES // 100 + 10
    read.clear()
    assert pages.bounded(chunks(big), declared=None) is None
    assert len(read) == pages.PAGE_MAX_BYTES // 100 + 1  # stopped one chunk past the bound
    assert pages.declared_length({"Content-Length": "12"}) == 12
    assert pages.declared_length({"Content-Length": "-1"}) is None
    assert pages.declared_length({"Content-Length": "9" * 30}) is None


@pytest.mark.parametrize(
    ("page", "said"),
    [
        ("{not json", "is not JSON"),
        ("[" * 100_000 + "]" * 100_000, "is not JSON"),
        ("[]", "has no list of files"),
        ('{"files": {"a": 1}}', "has no list of files"),
    ],
)
def test_a_page_that_is_no_pep_691_page_is_a_two_part_error(
    index: str, monkeypatch: pytest.MonkeyPatch, page: str, said: str
) -> None:
    monkeypatch.setattr(_Index, "pages", dict(_Index.pages, tensorflow=page))
    with pytest.raises(CatalogueError, match=said) as info:
        package_index.fetch(index)
    assert info.value.todo


def test_entries_of_the_wrong_shape_are_skipped_not_trusted() -> None:
    good = TF_PAGE["files"][0]
    hostile = {"files": [1, "x", None, {"filename": 5}, {"filename": ["a"]}, {}, good]}
    found = catalogue.dists_from_simple_json("tensorflow", hostile)
    assert [d.version for d in found] == [
        catalogue.dists_from_simple_json("tensorflow", {"files": [good]})[0].version
    ]
    with pytest.raises(CatalogueError, match="no upload times"):
        catalogue.dists_from_simple_json("tensorflow", {"files": [dict(good, **{"upload-time": 7})]})
