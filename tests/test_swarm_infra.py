"""The local swarm of `.ci/swarm-up` and `.ci/swarm-down` for real: two Docker engines in network
namespaces joined into one swarm with a registry; an image pushed from the main engine runs as a
one-shot job on both nodes and its output comes back through the service logs; a second swarm-up
over a running swarm is refused, one that fails half-way leaves nothing; and after swarm-down no
namespace, link, rule, engine or file of the swarm is left, while the main engine and its images
are as they were.  Needs root (namespaces, iptables) and the main engine with a Debian base."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UP = ROOT / ".ci" / "swarm-up"
DOWN = ROOT / ".ci" / "swarm-down"
pytestmark = [pytest.mark.slow, pytest.mark.docker]

BASE = "tfbisect-base:bookworm"
# /24s of the swarms' own: unlikely to be in use on a test machine (swarm-up refuses one that is).
SUBNET = "10.231.97"
BROKEN_SUBNET = "10.231.98"
PRINTED = [
    "DOCKER_HOST",
    "TFBISECT_REGISTRY_PUSH",
    "TFBISECT_REGISTRY_PULL",
    "TFBISECT_SWARM_NODES",
    "TFBISECT_SWARM_STATE",
]
HELLO = "import socket; print('hello from', socket.gethostname())"


def run(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )


def ok(*args: str | Path, timeout: float = 120) -> str:
    done = run(*args, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))}: exit {done.returncode}\n{done.stderr}"
    return done.stdout


def free_port() -> int:
    """A TCP port nothing listens on (the registry listens on all addresses, IPv6 included)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.bind(("::", 0))
        return int(probe.getsockname()[1])


def image_id(ref: str) -> str | None:
    done = run("docker", "image", "inspect", "--format", "{{.Id}}", ref)
    return done.stdout.strip() if done.returncode == 0 else None


def read_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if re.match(r"^[A-Z_0-9]+=", line))


@dataclass
class Swarm:
    state: Path
    printed: dict[str, str]  # swarm-up's stdout
    saved: dict[str, str]  # its state.env
    up_seconds: float
    base_id: str  # the main engine's BASE before the swarm came up
    main_swarm_state: str  # the main engine's own swarm state then (inactive, as a rule)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return self.saved["SWARM_PREFIX"]

    def docker(self, *args: str, node: int = 1, timeout: float = 120) -> str:
        return ok("docker", "-H", f"unix://{self.state}/node{node}.sock", *args, timeout=timeout)


def leftovers(state: Path, prefix: str) -> list[str]:
    """Whatever of a swarm is still on this machine: namespaces, links, iptables rules, processes
    and mounts that name it, and its folders."""
    left = [f"namespace {n}" for n in ok("ip", "netns", "list").split() if n.startswith(prefix)]
    left += [
        f"link {line.split(':')[1].strip()}"
        for line in ok("ip", "-o", "link", "show").splitlines()
        if line.split(":")[1].strip().startswith(prefix)
    ]
    for tables in ("iptables", "ip6tables"):
        left += [f"{tables} {r}" for r in ok(tables, "-S").splitlines() if f"tfbisect-swarm:{prefix}" in r]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(str(state) in a or f"/run/{prefix}/" in a for a in argv):
            left.append(f"process {proc.name}: {' '.join(argv)[:200]}")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith((f"{state}/", f"/run/{prefix}/")):
            left.append(f"mount {point}")
    left += [f"folder {p}" for p in (state, Path(f"/run/{prefix}")) if p.exists()]
    return left


