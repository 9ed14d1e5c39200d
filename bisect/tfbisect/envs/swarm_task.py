"""One scenario run on a Docker Swarm, as a process the runner supervises like `docker run`.

`python -m tfbisect.envs.swarm_task TASK.json` (written by backend_swarm.py) creates the
scenario as a swarm config, runs it as a one-shot service (one replica, restart condition none)
with the limits of a local run, waits for its task, prints the task's output, takes the
result document out of it, and exits with the task's exit status.  There is no shared file
system: the scenario goes in as a config, and the result comes back framed in the task's own
output (base64 between two marker lines, the last frame wins), under the size limits of a
local run.  The service and the config are removed on every path: done, failed, or stopped by
a signal here; when the runner kills this process (its timeout, Ctrl-C), the backend's launch
removes them.  `progress.json` keeps the task states seen so far, so that a timeout can tell a
task that never started (no node took it, the image was still being pulled) from a scenario
that ran too long.

A task that a node lost (the node went away) runs once more on another node; a second loss
is not the scenario's doing, and the run ends as unstarted (a skip that says why).  What
happened is written to `ended.json` next to the result, for `SwarmBackend.ended`.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import json
import signal
import sys
import time
from collections.abc import Collection
from pathlib import Path
from types import FrameType
from typing import Any

import docker
import requests
from docker.types import (
    ConfigReference,
    ContainerSpec,
    Mount,
    Placement,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)

from tfbisect.core import jsonread
from tfbisect.core.fsio import write_text_atomic
from tfbisect.core.limits import RESULT_MAX_BYTES

GPU_LABEL = "tfbisect.gpu"  # a node that may run CUDA cells is labelled GPU_LABEL=true
NODE_LABEL = "tfbisect.node"  # the name a record gives the node (else its hostname)
BEGIN = "==tfbisect-result-v1=="
END = "==tfbisect-result-end=="
LOG_MAX_BYTES = 64 * 1024 * 1024  # what is read of a task's output at most
POLL_SECONDS = 0.5
# A task no node takes for this long (no GPU node, no room) is not run: a skip, not a timeout.
PENDING_LIMIT_SECONDS = 120.0
UNSTARTED = 125
# Task states after which a task never runs again (docker/swarmkit api/types.proto).
FINAL = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}
LOST = {"orphaned", "rejected", "shutdown", "remove"}  # the node or the scheduler ended it, not the scenario
NETWORKED = "==tfbisect-networked=="
# Runs in the container, with the image's Python (3.6+): refuses to run the scenario when the
# task has a network (Swarm cannot leave a service without one: moby/moby#44403; nodes whose
# engines run with `--bridge none` give loopback only), then runs it and frames its result.
WRAPPER = f"""
import base64, os, subprocess, sys
def up(name):
    try:
        with open("/sys/class/net/%s/flags" % name) as flags:
            return int(flags.read(), 16) & 1
    except (OSError, ValueError):
        return True
with open("/proc/net/dev") as dev:
    names = [line.split(":")[0].strip() for line in dev.read().splitlines()[2:]]
attached = [name for name in names if name and name != "lo" and up(name)]
if attached:
    print("{NETWORKED} " + " ".join(attached))
    sys.exit(125)
os.makedirs("/tmp/tfbisect-out", exist_ok=True)
path = "/tmp/tfbisect-out/result.json"
code = subprocess.call([sys.executable] + sys.argv[1:] + ["--output", path])
sys.stdout.flush()
if os.path.isfile(path):
    with open(path, "rb") as f:
        data = f.read({RESULT_MAX_BYTES} + 1)
    text = base64.b64encode(data).decode()
    out = ["", "{BEGIN}"] + [text[i:i + 76] for i in range(0, len(text), 76)] + ["{END}", ""]
    sys.stdout.write("\\n".join(out))
    sys.stdout.flush()
sys.exit(code if code >= 0 else 128 - code)
"""


class Stopped(Exception):
    """SIGTERM or SIGINT: the runner's timeout or Ctrl-C."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    task = jsonread.read(Path(argv[0]), max_bytes=None)
    out = Path(task["outdir"])
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    client: Any = None
    config_id = None
    harness_id = None  # a plain script's harness goes in as a second config
    ended: dict[str, Any] = {"attempts": []}
    try:
        client = docker.APIClient(base_url=task["manager"], version="auto", timeout=60)
        config_id = client.create_config(
            task["config"], Path(task["scenario"]).read_bytes(), labels={"tfbisect": "scenario"}
        )["ID"]
        if task.get("harness"):
            harness_id = client.create_config(
                task["config"] + "-harness",
                Path(task["harness"]).read_bytes(),
                labels={"tfbisect": "scenario"},
            )["ID"]
            task = {**task, "harness_config_id": harness_id}
        return run_task(client, task, config_id, ended, out)
    except Stopped as stop:
        ended["stopped"] = str(stop)
        return 143 if str(stop) == "SIGTERM" else 130
    except Exception as exc:
        ended["unstarted"] = f"the swarm run failed: {type(exc).__name__}: {str(exc)[:500]}"
        print(f"tfbisect: {ended['unstarted']}", file=sys.stderr)
        return UNSTARTED
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if client is not None:
            for service in {task["service"], *(attempt["service"] for attempt in ended["attempts"])}:
                remove(client.remove_service, service)
            for made in (config_id, harness_id):
                if made is not None:
                    remove(client.remove_config, made)
        for attempt in ended["attempts"]:
            attempt.pop("document", None)
        write_json(out / "ended.json", ended)


