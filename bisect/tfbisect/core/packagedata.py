"""Files shipped inside the package (schema, catalogue snapshot, locks, templates)."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable


def data_file(*parts: str) -> Traversable:
    node = resources.files("tfbisect").joinpath("data")
    for part in parts:
        node = node.joinpath(part)
    return node
