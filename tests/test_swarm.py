"""The Swarm backend for real: a 2-node local swarm (`.ci/swarm-up 2`) runs a sweep of four
cells whose results are those of local Docker runs of the same images, on both nodes, with the
node named in each record; a node killed mid-sweep loses nothing (its cells run again on the
other node); and no service, config or container is left behind.

The cells need no TensorFlow: header-only locks give bare Python images (built and pushed in
seconds), and the scenario's verdict follows the cell's Keras variant (TF_USE_LEGACY_KERAS), so
a result that came back from the wrong cell would show."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tfbisect.core.outcome import Outcome
from tfbisect.core.record import RunRecord
from tfbisect.core.store import ResultStore

from conftest import cli, empty_locks

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.docker]
VERSIONS = ("2.20.0", "2.21.0")
REGISTRY_PORT = 5291
SCENARIO = '''"""A swarm test's cell: reproduced in the tf-keras variant, not in the default one."""
import hashlib, json, os, socket, sys, time

SLEEP = {sleep}
out = sys.argv[sys.argv.index("--output") + 1]
legacy = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
print("probe variant", "legacy" if legacy else "default", "on", socket.gethostname(), flush=True)
time.sleep(SLEEP)
outcome = "reproduced" if legacy else "not_reproduced"
document = {{
    "schema_version": 1,
    "scenario": {{"name": os.path.basename(__file__)[:-3], "sha256": hashlib.sha256(open(__file__, "rb").read()).hexdigest()}},
    "environment": {{"python": sys.version.split()[0]}},
    "probes": [{{"name": "variant", "kind": "fault", "outcome": "mismatch" if legacy else "match",
                "summary": "legacy" if legacy else "default", "metrics": {{}}, "duration_s": 0.0}}],
    "verdict": {{"outcome": outcome, "summary": outcome, "disagreements": []}},
    "timings": {{}},
}}
open(out, "w").write(json.dumps(document))
sys.exit(1 if legacy else 0)
'''


def docker(host: str, *args: str) -> str:
    return subprocess.run(["docker", "-H", host, *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    state = tmp_path_factory.mktemp("swarm") / "s"
    up = subprocess.run(
        [
            str(ROOT / ".ci" / "swarm-up"),
            "2",
            *("--state", str(state), "--subnet", "10.231.91"),
            "--registry-port",
            str(REGISTRY_PORT),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        found = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
        yield found
    finally:
        down = subprocess.run(
            [str(ROOT / ".ci" / "swarm-down"), "--state", str(state)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert down.returncode == 0, down.stderr[-3000:]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Locks, scenarios, reports and caches of the module's own; afterwards the images it built
    and their registry tags are removed from the main engine, and only those: what was there
    before stays.  The Debian bases it built stay until the session ends (conftest's
    `engine_left_as_found`), and their registry tags go here with the others."""
    root = tmp_path_factory.mktemp("swarmrun")
    before = set(local_images())
    yield make_workspace(root)
    made: set[str] = set()
    for log in root.rglob("*.build.log"):
        made |= set(re.findall(r"^Successfully tagged (\S+)$", log.read_text(errors="replace"), re.M))
    made -= before
    made |= {ref for ref in local_images() if ref.startswith(f"127.0.0.1:{REGISTRY_PORT}/")}  # pushed here
    if made:
        rm = ["docker", "-H", "unix:///var/run/docker.sock", "image", "rm", "--force", *sorted(made)]
        subprocess.run(rm, capture_output=True, check=False)
    shutil.rmtree(root / "cache", ignore_errors=True)


def local_images() -> list[str]:
    """The main engine's tagged images (DOCKER_HOST may name a swarm manager here)."""
    listing = [
        "docker",
        "-H",
        "unix:///var/run/docker.sock",
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]
    return subprocess.run(listing, capture_output=True, text=True, check=False).stdout.split()


def make_workspace(root: Path) -> Path:
    locks = empty_locks(root / "locks", VERSIONS)
    for version in VERSIONS:  # the tf-keras variant's lock (2.16+), empty as well
        text = (locks / f"tf{version}-py3.11-cuda.txt").read_text().replace("keras: default", "keras: legacy")
        (locks / f"tf{version}-py3.11-cuda-tfkeras.txt").write_text(text)
    # A cell of 4 s keeps a node busy while the other cell of its pair starts: the scheduler
    # spreads them; a cell of 0 s may end before the next is placed, on either node.
    for name, sleep in (("swarm_probe", 4), ("swarm_slow", 25)):
        (root / f"{name}.py").write_text(SCENARIO.format(sleep=sleep))
    return root


def environment(workspace: Path, swarm: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_HOST", "TFBISECT_REGISTRY"))}
    env["TFBISECT_LOCKS"] = str(workspace / "locks")
    if swarm is not None:
        env.update({k: swarm[k] for k in ("DOCKER_HOST", "TFBISECT_REGISTRY_PUSH", "TFBISECT_REGISTRY_PULL")})
    return env


def sweep(
    workspace: Path, reports: str, scenario: str, backend: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return cli(
        workspace / reports,
        "sweep",
        *("--tf", ",".join(VERSIONS), "--keras", "default,legacy", "--python", "3.11"),
        *("--backend", backend, "--scenario", str(workspace / f"{scenario}.py")),
        cache=workspace / "cache",
        env=env,
        timeout=900,
    )


def records(workspace: Path, reports: str, scenario: str) -> dict[str, RunRecord]:
    store = ResultStore(workspace / reports / "results")
    return {r.spec.key.rsplit("-", 1)[0]: r for _, r in store.records(scenario)}


def slow_sweep(workspace: Path, reports: str, swarm: dict[str, str]) -> subprocess.Popen[str]:
    """The four cells of the slow scenario (25 s each) on the swarm, in the background."""
    command = [sys.executable, "-m", "tfbisect", "--reports", str(workspace / reports)]
    command += ["--cache", str(workspace / "cache"), "sweep", "--tf", ",".join(VERSIONS)]
    command += ["--keras", "default,legacy", "--python", "3.11", "--backend", "swarm"]
    command += ["--scenario", str(workspace / "swarm_slow.py")]
    env = environment(workspace, swarm)
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def nothing_left(swarm: dict[str, str], nodes: tuple[int, ...] = (1, 2)) -> None:
    manager = swarm["DOCKER_HOST"]
    assert docker(manager, "service", "ls", "--quiet").strip() == "", "every service is removed"
    assert docker(manager, "config", "ls", "--quiet").strip() == "", "every config is removed"
    state = Path(swarm["TFBISECT_SWARM_STATE"])
    for node in nodes:
        # Removing a service removes its containers on the node a little later.
        deadline = time.monotonic() + 30
        while docker(f"unix://{state}/node{node}.sock", "ps", "--all", "--quiet").strip():
            assert time.monotonic() < deadline, f"containers left on node{node}"
            time.sleep(1)


def test_a_sweep_on_the_swarm_uses_both_nodes_and_agrees_with_local_docker(
    swarm: dict[str, str], workspace: Path
) -> None:
    done = sweep(workspace, "swarm", "swarm_probe", "swarm", environment(workspace, swarm))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the swarm has 2 ready node(s) for cpu cells: --jobs 2" in done.stderr
    on_swarm = records(workspace, "swarm", "swarm_probe")
    assert len(on_swarm) == 4
    for cell, record in on_swarm.items():
        legacy = cell.endswith("tfkeras") or record.spec.keras.value == "legacy"
        assert record.outcome is (Outcome.REPRODUCED if legacy else Outcome.NOT_REPRODUCED), cell
        assert record.spec.backend == "swarm" and record.extra["node"] in ("node1", "node2")
        assert str(record.extra["image_pulled_as"]).startswith(swarm["TFBISECT_REGISTRY_PULL"] + "/tfbisect:")
        assert f"probe variant {'legacy' if legacy else 'default'} on " in record.log_tail
    per_node = Counter(str(r.extra["node"]) for r in on_swarm.values())
    assert set(per_node) == {"node1", "node2"} and max(per_node.values()) - min(per_node.values()) <= 1
    nothing_left(swarm)

    local = sweep(workspace, "local", "swarm_probe", "docker", environment(workspace, None))
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    in_docker = records(workspace, "local", "swarm_probe")
    assert len(in_docker) == 4
    for cell, record in on_swarm.items():
        twin = next(
            r
            for r in in_docker.values()
            if r.spec.tf_version == record.spec.tf_version and r.spec.keras == record.spec.keras
        )
        assert twin.outcome is record.outcome and twin.extra["lock"] == record.extra["lock"], cell
        # Locally a CPU release runs from a site volume; the swarm's nodes pull its image.
        release = f"tf{record.spec.tf_version}-py{record.spec.python}-cpu-"
        assert str(twin.extra["site_volume"]).startswith(f"tfbisect-site-{release}"), cell
        assert str(record.extra["image"]).startswith(f"tfbisect:{release}"), cell
        assert record.document is not None and twin.document is not None
        assert (
            record.document["probes"] == twin.document["probes"]
            and record.document["verdict"] == twin.document["verdict"]
        )


def running_on(manager: str, node: str) -> str:
    """The current states of the tasks the swarm runs on `node`."""
    return docker(
        manager, "node", "ps", node, "--filter", "desired-state=running", "--format", "{{.CurrentState}}"
    )


def test_a_manager_or_registry_that_does_not_answer_stops_everything_first(
    swarm: dict[str, str], workspace: Path
) -> None:
    for broken, expected in (
        ({"DOCKER_HOST": "unix:///nonexistent/manager.sock"}, "The Docker engine is not running"),
        ({"DOCKER_HOST": "unix:///var/run/docker.sock"}, "is not a swarm manager (swarm state: inactive)"),
        ({"TFBISECT_REGISTRY_PUSH": "127.0.0.1:9"}, "The registry 127.0.0.1:9 does not answer"),
    ):
        env = {**environment(workspace, swarm), **broken}
        done = sweep(workspace, "broken", "swarm_probe", "swarm", env)
        assert done.returncode == 10, done.stdout[-2000:] + done.stderr[-2000:]
        assert expected in done.stderr
        assert not (workspace / "broken" / "results").exists(), "nothing ran, nothing was stored"


def test_sigterm_mid_sweep_removes_every_service_and_keeps_what_finished(
    swarm: dict[str, str], workspace: Path
) -> None:
    process = slow_sweep(workspace, "stopped", swarm)
    manager = swarm["DOCKER_HOST"]
    deadline = time.monotonic() + 300
    while "Running" not in running_on(manager, "node1") + running_on(manager, "node2"):
        assert process.poll() is None and time.monotonic() < deadline, "no cell ever started"
        time.sleep(1)
    # A running cell's service has the limits of a local run.
    service = docker(manager, "service", "ls", "--format", "{{.Name}}").split()[0]
    template = json.loads(docker(manager, "service", "inspect", service))[0]["Spec"]["TaskTemplate"]
    container = template["ContainerSpec"]
    assert container["ReadOnly"] is True and container["User"] == "10001:10001" and container["Init"] is True
    assert {m["Target"] for m in container["Mounts"]} == {"/tmp", "/home/tfbisect"}
    assert template["Resources"]["Limits"] == {"MemoryBytes": 8 * 1024**3, "Pids": 2048}
    assert template["RestartPolicy"]["Condition"] == "none" and not template.get("Networks")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, out[-2000:] + err[-2000:]
    assert "stopped by SIGTERM" in err and "Resume with" in err
    nothing_left(swarm)


def test_a_node_that_goes_away_mid_sweep_loses_nothing(swarm: dict[str, str], workspace: Path) -> None:
    """node2's engine is killed while it runs a cell: that cell runs once more on node1, the
    sweep finishes with all four results, and the swarm is left clean."""
    process = slow_sweep(workspace, "fault", swarm)
    manager = swarm["DOCKER_HOST"]
    state = Path(swarm["TFBISECT_SWARM_STATE"])
    deadline = time.monotonic() + 300
    while "Running" not in running_on(manager, "node2"):
        assert process.poll() is None and time.monotonic() < deadline, "no cell ever ran on node2"
        time.sleep(1)
    time.sleep(3)  # the cell is inside its scenario
    os.kill(int((state / "node2" / "dockerd.pid").read_text()), signal.SIGKILL)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out[-3000:] + err[-3000:]
    assert "lost the run (" in err and "it ran again on node1" in err
    found = records(workspace, "fault", "swarm_slow")
    assert len(found) == 4, "nothing lost"
    moved = [r for r in found.values() if r.extra.get("attempts")]
    assert moved, "a cell of node2 was run again"
    for record in found.values():
        assert record.outcome in (Outcome.REPRODUCED, Outcome.NOT_REPRODUCED)
    for record in moved:
        attempts = record.extra["attempts"]
        assert (
            isinstance(attempts, list) and attempts[0]["node"] == "node2" and record.extra["node"] == "node1"
        )
    nothing_left(swarm, nodes=(1,))
