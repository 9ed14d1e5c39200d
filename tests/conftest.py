from __future__ import annotations

import copy
import http.server
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from tfbisect.core.local_http import serve
from tfbisect.core.outcome import Outcome
from tfbisect.core.record import RunRecord
from tfbisect.core.spec import EnvSpec

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]


def recorded(name: str) -> RunRecord:
    """A record stored by a real run (TF 2.2.3 on py3.8, TF 2.21.0 on py3.11)."""
    return RunRecord.from_dict(json.loads((DATA / f"record-{name}.json").read_text()))


def probe_record(
    spec: EnvSpec, scenario: str, probe: str, kind: str, outcome: str, error: tuple[str, str] | None = None
) -> RunRecord:
    """A run's record whose document holds one probe with this outcome (and error), for the
    proof's and transplant's pure logic."""
    entry: dict[str, object] = {"name": probe, "kind": kind, "outcome": outcome}
    if error is not None:
        entry["error"] = {"type": error[0], "message": error[1]}
    return RunRecord(
        spec=spec,
        scenario=scenario,
        scenario_sha256="0" * 64,
        outcome=Outcome.REPRODUCED,
        exit_code=0,
        document={"probes": [entry]},
        failure=None,
        log_tail="",
        command="",
        started_at="",
        duration_s=1.0,
    )


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


def all_outcomes() -> list[RunRecord]:
    """Real records (TF 2.2.3, 2.21.0) plus one of every other outcome, derived from them."""
    import dataclasses

    from tfbisect.core.outcome import Outcome
    from tfbisect.core.record import Failure
    from tfbisect.core.spec import EnvSpec

    real = recorded("tf2.2.3")
    new = recorded("tf2.21.0")
    not_reproduced = dataclasses.replace(
        recorded("tf2.2.3"),
        spec=EnvSpec("2.1.4", "3.7"),
        outcome=Outcome.NOT_REPRODUCED,
        extra={**real.extra, "reproduce": "tfbisect run --tf 2.1.4 --python 3.7 --backend venv"},
    )
    skip = dataclasses.replace(
        real,
        spec=EnvSpec("2.0.4", "3.7"),
        outcome=Outcome.SKIP,
        document=None,
        failure=Failure("EnvironmentBuildError", "Installing TF 2.0.4 on Python 3.7 failed"),
        extra={},
        infrastructure=True,
    )
    error = dataclasses.replace(
        real,
        spec=EnvSpec("2.3.4", "3.8"),
        outcome=Outcome.ERROR,
        document=None,
        failure=Failure("ValueError", "<script>alert('x')</script> | broke"),
        log_tail="Traceback (most recent call last):\nValueError: <script>alert('x')</script> | broke",
        extra={**real.extra, "reproduce": "tfbisect run --tf 2.3.4 --python 3.8 --backend venv"},
    )
    timeout = dataclasses.replace(
        real,
        spec=EnvSpec("2.4.4", "3.8"),
        outcome=Outcome.TIMEOUT,
        document=None,
        failure=Failure("Timeout", "the scenario did not finish in time and was killed"),
        extra={**real.extra, "reproduce": "tfbisect run --tf 2.4.4 --python 3.8 --backend venv"},
    )
    return [skip, not_reproduced, real, error, timeout, new]


def cli(
    reports: Path,
    *args: str,
    cache: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 3600,
) -> subprocess.CompletedProcess[str]:
    """`python -m tfbisect` for real, with reports (and by default a venv/wheel cache) of its own."""
    command = [
        sys.executable,
        "-m",
        "tfbisect",
        "--reports",
        str(reports),
        "--cache",
        str(cache or reports / "cache"),
    ]
    return subprocess.run(
        [*command, *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=timeout, env=env
    )


def loopback(handler: type[http.server.BaseHTTPRequestHandler]) -> AbstractContextManager[str]:
    """A real HTTP server on 127.0.0.1 for the duration; yields its base URL."""
    return serve(handler)


def empty_locks(folder: Path, versions: tuple[str, ...] = ("2.20.0", "2.21.0"), python: str = "3.11") -> Path:
    """Header-only locks: the venv (or image) of such a lock has no packages, so a scenario that
    needs no TensorFlow runs through the whole real path in seconds. Point TFBISECT_LOCKS here."""
    folder.mkdir(parents=True, exist_ok=True)
    for version in versions:
        for flavour in ("cpu", "cuda"):  # the Docker backend locks TF 2.14+ as `cuda` for both images
            (folder / f"tf{version}-py{python}-{flavour}.txt").write_text(
                "# tfbisect lock (a test's: installs nothing)\n"
                f"# tensorflow: {version}\n# python: {python}\n# flavour: {flavour}\n# keras: default\n"
                "# requirements: none\n# exclude-newer: 2026-01-01T00:00:00Z\n"
            )
    return folder


def _engine_listing() -> tuple[set[str], set[str], set[str]] | None:
    """The site volumes, the untagged images and the Debian bases (`tfbisect-base:SUITE`) of the
    machine's Docker engine; None without one."""
    if shutil.which("docker") is None:
        return None
    found = []
    for args in (
        ["volume", "ls", "--quiet", "--filter", "label=tfbisect.site"],
        ["images", "--quiet", "--no-trunc", "--filter", "dangling=true"],
        ["images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "reference=tfbisect-base:*"],
    ):
        done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            return None
        found.append(set(done.stdout.split()))
    return found[0], found[1], found[2]


@pytest.fixture(scope="session", autouse=True)
def engine_left_as_found() -> Iterator[None]:
    """What the Docker tests leave in the engine goes at the session's end: the Debian bases they
    built (kept until then, so that each module after the first finds them: a base takes 20-75 s),
    the site volumes their runs filled, and the untagged images left where a base that a runtime
    image was built on went first (the base's tag goes, its image stays until its child is gone).
    What was there before the session stays."""
    before = _engine_listing()
    yield
    if before is None:
        return
    built = _engine_listing()
    bases = sorted(built[2] - before[2]) if built is not None else []
    if bases:
        subprocess.run(["docker", "image", "rm", "--force", *bases], capture_output=True, check=False)
    after = _engine_listing()  # after the bases: one that had a child left is untagged now
    if after is None:
        return
    volumes, dangling = sorted(after[0] - before[0]), sorted(after[1] - before[1])
    if volumes:
        subprocess.run(["docker", "volume", "rm", "--force", *volumes], capture_output=True, check=False)
    if dangling:
        subprocess.run(["docker", "image", "rm", *dangling], capture_output=True, check=False)
