"""One scenario run on a Docker Swarm, as a process the runner supervises like `docker run`.

`python -m tfbisect.envs.swarm_task TASK.json` (written by backend_swarm.py) creates the
scenario as a swarm config, runs it as a one-shot service (one replica, restart condition none)
with the limits of a local run, waits for its task, prints the task's output, takes the
result document out of it, and exits with the task's exit status.  There is no shared file
system: the scenario goes in as a config, and the result comes back framed in the task's own
output (base64 between two marker lines, the last frame wins), under the size limits of a
local run.  The service and the config are removed on every path: done, failed, killed by the
runner's timeout (SIGTERM) or by Ctrl-C.

A task that a node lost (the node went away) runs once more on another node; a second loss
is not the scenario's doing, and the run ends as unstarted (a skip that says why).  What
happened is written to `ended.json` next to the result, for `SwarmBackend.ended`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import signal
import sys
import time
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

from tfbisect.core.limits import RESULT_MAX_BYTES

BEGIN = "==tfbisect-result-v1=="
END = "==tfbisect-result-end=="
LOG_MAX_BYTES = 64 * 1024 * 1024  # what is read of a task's output at most
POLL_SECONDS = 0.5
UNSTARTED = 125
# Task states after which a task never runs again (docker/swarmkit api/types.proto).
FINAL = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}
LOST = {"orphaned", "rejected", "shutdown", "remove"}  # the node or the scheduler ended it, not the scenario
# Runs in the container, with the image's Python (3.6+): the scenario, then its result framed.
WRAPPER = f"""
import base64, os, subprocess, sys
os.makedirs("/tmp/tfbisect-out", exist_ok=True)
path = "/tmp/tfbisect-out/result.json"
code = subprocess.call([sys.executable, sys.argv[1], "--output", path])
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
    task = json.loads(Path(argv[0]).read_text())
    out = Path(task["outdir"])
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    client: Any = docker.APIClient(base_url=task["manager"], version="auto", timeout=60)
    config_id = None
    ended: dict[str, Any] = {"attempts": []}
    try:
        config_id = client.create_config(
            task["config"], Path(task["scenario"]).read_bytes(), labels={"tfbisect": "scenario"}
        )["ID"]
        avoid: list[str] = []
        for attempt in range(2):
            name = task["service"] + (f"-retry{attempt}" if attempt else "")
            result = run_once(client, task, name, config_id, avoid)
            ended["attempts"].append(result)
            if result["state"] not in LOST or not result.get("node_id"):
                break
            avoid.append(result["node_id"])
            print(
                f"tfbisect: the task was lost on node {result.get('node')} ({result['state']}); running it once more elsewhere"
            )
        last = ended["attempts"][-1]
        document = last.pop("document", None)
        ended.update(last)
        if last["state"] in LOST or (last["state"] != "complete" and last.get("exit_code") is None):
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
        return int(last.get("exit_code") or 0)
    except Stopped as stop:
        ended["stopped"] = str(stop)
        return 143 if str(stop) == "SIGTERM" else 130
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        ended["unstarted"] = f"the swarm manager failed: {exc}"
        print(f"tfbisect: {ended['unstarted']}", file=sys.stderr)
        return UNSTARTED
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for attempt in ended["attempts"] or [{"service": task["service"]}]:
            remove(client.remove_service, attempt.get("service", task["service"]))
        remove(client.remove_service, task["service"])
        if config_id is not None:
            remove(client.remove_config, config_id)
        for attempt in ended["attempts"]:
            attempt.pop("document", None)
        (out / "ended.json").write_text(json.dumps(ended))


def remove(call: Any, what: str) -> None:
    # Already gone, or the manager is: the backend's own clean-up tries again.
    with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
        call(what)


def run_once(
    client: Any, task: dict[str, Any], name: str, config_id: str, avoid: list[str]
) -> dict[str, Any]:
    """Create the one-shot service, wait for its task to end, read its output."""
    scenario = f"/scenario/{Path(task['scenario']).name}"
    spec = ContainerSpec(
        image=task["image"],
        command=["python", "-c", WRAPPER, scenario],
        user=task["user"],
        env=task["env"],
        read_only=True,
        init=True,
        mounts=[
            Mount("/tmp", None, type="tmpfs"),
            Mount("/home/tfbisect", None, type="tmpfs"),
        ],
        configs=[ConfigReference(config_id, task["config"], filename=scenario, uid="0", gid="0", mode=0o444)],
    )
    resources = Resources(mem_limit=task["memory_bytes"])
    resources["Limits"]["Pids"] = task["pids"]
    constraints = list(task["constraints"]) + [f"node.id!={node}" for node in avoid]
    template = TaskTemplate(
        spec,
        resources=resources,
        restart_policy=RestartPolicy(condition="none"),
        placement=Placement(constraints=constraints),
    )
    # A one-shot replicated service, not a `replicated-job`: Docker 20.10 keeps a removed job's
    # exited containers on the nodes (moby/moby#42789, #44312); a service's go with it.
    service = client.create_service(
        template, name=name, labels={"tfbisect": "run"}, mode=ServiceMode("replicated", replicas=1)
    )["ID"]
    state: str = "new"
    status: dict[str, Any] = {}
    tasks: list[dict[str, Any]] = []
    while True:
        tasks = client.tasks(filters={"service": service})
        if tasks:
            status = tasks[-1].get("Status") or {}
            state = str(status.get("State", "new"))
            if state in FINAL:
                break
            node_id = tasks[-1].get("NodeID")
            if node_id and not node_ready(client, node_id):
                state = "orphaned"  # its node is down: the manager would wait for it
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
    }
    if state not in LOST:
        text = logs(client, service)
        sys.stdout.write(strip_frame(text))
        sys.stdout.flush()
        result["document"] = last_frame(text)
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
    return str(labels.get("tfbisect.node") or (node.get("Description") or {}).get("Hostname") or node_id[:12])


def logs(client: Any, service: str) -> str:
    """The task's stdout and stderr as one text, at most LOG_MAX_BYTES."""
    chunks: list[bytes] = []
    size = 0
    for chunk in client.service_logs(service, stdout=True, stderr=True, follow=False):
        chunks.append(chunk)
        size += len(chunk)
        if size > LOG_MAX_BYTES:
            break
    return b"".join(chunks).decode("utf-8", "replace")


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
    """The output as the scenario printed it: every frame left out of the log."""
    while (begin := text.find(BEGIN)) >= 0:
        end = text.find(END, begin)
        if end < 0:
            break
        text = text[:begin] + text[end + len(END) :]
    return text


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
