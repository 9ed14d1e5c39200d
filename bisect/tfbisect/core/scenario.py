"""Scenarios: standalone scripts in `scenarios/`, found by name or path and identified by hash.

A plain repro script (`--script FILE`) is a scenario too: it runs under the package's
`data/script_harness.py`, which writes the result document for it.  Its identity is the
file's sha256 and, folded into its name, the harness options that change the verdict
(`--bad-if-raises`), so a stored result is never reused for another flag.  A script's PEP 723
block may list extra packages (`dependencies`): they are installed in every environment (the
runner's lock) and the harness reports their versions; the sha256 covers the block too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

from tfbisect.core.errors import ScenarioError, UsageError
from tfbisect.core.issuetext import script_metadata
from tfbisect.core.packagedata import data_file
from tfbisect.core.safe_names import safe_component

DEFAULT = "gradient_mismatch"
HARNESS = "script_harness.py"  # package data: the harness a plain script runs under
# A script's name says it is one (a scenario of the same bytes answers another question).
SCRIPT_SUFFIX = ".script"


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    sha256: str
    script: bool = False  # a plain script, run under the harness
    bad_if_raises: tuple[str, ...] = ()  # the harness's --bad-if-raises values (scripts only)
    dependencies: tuple[str, ...] = ()  # a script's PEP 723 `dependencies`, installed with TF

    def arguments(self, path: str, harness: str) -> list[str]:
        """What follows `python` to run it, given where its file (and the harness) are in the
        environment; the runner adds `--output` and any `--probe` after these."""
        if not self.script:
            return [path]
        flags = [part for value in self.bad_if_raises for part in ("--bad-if-raises", value)]
        # The harness reports each declared dependency's installed version (by project name).
        flags += [part for dep in self.dependencies for part in ("--dependency", Requirement(dep).name)]
        return [harness, "--script", path, *flags, "--name", self.name]

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


def find_script(path_text: str, bad_if_raises: tuple[str, ...] = ()) -> Scenario:
    """A plain script given by path, as a scenario run under the harness."""
    path = Path(path_text)
    if path.is_dir():
        raise ScenarioError(
            f"--script {path_text!r} is a directory ({path.resolve()}), not a script.",
            "pass the path of the Python file in it that asserts (or exits non-zero) when the bug is there.",
        )
    if not path.is_file():
        raise ScenarioError(
            f"There is no script {path_text!r} (looked for {path.resolve()}).",
            "pass the path of a Python file that asserts (or exits non-zero) when the bug is there.",
        )
    data = path.read_bytes()
    metadata = script_metadata(data.decode("utf-8", errors="replace"))
    return Scenario(
        name=script_name(path.stem, bad_if_raises),
        path=path.resolve(),
        sha256=hashlib.sha256(data).hexdigest(),
        script=True,
        bad_if_raises=tuple(bad_if_raises),
        dependencies=metadata.dependencies if metadata is not None else (),
    )


def script_name(stem: str, bad_if_raises: tuple[str, ...]) -> str:
    """`repro.script`, or `repro.script-<hash>` with --bad-if-raises: the flags change the
    verdict, so they are part of what a stored result is about."""
    if not bad_if_raises:
        return stem + SCRIPT_SUFFIX
    digest = hashlib.sha256(json.dumps(list(bad_if_raises)).encode("utf-8")).hexdigest()[:8]
    return f"{stem}{SCRIPT_SUFFIX}-{digest}"


def harness_path() -> Path:
    """The harness on this machine (a file of the installed package)."""
    return Path(str(data_file(HARNESS)))


def check_syntax(path: Path) -> None:
    """Refuse a script that this host's Python cannot even compile: it would fail the same way in
    every environment, one run (and one environment built) at a time.  Compiled, never run."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        with warnings.catch_warnings():  # SyntaxWarnings (an odd escape) are the script's own business
            warnings.simplefilter("ignore")
            compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        if newer_python_compiles(path) is not None:
            return  # syntax of a newer Python (3.12's f-strings, `type X = ...`): the runs will say
        line = f" line {exc.lineno}" if exc.lineno else ""
        raise UsageError(
            f"{path.name}{line}: {exc.msg} (the script was compiled, not run, with this host's Python "
            f"{here} before any environment was built: {path}).",
            f"fix the script{line} so that it compiles, then run the command again.",
        ) from None
    except ValueError as exc:  # a NUL byte (Python 3.11 says so with a ValueError)
        raise UsageError(
            f"{path.name}: {exc} (checked with this host's Python {here}: {path}).",
            "pass the script's Python source: a text file without NUL bytes.",
        ) from None
    except RecursionError:
        pass  # too deeply nested for this compiler: the runs will say


# Compiles argv[1] in the newest Python on PATH; never runs it (-I: no site, no user paths).
_COMPILE_ONLY = "import sys; compile(open(sys.argv[1], 'rb').read(), sys.argv[1], 'exec', dont_inherit=True)"


def newer_python_compiles(path: Path) -> str | None:
    """The newest Python on PATH newer than this host's ("3.13"), when it compiles the script: a
    script written for a newer Python than tfbisect's own must not be refused for its syntax."""
    for minor in range(30, sys.version_info.minor, -1):
        found = shutil.which(f"python3.{minor}")
        if found is None:
            continue
        try:
            done = subprocess.run(
                [found, "-I", "-c", _COMPILE_ONLY, str(path)], capture_output=True, timeout=60, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return f"3.{minor}" if done.returncode == 0 else None  # the newest one decides
    return None


def chosen(scenario: str, script: str | None, bad_if_raises: tuple[str, ...] = ()) -> Scenario:
    """The scenario a command's `--scenario`/`--script` options name; a script is compiled here
    first (`check_syntax`)."""
    if script is not None:
        found = find_script(script, bad_if_raises)
        check_syntax(found.path)
        return found
    if bad_if_raises:
        raise ScenarioError(
            "--bad-if-raises tells the harness of a plain script which exception is the bug, and no "
            "--script was given.",
            "add --script FILE, or have the scenario report the exception itself.",
        )
    return find(scenario)