def run_task(client: Any, task: dict[str, Any], config_id: str, ended: dict[str, Any], out: Path) -> int:
    """Run the task, once more on another node if the first one lost it; its exit status."""
    avoid: list[str] = []
    for attempt in range(2):
        name = task["service"] + (f"-retry{attempt}" if attempt else "")
        result = run_once(client, task, name, config_id, avoid, out)
        ended["attempts"].append(result)
        if result["state"] not in LOST or not result.get("node_id"):
            break
        # The lost task's service goes first: a node that comes back must not run it as well.
        remove(client.remove_service, name)
        avoid.append(result["node_id"])
        if eligible_nodes(client, task, avoid) == 0:
            break
        print(
            f"tfbisect: node {result.get('node')} lost the task ({result['state']}); running it once more elsewhere"
        )
    last = ended["attempts"][-1]
    document = last.pop("document", None)
    ended.update(last)
    if last.get("networked"):
        ended["unstarted"] = (
            f"the swarm gave the task a network ({last['networked']}) on node {last.get('node')}, and "
            "scenarios run without one: run the nodes' engines with `--bridge none` (daemon.json "
            '"bridge": "none"), as .ci/swarm-up does'
        )
        return UNSTARTED
    code = last.get("exit_code")
    scenario_ended = last["state"] == "complete" or (
        last["state"] == "failed" and "non-zero exit" in str(last.get("error")) and isinstance(code, int)
    )
    if not scenario_ended or not isinstance(code, int) or not 0 <= code <= 255:
        ended["unstarted"] = (
            f"the swarm task ended {last['state']}"
            + (f" on node {last.get('node')}" if last.get("node") else "")
            + (f": {last.get('error')}" if last.get("error") else "")
            + (f" (after {len(ended['attempts'])} attempts)" if len(ended["attempts"]) > 1 else "")
        )
        return UNSTARTED
    if document is not None:
        (out / "out").mkdir(exist_ok=True)
        (out / "out" / "result.json").write_bytes(document)
    return code


def eligible_nodes(client: Any, task: dict[str, Any], avoid: list[str]) -> int:
    """Ready nodes the task may go to, the lost ones aside."""
    gpu_only = any(GPU_LABEL in c for c in task["constraints"])
    return count_eligible(client.nodes(), gpu_only=gpu_only, avoid=avoid)


def count_eligible(nodes: Any, *, gpu_only: bool, avoid: Collection[str] = ()) -> int:
    """Of the manager's node list (`docker node ls`, as the API gives it): the ready nodes that
    may take a cell, GPU nodes only for a CUDA one, the ones in `avoid` aside."""
    count = 0
    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, dict):
            continue
        labels = (node.get("Spec") or {}).get("Labels") or {}
        ready = (node.get("Status") or {}).get("State") == "ready"
        if ready and node.get("ID") not in avoid and (not gpu_only or labels.get(GPU_LABEL) == "true"):
            count += 1
    return count


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: the backend may read it while the task still runs (after a timeout).  This
    process runs on the driver's machine with the driver's Python (`sys.executable -m`), so it
    writes through fsio like the driver does."""
    write_text_atomic(path, json.dumps(data))


def remove(call: Any, what: str) -> None:
    # Already gone, or the manager is: the backend's own clean-up tries again.
    with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
        call(what)


def task_template(task: dict[str, Any], config_id: str, avoid: list[str]) -> Any:
    """The service's task: the scenario (and the harness) as configs, a read-only locked-down
    container, the cell's limits, never on a node in `avoid`."""
    scenario = f"/scenario/{Path(task['scenario']).name}"
    configs = [ConfigReference(config_id, task["config"], filename=scenario, uid="0", gid="0", mode=0o444)]
    if task.get("harness_config_id"):
        harness = task["harness_path"]
        configs.append(
            ConfigReference(
                task["harness_config_id"],
                task["config"] + "-harness",
                filename=harness,
                uid="0",
                gid="0",
                mode=0o444,
            )
        )
    spec = ContainerSpec(
        image=task["image"],
        command=["python", "-c", WRAPPER, *task.get("arguments", [scenario])],
        user=task["user"],
        env=task["env"],
        read_only=True,
        init=True,
        mounts=[
            Mount("/tmp", None, type="tmpfs"),
            Mount("/home/tfbisect", None, type="tmpfs"),
        ],
        configs=configs,
    )
    resources = Resources(mem_limit=task["memory_bytes"])
    resources["Limits"]["Pids"] = task["pids"]
    constraints = list(task["constraints"]) + [f"node.id!={node}" for node in avoid]
    return TaskTemplate(
        spec,
        resources=resources,
        restart_policy=RestartPolicy(condition="none"),
        placement=Placement(constraints=constraints),
    )


