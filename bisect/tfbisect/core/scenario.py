"""Scenarios: standalone scripts in `scenarios/`, found by name or path and identified by hash."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from tfbisect.core.errors import ScenarioError
from tfbisect.core.names import safe_component

DEFAULT = "gradient_mismatch"


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    sha256: str

    @property
    def slug(self) -> str:
        """The name as one safe path component (store and log paths); ordinary names are unchanged."""
        return safe_component(self.name)


def scenarios_dir() -> Path:
    """`$TFBISECT_SCENARIOS`, else `./scenarios`, else the checkout this package lives in."""
    override = os.environ.get("TFBISECT_SCENARIOS")
    if override:
        return Path(override)
    here = Path.cwd() / "scenarios"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[3] / "scenarios"


def available(directory: Path | None = None) -> list[str]:
    directory = directory or scenarios_dir()
    return (
        sorted(p.stem for p in directory.glob("*.py") if not p.name.startswith("_"))
        if directory.is_dir()
        else []
    )


def find(name_or_path: str = DEFAULT) -> Scenario:
    candidate = Path(name_or_path)
    if candidate.suffix == ".py" or os.sep in name_or_path:
        path = candidate
    else:
        path = scenarios_dir() / f"{name_or_path}.py"
    if not path.is_file():
        names = available()
        raise ScenarioError(
            f"There is no scenario {name_or_path!r} (looked for {path}).",
            (
                "pick one of: " + ", ".join(names)
                if names
                else "no scenarios were found in " + str(scenarios_dir())
            )
            + "; or pass a path to a scenario script.",
        )
    data = path.read_bytes()
    return Scenario(name=path.stem, path=path.resolve(), sha256=hashlib.sha256(data).hexdigest())
