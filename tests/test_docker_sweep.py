"""The sweep of what tfbisect left in an engine (pure logic over the engine's answers): runs past
their deadline go, a build step's container goes only once no build can still commit it."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from tfbisect.core.progress import Progress
from tfbisect.envs.docker_containers import (
    BUILD_ENV,
    BUILD_LEFTOVER_AGE_S,
    BUILD_MARK,
    DEADLINE_LABEL,
    Containers,
)


def rfc3339(seconds_ago: float) -> str:
    moment = dt.datetime.fromtimestamp(time.time() - seconds_ago, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # the engine's nanoseconds


class _Api:
    """The three calls the sweep makes of an engine's API."""

    def __init__(self, runs: list[dict[str, Any]], ended: dict[str, dict[str, Any]]) -> None:
        self.runs, self.ended = runs, ended
        self.removed: list[str] = []

    def containers(self, all: bool, filters: dict[str, Any]) -> list[dict[str, Any]]:  # noqa: A002
        return self.runs if "label" in filters else [{"Id": i, "Labels": {}} for i in self.ended]

    def inspect_container(self, container: str) -> dict[str, Any]:
        return self.ended[container]

    def remove_container(self, container: str, force: bool) -> None:
        self.removed.append(container)


class _Client:
    def __init__(self, api: _Api) -> None:
        self.api = api


def step(status: str, seconds_ago: float, mark: str = BUILD_MARK) -> dict[str, Any]:
    return {
        "Config": {"Env": [f"{mark}http://127.0.0.1:9/"], "Cmd": ["/bin/sh", "-c", "pip install"]},
        "State": {
            "Status": status,
            "FinishedAt": rfc3339(seconds_ago) if status == "exited" else "0001-01-01T00:00:00Z",
        },
        "Created": rfc3339(seconds_ago + 60),
    }


def nop(instruction: str, labels: dict[str, str], env: tuple[str, ...], seconds_ago: float) -> dict[str, Any]:
    return {
        "Config": {"Env": list(env), "Cmd": ["/bin/sh", "-c", "#(nop) ", instruction], "Labels": labels},
        "State": {"Status": "created", "FinishedAt": "0001-01-01T00:00:00Z"},
        "Created": rfc3339(seconds_ago),
    }


def test_only_leftovers_are_swept_never_a_build_or_run_in_progress_elsewhere() -> None:
    old = BUILD_LEFTOVER_AGE_S + 60
    api = _Api(
        runs=[
            {"Id": "run-late", "Labels": {DEADLINE_LABEL: str(time.time() - 5)}, "State": "running"},
            {"Id": "run-on-time", "Labels": {DEADLINE_LABEL: str(time.time() + 600)}, "State": "running"},
        ],
        ended={
            "step-left-long-ago": step("exited", old),
            "step-just-ended": step("exited", 2),  # another process's build is committing it now
            "step-created-just-now": step("created", 0),
            "step-created-long-ago": step("created", old),
            "someone-elses": step("exited", old, mark="OTHER="),
            # metadata steps of a cancelled build, left `Created`: our labels, or only our base ENV
            "label-step": nop("LABEL tfbisect.hash=3e82", {"tfbisect.hash": "3e82"}, BUILD_ENV, old),
            "arg-step": nop("ARG NVIDIA_REST=", {}, BUILD_ENV, old),
            "arg-step-now": nop("ARG NVIDIA_REST=", {}, BUILD_ENV, 0),
            "a-users-own": nop("ARG X=", {}, ("VIRTUAL_ENV=/opt/venv",), old),
        },
    )
    containers = Containers(Progress(quiet=True), _Client(api), False, "unix:///nowhere")  # type: ignore[arg-type]
    assert containers.sweep_leftovers() == 5
    assert sorted(api.removed) == [
        "arg-step",
        "label-step",
        "run-late",
        "step-created-long-ago",
        "step-left-long-ago",
    ]
