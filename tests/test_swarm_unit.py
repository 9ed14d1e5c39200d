"""The Swarm backend's pure parts: where the swarm is (options, environment, clear errors), the
result frame in a task's output (hostile output included), and the command a user can paste.
The real swarm is in test_swarm.py."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from tfbisect.core.errors import BackendUnavailableError
from tfbisect.core.limits import RESULT_MAX_BYTES
from tfbisect.envs.backend_swarm import address_from, memory_bytes, shown_command
from tfbisect.envs.swarm_task import BEGIN, END, NETWORKED, WRAPPER, last_frame, strip_frame


def frame(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\n".join(["", BEGIN, *(text[i : i + 76] for i in range(0, len(text), 76)), END, ""])


def test_the_last_complete_frame_is_the_result_and_the_log_keeps_the_rest() -> None:
    output = "probe a ok\n" + frame(b'{"first": 1}') + "probe b ok\n" + frame(b'{"second": 2}')
    assert last_frame(output) == b'{"second": 2}'
    assert strip_frame(output).split() == ["probe", "a", "ok", "probe", "b", "ok"]
    # A frame the scenario left open, after a complete one: the complete one counts.
    assert last_frame(frame(b"{}") + BEGIN + "\nAAAA") == b"{}"


@pytest.mark.parametrize(
    "output",
    [
        "no frame at all",
        f"{BEGIN}\nnot base64 !!!\n{END}",
        f"{END}\n{BEGIN}",  # the end before the beginning
        f"{BEGIN}\n" + "A" * ((RESULT_MAX_BYTES + 1) * 4 // 3 + 100) + f"\n{END}",  # over the size limit
    ],
    ids=["none", "not-base64", "reversed", "too-big"],
)
def test_a_bad_frame_is_no_result(output: str) -> None:
    assert last_frame(output) is None


def test_the_wrapper_runs_the_scenario_and_frames_its_result(tmp_path: Path) -> None:
    """The container's command, run here with this Python: exit status and result both come back."""
    scenario = tmp_path / "scenario.py"
    scenario.write_text(
        "import sys\nopen(sys.argv[2], 'w').write('{\"ok\": true}')\nprint('probe x mismatch')\nsys.exit(1)\n"
    )
    wrapper = [
        sys.executable,
        "-c",
        WRAPPER.replace("/tmp/tfbisect-out", str(tmp_path / "out")),
        str(scenario),
    ]
    # In a network namespace of its own (loopback only), as a task on a node without a bridge.
    done = subprocess.run(["unshare", "--net", *wrapper], capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stderr
    assert last_frame(done.stdout) == b'{"ok": true}'
    assert strip_frame(done.stdout).strip() == "probe x mismatch"
    # With a network (this machine's): the scenario never runs, and the output says which.
    networked = subprocess.run(wrapper, capture_output=True, text=True, check=False)
    assert networked.returncode == 125 and networked.stdout.startswith(NETWORKED + " ")
    assert last_frame(networked.stdout) is None and "probe x" not in networked.stdout


def test_where_the_swarm_is_comes_from_options_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DOCKER_HOST", "TFBISECT_SWARM_MANAGER", "TFBISECT_REGISTRY_PUSH", "TFBISECT_REGISTRY_PULL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(BackendUnavailableError) as missing:
        address_from(None, None, None)
    assert "needs a swarm manager and a registry" in missing.value.what
    assert ".ci/swarm-up 2" in missing.value.todo
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/x/node1.sock")
    monkeypatch.setenv("TFBISECT_REGISTRY_PUSH", "127.0.0.1:5000")
    monkeypatch.setenv("TFBISECT_REGISTRY_PULL", "10.231.0.1:5000")
    found = address_from(None, None, None)
    assert (found.manager, found.registry_push, found.registry_pull) == (
        "unix:///run/x/node1.sock",
        "127.0.0.1:5000",
        "10.231.0.1:5000",
    )
    given = address_from("tcp://manager:2375", "registry:5000", None)
    assert given.manager == "tcp://manager:2375" and given.registry_pull == "10.231.0.1:5000"


def test_limits_and_the_command_a_user_can_paste() -> None:
    assert memory_bytes("8g") == 8 * 1024**3 and memory_bytes("512m") == 512 * 1024**2
    task: dict[str, object] = {
        "manager": "unix:///run/x/node1.sock",
        "scenario": "/repo/scenarios/gradient_mismatch.py",
        "user": "10001:10001",
        "memory_bytes": 8 * 1024**3,
        "constraints": ["node.labels.tfbisect.gpu==true"],
        "image": "10.231.0.1:5000/tfbisect:tf2.21.0-py3.11-cuda-abc",
    }
    shown = shown_command(task)
    assert shown.startswith(
        "docker -H unix:///run/x/node1.sock config create tfbisect-repro /repo/scenarios/gradient_mismatch.py && "
    )
    assert "--replicas 1 --restart-condition none --read-only --user 10001:10001" in shown
    assert "--constraint=node.labels.tfbisect.gpu==true" in shown and shown.endswith(
        "10.231.0.1:5000/tfbisect:tf2.21.0-py3.11-cuda-abc python /scenario/gradient_mismatch.py --output /tmp/result.json"
    )
