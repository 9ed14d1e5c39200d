from __future__ import annotations

from pathlib import Path

import pytest

from tfbisect.core.errors import StoreError
from tfbisect.core.store import ResultStore, load

from conftest import recorded


def test_put_get_round_trip(tmp_path: Path) -> None:
    record = recorded("tf2.2.3")
    store = ResultStore(tmp_path)
    path = store.put(record)
    assert path == tmp_path / "gradient_mismatch" / record.scenario_sha256[:12] / f"{record.spec.key}.json"
    assert path.stat().st_mode & 0o777 == 0o644
    assert store.get(record.scenario, record.scenario_sha256, record.spec) == record
    assert not list(path.parent.glob("*.tmp"))


def test_other_scenario_text_is_another_key(tmp_path: Path) -> None:
    record = recorded("tf2.2.3")
    store = ResultStore(tmp_path)
    store.put(record)
    assert store.get(record.scenario, "e" * 64, record.spec) is None


def test_corrupted_result_is_kept_aside_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = recorded("tf2.2.3")
    store = ResultStore(tmp_path)
    path = store.put(record)
    other = store.put(recorded("tf2.21.0"))
    path.write_text('{"record_version": 1, "spec": ')
    with pytest.raises(StoreError) as info:
        load(path)
    assert "corrupted" in info.value.what and "rerun" in info.value.todo
    assert store.get(record.scenario, record.scenario_sha256, record.spec) is None
    kept = list(path.parent.glob(f"{path.name}.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text().startswith('{"record_version"')
    assert other.exists(), "a corrupted neighbour must not cost other results"
    assert "kept it as" in capsys.readouterr().err
