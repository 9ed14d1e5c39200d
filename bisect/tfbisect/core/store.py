"""The result store: one JSON file per (scenario hash, environment), written atomically.

Layout: `<root>/<scenario>/<scenario sha256[:12]>/<env key>.json`, so that a changed
scenario never reuses results of its older text, and a repeat run reuses its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tfbisect.core import jsonread
from tfbisect.core.errors import StoreError
from tfbisect.core.fsio import stamp, write_json_atomic
from tfbisect.core.record import RunRecord
from tfbisect.core.safe_names import safe_component
from tfbisect.core.spec import EnvSpec


class ResultStore:
    def __init__(self, root: Path, warn: Callable[[str], None] | None = None) -> None:
        self.root = root
        # Warnings go where the caller's progress goes (and stay quiet with --quiet).
        self.warn = warn or (lambda text: print(text, file=sys.stderr))

    def path_for(self, scenario: str, scenario_sha256: str, spec: EnvSpec) -> Path:
        # A scenario's name comes from its file name: made one safe folder name (no `..`, no `/`).
        return self.root / safe_component(scenario) / scenario_sha256[:12] / f"{spec.key}.json"

    def get(self, scenario: str, scenario_sha256: str, spec: EnvSpec) -> RunRecord | None:
        """The stored record, or None; a corrupted file is moved aside (kept) and reported."""
        path = self.path_for(scenario, scenario_sha256, spec)
        if not path.exists():
            return None
        try:
            return load(path)
        except StoreError:
            aside = path.with_name(f"{path.name}.corrupt-{stamp()}")  # UTC, like every stamp
            path.replace(aside)
            self.warn(f"warning: {path} was corrupted; kept it as {aside.name} and will run again.")
            return None

    def put(self, record: RunRecord) -> Path:
        path = self.path_for(record.scenario, record.scenario_sha256, record.spec)
        write_json_atomic(path, record.to_dict())
        return path

    def records(self, scenario: str | None = None) -> Iterator[tuple[Path, RunRecord]]:
        base = self.root / safe_component(scenario) if scenario else self.root
        if not base.exists():
            return
        for path in sorted(base.rglob("*.json")):
            if path.is_symlink() or not path.is_file():
                self.warn(f"warning: skipping {path}: not a regular file")
                continue
            try:
                yield path, load(path)
            except StoreError as exc:
                self.warn(f"warning: skipping {path}: {exc.what}")


def load(path: Path) -> RunRecord:
    try:
        data = jsonread.read(path, max_bytes=None)
        return RunRecord.from_dict(data)
    except FileNotFoundError as exc:
        raise StoreError(
            f"There is no stored result at {path}.", "list stored results with `tfbisect show`."
        ) from exc
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise StoreError(
            f"The stored result {path} is corrupted ({type(exc).__name__}: {exc}).",
            "delete it and rerun that version (`tfbisect run`); other stored results are unaffected.",
        ) from exc
