from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tfbisect.record import RunRecord

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]


def recorded(name: str) -> RunRecord:
    """A record stored by a real run (TF 2.2.3 on py3.8, TF 2.21.0 on py3.11)."""
    return RunRecord.from_dict(json.loads((DATA / f"record-{name}.json").read_text()))


@pytest.fixture
def tf22_document() -> dict[str, Any]:
    document = recorded("tf2.2.3").document
    assert document is not None
    return copy.deepcopy(document)


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    path = tmp_path / "reports"
    path.mkdir()
    return path
