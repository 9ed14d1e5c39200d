from __future__ import annotations

import pytest

from tfbisect.core.versions import commit_of, git_tag, is_nightly, minor_line, python_tag, tox_factor


@pytest.mark.parametrize(
    ("version", "tag"),
    [
        ("2.10.1", "v2.10.1"),
        ("2.16.1", "v2.16.1"),
        ("2.15.0.post1", "v2.15.0"),
        ("2.16.0rc0", "v2.16.0-rc0"),
        ("2.0.0a0", "v2.0.0-alpha0"),
        ("2.0.0b1", "v2.0.0-beta1"),
    ],
)
def test_git_tag(version: str, tag: str) -> None:
    assert git_tag(version) == tag


def test_a_nightly_has_no_tag() -> None:
    with pytest.raises(ValueError, match="nightly"):
        git_tag("2.23.0.dev20261012")


def test_is_nightly() -> None:
    assert is_nightly("2.23.0.dev20261012")
    assert is_nightly("2.23.0dev20261012")
    assert not is_nightly("2.21.0rc1")
    assert not is_nightly("2.21.0")
    assert not is_nightly("nightly")  # no version at all


@pytest.mark.parametrize(
    ("git_version", "commit"),
    [
        ("v1.12.1-123456-gabcdef0123", "abcdef0123"),
        ("v2.21.0-rc0-4242-g0123456", "0123456"),
        ("v1.12.1-123456-g" + "a" * 40, "a" * 40),
        ("v1.12.1-123456-gabcdef0-dirty", "abcdef0"),
        ("f" * 40, "f" * 40),
    ],
)
def test_commit_of_reads_git_describe_and_full_shas(git_version: str, commit: str) -> None:
    assert commit_of(git_version) == commit


@pytest.mark.parametrize(
    "git_version",
    [
        None,
        "",
        "unknown",
        "v2.4.0-rc4",  # a tag alone: a release, no commit named
        "v2.4.0",
        "abcdef0",  # a short sha alone is no proof of anything
        "f" * 39,
        "f" * 41,
        "F" * 40,  # git writes lowercase
        "v1.12.1-123456-gabcdef",  # 6 hex digits
        "v1.12.1-123456-g" + "a" * 41,
        "v1.12.1-123456-gABCDEF0",
        "v1.12.1-123456-gabcdef0\n",
        " v1.12.1-123456-gabcdef0",
        "v1.12.1-123456-gabcdef0; rm -rf /",
        "v1.12.1-١٢٣-gabcdef0",  # non-ASCII digits
        "x" * 150 + "-1-gabcdef0",  # a tag longer than any TF tag
        "v1-1-gabcdef0" * 40,  # over the length bound
        12345,
        ["v1.12.1-123456-gabcdef0"],
    ],
)
def test_commit_of_rejects_everything_else(git_version: object) -> None:
    assert commit_of(git_version) is None


def test_lines_and_factors() -> None:
    assert minor_line("2.10.1") == "2.10"
    assert minor_line("2.23.0.dev20261012") == "2.23"
    assert tox_factor("2.10") == "tf210"
    assert tox_factor("2.2") == "tf22"
    assert python_tag("3.10") == "cp310"