def run_once(
    client: Any, task: dict[str, Any], name: str, config_id: str, avoid: list[str], out: Path
) -> dict[str, Any]:
    """Create the one-shot service, wait for its task to end, read its output."""
    template = task_template(task, config_id, avoid)
    # A one-shot replicated service, not a `replicated-job`: Docker 20.10 keeps a removed job's
    # exited containers on the nodes (moby/moby#42789, #44312); a service's go with it.
    service = client.create_service(
        template, name=name, labels={"tfbisect": "run"}, mode=ServiceMode("replicated", replicas=1)
    )["ID"]
    state: str = "new"
    status: dict[str, Any] = {}
    tasks: list[dict[str, Any]] = []
    started = time.monotonic()
    reached: list[str] = []  # the states seen, for a timeout's verdict (see backend_swarm.ended)
    while True:
        tasks = [t for t in client.tasks(filters={"service": service}) if isinstance(t, dict)]
        if tasks:
            status = tasks[-1].get("Status") or {}
            state = str(status.get("State", "new"))
            if state not in reached:
                reached.append(state)
                write_json(out / "progress.json", {"service": name, "states": reached})
            if state in FINAL:
                break
            node_id = tasks[-1].get("NodeID")
            if node_id and not node_ready(client, node_id):
                state = "orphaned"  # its node is down: the manager would wait for it
                break
            if state == "pending" and time.monotonic() - started > PENDING_LIMIT_SECONDS:
                status = {"Err": str(status.get("Err") or "no node can take it"), **status}
                state = "rejected"  # nothing can run it: a skip that says why, not a timeout
                break
        time.sleep(POLL_SECONDS)
    node_id = tasks[-1].get("NodeID") if tasks else None
    result: dict[str, Any] = {
        "service": name,
        "state": state,
        "node_id": node_id,
        "node": node_name(client, node_id),
        "error": str(status.get("Err") or "")[:500],
        "exit_code": (status.get("ContainerStatus") or {}).get("ExitCode"),
        "states": reached,
    }
    if state not in LOST:
        text = logs(client, service)
        sys.stdout.write(strip_frame(text))
        sys.stdout.flush()
        result["document"] = last_frame(text)
        first = text.lstrip().split("\n", 1)[0]
        if result["exit_code"] == UNSTARTED and first.startswith(NETWORKED):
            # Only the wrapper's own first line, with its exit status: a scenario cannot fake it.
            result["networked"] = first[len(NETWORKED) :].strip()[:200] or "?"
    return result


def node_ready(client: Any, node_id: str) -> bool:
    try:
        node = client.inspect_node(node_id)
    except docker.errors.NotFound:
        return False
    return str((node.get("Status") or {}).get("State")) == "ready"


def node_name(client: Any, node_id: str | None) -> str | None:
    if not node_id:
        return None
    try:
        node = client.inspect_node(node_id)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return node_id[:12]
    labels = (node.get("Spec") or {}).get("Labels") or {}
    return str(labels.get(NODE_LABEL) or (node.get("Description") or {}).get("Hostname") or node_id[:12])


def logs(client: Any, service: str) -> str:
    """The task's stdout and stderr as one text: its first and last LOG_MAX_BYTES / 2 (the
    result frame comes last), with a line that says where the middle was cut."""
    half = LOG_MAX_BYTES // 2
    head = bytearray()
    tail: collections.deque[bytes] = collections.deque()
    tail_size = cut = 0
    for chunk in client.service_logs(service, stdout=True, stderr=True, follow=False):
        if not isinstance(chunk, bytes):
            continue
        if len(head) < half:
            take = chunk[: half - len(head)]
            head += take
            chunk = chunk[len(take) :]
        if chunk:
            tail.append(chunk)
            tail_size += len(chunk)
            while tail_size - len(tail[0]) >= half:
                cut += len(tail[0])
                tail_size -= len(tail.popleft())
    marker = f"\n[tfbisect: {cut} bytes of the task's output cut here]\n".encode() if cut else b""
    return (bytes(head) + marker + b"".join(tail)).decode("utf-8", "replace")


def last_frame(text: str) -> bytes | None:
    """The last complete result frame's bytes; None when there is none or it does not decode."""
    end = text.rfind(END)
    begin = text.rfind(BEGIN, 0, end)
    if begin < 0 or end < 0:
        return None
    body = "".join(text[begin + len(BEGIN) : end].split())
    if len(body) > (RESULT_MAX_BYTES + 1) * 4 // 3 + 4:
        return None
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None


def strip_frame(text: str) -> str:
    """The output as the scenario printed it: every complete frame left out (one pass)."""
    pieces: list[str] = []
    position = 0
    while (begin := text.find(BEGIN, position)) >= 0:
        end = text.find(END, begin)
        if end < 0:
            break
        pieces.append(text[position:begin])
        position = end + len(END)
    pieces.append(text[position:])
    return "".join(pieces)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
