from __future__ import annotations

import pytest

from tfbisect.core.versions import git_tag, minor_line, python_tag, tox_factor


@pytest.mark.parametrize(
    ("version", "tag"),
    [("2.10.1", "v2.10.1"), ("2.16.1", "v2.16.1"), ("2.15.0.post1", "v2.15.0"), ("2.16.0rc0", "v2.16.0-rc0")],
)
def test_git_tag(version: str, tag: str) -> None:
    assert git_tag(version) == tag


def test_lines_and_factors() -> None:
    assert minor_line("2.10.1") == "2.10"
    assert tox_factor("2.10") == "tf210"
    assert tox_factor("2.2") == "tf22"
    assert python_tag("3.10") == "cp310"
