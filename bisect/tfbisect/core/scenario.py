"""Scenarios: standalone scripts in `scenarios/`, found by name or path and identified by hash."""

from __future__ import annotations

import hashlib
import os
import site
import sys
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


# The checkout this package runs from, when it does (an installed package has none).
_CHECKOUT = Path(__file__).resolve().parents[3]


def shipped_dirs() -> list[Path]:
    """Where the built-in scenarios are installed with the package (pyproject's data-files:
    `<prefix>/share/tfbisect/scenarios`, in the environment or the user's base)."""
    prefixes = dict.fromkeys(p for p in (sys.prefix, site.getuserbase()) if p)
    return [Path(prefix) / "share" / "tfbisect" / "scenarios" for prefix in prefixes]


def search_path() -> list[Path]:
    """Where a scenario given by name is looked for, in order: `$TFBISECT_SCENARIOS` alone when
    set; else `./scenarios`, the checkout's `scenarios/` (when this package runs from one), then
    the scenarios shipped with the package."""
    override = os.environ.get("TFBISECT_SCENARIOS")
    if override:
        return [Path(override)]
    checkout = [_CHECKOUT / "scenarios"] if (_CHECKOUT / "pyproject.toml").is_file() else []
    return [Path.cwd() / "scenarios", *checkout, *shipped_dirs()]


def scenarios_dir() -> Path:
    """The first folder of the search path that exists (`./scenarios` when there is one)."""
    folders = search_path()
    return next((folder for folder in folders if folder.is_dir()), folders[0])


def available(directory: Path | None = None) -> list[str]:
    folders = [directory] if directory is not None else search_path()
    return sorted(
        {
            p.stem
            for folder in folders
            if folder.is_dir()
            for p in folder.glob("*.py")
            if not p.name.startswith("_")
        }
    )


def find(name_or_path: str = DEFAULT) -> Scenario:
    candidate = Path(name_or_path)
    if candidate.suffix == ".py" or os.sep in name_or_path:
        path = candidate
    else:
        found = [folder / f"{name_or_path}.py" for folder in search_path()]
        path = next((p for p in found if p.is_file()), scenarios_dir() / f"{name_or_path}.py")
    if not path.is_file():
        names = available()
        raise ScenarioError(
            f"There is no scenario {name_or_path!r} (looked for {path}).",
            (
                "pick one of: " + ", ".join(names)
                if names
                else "no scenarios were found in " + ", ".join(str(p) for p in search_path())
            )
            + "; or pass a path to a scenario script.",
        )
    data = path.read_bytes()
    return Scenario(name=path.stem, path=path.resolve(), sha256=hashlib.sha256(data).hexdigest())