@pytest.fixture(scope="module")
def base_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Debian base the jobs run: the main engine's, or built here (envs/bases.py), kept for
    the session's other Docker modules and removed at its end (conftest's `engine_left_as_found`)
    when it was not there before."""
    if os.geteuid() != 0:
        pytest.fail("the local swarm needs root (namespaces, a bridge, iptables): run the tests as root")
    if run("docker", "info").returncode != 0:
        pytest.fail("no Docker engine answers: .ci/setup starts one (dockerd)")
    if image_id(BASE) is not None:
        yield BASE
        return
    from tfbisect.core.progress import Progress
    from tfbisect.envs.bases import BaseImages
    from tfbisect.envs.docker_engine import connect

    yield BaseImages(connect(Progress(quiet=True)), tmp_path_factory.mktemp("bases")).get("3.11").ref


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[Swarm]:
    """`.ci/swarm-up 2` (node 1 labelled a GPU node) with a state folder in tmp; `.ci/swarm-down`
    afterwards whatever happened (the last test runs it too: a second run must be harmless)."""
    base_id = image_id(base_image)
    assert base_id is not None
    main_swarm_state = ok("docker", "info", "--format", "{{.Swarm.LocalNodeState}}").strip()
    state = tmp_path_factory.mktemp("swarm") / "state"
    port = free_port()
    try:
        start = time.monotonic()
        up = run(
            UP, "2", "--state", state, "--subnet", SUBNET, "--registry-port", str(port), "--gpu-nodes", "1"
        )
        up_seconds = time.monotonic() - start
        print(f"swarm-up 2: {up_seconds:.1f}s")
        assert up.returncode == 0, f"swarm-up failed (exit {up.returncode}):\n{up.stderr}"
        saved = read_env((state / "state.env").read_text())
        yield Swarm(state, read_env(up.stdout), saved, up_seconds, base_id, main_swarm_state)
    finally:
        down = run(DOWN, "--state", state)
        assert down.returncode == 0, f"swarm-down failed (exit {down.returncode}):\n{down.stderr}"


def test_up_prints_the_interface_and_makes_two_labelled_ready_nodes(swarm: Swarm) -> None:
    lines = [line for line in (swarm.state / "env").read_text().splitlines() if line]
    assert [line.split("=", 1)[0] for line in lines] == PRINTED
    assert dict(line.split("=", 1) for line in lines) == swarm.printed
    port = swarm.saved["SWARM_REGISTRY_PORT"]
    assert swarm.printed == {
        "DOCKER_HOST": f"unix://{swarm.state}/node1.sock",
        "TFBISECT_REGISTRY_PUSH": f"127.0.0.1:{port}",
        "TFBISECT_REGISTRY_PULL": f"{SUBNET}.1:{port}",
        "TFBISECT_SWARM_NODES": "2",
        "TFBISECT_SWARM_STATE": str(swarm.state),
    }
    assert swarm.up_seconds < 90, f"swarm-up took {swarm.up_seconds:.0f}s (a few seconds when idle)"

    listed = swarm.docker(
        "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}}"
    )
    assert sorted(listed.splitlines()) == ["node1 Ready Active Leader", "node2 Ready Active "]
    ids = swarm.docker("node", "ls", "--quiet").split()
    nodes = json.loads(swarm.docker("node", "inspect", *ids))
    found = {n["Description"]["Hostname"]: (n["Spec"]["Labels"], n["Status"]["Addr"]) for n in nodes}
    assert found == {
        "node1": ({"tfbisect.node": "node1", "tfbisect.gpu": "true"}, f"{SUBNET}.11"),
        "node2": ({"tfbisect.node": "node2"}, f"{SUBNET}.12"),
    }
    # The worker is an engine of its own, in the swarm as a worker.
    assert swarm.docker("info", "--format", "{{.Swarm.ControlAvailable}}", node=2).strip() == "false"


def task_containers(swarm: Swarm, name: str) -> list[str]:
    """The containers of a service's tasks on the two nodes, as `nodeK:ID`."""
    label = f"label=com.docker.swarm.service.name={name}"
    return [
        f"node{n}:{c}"
        for n in (1, 2)
        for c in swarm.docker("ps", "--all", "--quiet", "--filter", label, node=n).split()
    ]


