"""Validation of scenario result documents against the versioned JSON Schema."""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema

from tfbisect.core import jsonread
from tfbisect.core.packagedata import data_file


@cache
def result_schema() -> dict[str, Any]:
    text = data_file("result.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = jsonread.loads(text)
    return schema


def problems(document: Any) -> list[str]:
    """Every way the document breaks the schema, each as `path: message`; empty when valid."""
    validator = jsonschema.Draft202012Validator(result_schema())
    found = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(document)"
        found.append(f"{where}: {error.message}")
    return found