def hello(swarm: Swarm, image: str, name: str, mode: str) -> tuple[list[str], list[tuple[str, str]]]:
    """One round trip of a one-shot service of 2 tasks, one per node (restart condition none): run
    until both tasks complete, read the logs, remove the service.  The nodes that ran it (from
    `service ps`), and (node, text) per log line (the node from the `name@node` prefix)."""
    swarm.docker(
        "service", "create", "--detach", "--name", name, "--mode", mode, "--replicas", "2",
        *(["--max-concurrent", "2"] if mode == "replicated-job" else []),
        "--restart-condition", "none", "--replicas-max-per-node", "1", image, "python3", "-c", HELLO,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            tasks = swarm.docker(
                "service", "ps", "--no-trunc", "--format", "{{.Node}}|{{.CurrentState}}|{{.Error}}", name
            )
            rows = [line.split("|") for line in tasks.splitlines()]
            broken = [r for r in rows if r[1].startswith(("Failed", "Rejected"))]
            assert not broken, f"tasks of {name} failed: {broken}"
            if len(rows) == 2 and all(r[1].startswith("Complete") for r in rows):
                break
            assert time.monotonic() < deadline, f"{name} did not complete within 180s: {rows}"
            time.sleep(0.2)
        logged: list[tuple[str, str]] = []
        while len(logged) < 2 and time.monotonic() < deadline:
            out = swarm.docker("service", "logs", "--no-trunc", "--no-task-ids", name)
            logged = [(m[1], m[2]) for m in re.finditer(r"^\S+@(\S+)\s+\| (.*)$", out, re.M)]
            time.sleep(0 if len(logged) >= 2 else 0.2)
        return sorted(r[0] for r in rows), sorted(logged)
    finally:
        swarm.docker("service", "rm", name)


def check_hello(nodes: list[str], logged: list[tuple[str, str]]) -> None:
    assert nodes == ["node1", "node2"]
    assert [node for node, _ in logged] == ["node1", "node2"], logged
    texts = [text for _, text in logged]
    assert all(re.fullmatch(r"hello from \w+", text) for text in texts), logged
    assert len(set(texts)) == 2, logged  # two containers, one on each node


def test_an_image_pushed_from_the_main_engine_runs_as_a_job_on_both_nodes(
    swarm: Swarm, base_image: str
) -> None:
    name = base_image.split("/")[-1]
    pushed = f"{swarm.printed['TFBISECT_REGISTRY_PUSH']}/{name}"
    pulled = f"{swarm.printed['TFBISECT_REGISTRY_PULL']}/{name}"
    ok("docker", "tag", base_image, pushed)
    try:
        start = time.monotonic()
        ok("docker", "push", "--quiet", pushed, timeout=300)
        swarm.timings["push"] = time.monotonic() - start
    finally:
        ok("docker", "image", "rm", pushed)  # the tag only: the image stays
    assert image_id(base_image) == swarm.base_id

    for number, round_trip in enumerate(("first job (pulls the image)", "second job (image on the nodes)")):
        job = f"tfbisect-infra-job-{number}"
        start = time.monotonic()
        check_hello(*hello(swarm, pulled, job, "replicated-job"))
        swarm.timings[round_trip] = time.monotonic() - start
        assert swarm.docker("service", "ls", "--quiet", "--filter", f"name={job}").strip() == ""
        # Docker 20.10 keeps a removed job's tasks and their (exited) containers on the nodes
        # until they leave the swarm (moby/moby#42789, #44312); here they are removed by hand.
        for container in task_containers(swarm, job):
            node, cid = container.split(":")
            swarm.docker("rm", "--force", cid, node=int(node.removeprefix("node")))
        assert task_containers(swarm, job) == []
    print("; ".join(f"{what}: {seconds:.1f}s" for what, seconds in swarm.timings.items()))
    assert swarm.timings["second job (image on the nodes)"] < 60, swarm.timings


def test_a_removed_one_shot_replicated_service_leaves_no_container(swarm: Swarm, base_image: str) -> None:
    """Unlike a job, a replicated service with restart condition none runs its tasks once and its
    containers go with `service rm`: a one-shot cell that leaves nothing on the nodes."""
    name = base_image.split("/")[-1]
    pushed = f"{swarm.printed['TFBISECT_REGISTRY_PUSH']}/{name}"
    ok("docker", "tag", base_image, pushed)
    try:
        ok("docker", "push", "--quiet", pushed, timeout=300)
    finally:
        ok("docker", "image", "rm", pushed)
    service = "tfbisect-infra-once"
    start = time.monotonic()
    check_hello(*hello(swarm, f"{swarm.printed['TFBISECT_REGISTRY_PULL']}/{name}", service, "replicated"))
    seconds = time.monotonic() - start
    print(f"one-shot replicated service: {seconds:.1f}s")
    deadline = time.monotonic() + 60
    while left := task_containers(swarm, service):
        assert time.monotonic() < deadline, f"containers of the removed service are left: {left}"
        time.sleep(0.5)


def test_up_refuses_while_a_swarm_is_up(swarm: Swarm) -> None:
    again = run(UP, "2", "--state", swarm.state, "--subnet", "10.231.99")
    assert again.returncode != 0
    assert "still up" in again.stderr and f".ci/swarm-down --state {swarm.state}" in again.stderr, (
        again.stderr
    )
    assert again.stdout == ""
    # The running swarm is untouched.
    assert len(swarm.docker("node", "ls", "--quiet").split()) == 2
    assert (swarm.state / "state.env").exists()


def test_up_failing_half_way_leaves_nothing(tmp_path: Path, swarm: Swarm) -> None:
    """A registry that dies at once: swarm-up has made the bridge, namespaces and rules by then."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker-registry").write_text("#!/bin/sh\necho 'a registry that fails' >&2\nexit 3\n")
    (fake / "docker-registry").chmod(0o755)
    state = tmp_path / "state"
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    up = subprocess.run(
        [str(UP), "1", "--state", str(state), "--subnet", BROKEN_SUBNET, "--registry-port", str(free_port())],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert up.returncode != 0
    assert "the registry did not answer" in up.stderr and "removing what it had made" in up.stderr, up.stderr
    assert "removed in" in up.stderr, up.stderr
    prefix = "tfbs" + hashlib.sha1(str(state.resolve()).encode()).hexdigest()[:6]  # as swarm-up names it
    assert leftovers(state, prefix) == []
    # The other swarm is untouched.
    assert len(swarm.docker("node", "ls", "--quiet").split()) == 2


def test_down_removes_everything_and_leaves_the_main_engine_alone(swarm: Swarm, base_image: str) -> None:
    assert leftovers(swarm.state, swarm.prefix) != []  # the check sees a swarm that is up
    start = time.monotonic()
    down = run(DOWN, "--state", swarm.state, timeout=300)
    seconds = time.monotonic() - start
    print(f"swarm-down: {seconds:.1f}s")
    assert down.returncode == 0, down.stderr
    assert "removed in" in down.stderr
    assert leftovers(swarm.state, swarm.prefix) == []
    assert not [
        p
        for p in Path("/proc").glob("[0-9]*/cmdline")
        if b"dockerd" in _read(p) and str(swarm.state).encode() in _read(p)
    ]
    assert seconds < 90, f"swarm-down took {seconds:.0f}s"

    # Twice is harmless, and says there is nothing to remove.
    again = run(DOWN, "--state", swarm.state)
    assert again.returncode == 0 and "nothing is up" in again.stderr, again.stderr

    # The main engine answers as before, with its image, and is still no swarm node.
    assert ok("docker", "info", "--format", "{{.Swarm.LocalNodeState}}").strip() == swarm.main_swarm_state
    assert image_id(base_image) == swarm.base_id


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
