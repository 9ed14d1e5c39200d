"""Prefetch at low priority (issue 21 item 3): work prepared ahead yields the CPU to the runs a
search waits for.  The prefetch thread is niced (the installs it starts inherit that); an image
build runs in the engine, so a build asked for from a niced thread gets the fewest CPU shares,
and the engine really gives its steps' containers those shares."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tfbisect.envs.docker_builds import LOW_CPU_SHARES, BuildRequest, low_priority_thread
from tfbisect.search.prefetch import AHEAD_NICENESS

T = TypeVar("T")


def in_niced_thread(work: Callable[[], T], niceness: int = AHEAD_NICENESS) -> T:
    """`work()` on a thread niced as the prefetch's is (Linux sets niceness per thread)."""
    found: list[T] = []

    def body() -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        found.append(work())

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return found[0]


def request(tmp_path: Path, tag: str = "t:1", cpu_shares: int | None = None) -> BuildRequest:
    return BuildRequest(tmp_path / "Dockerfile", tmp_path, tag, "cpu", {}, {}, cpu_shares=cpu_shares)


def test_a_niced_thread_is_low_priority_and_the_main_thread_is_not() -> None:
    assert not low_priority_thread()
    assert in_niced_thread(low_priority_thread)
    assert not in_niced_thread(low_priority_thread, niceness=0)


def test_an_install_started_by_a_prefetch_runs_niced(tmp_path: Path) -> None:
    """The installs a prefetch starts (uv, pip wheel) inherit its thread's niceness: the child's
    own nice value, read from /proc, against a child of the main thread."""
    from tfbisect.platform.process import run_logged

    def nice_of_a_child() -> int:
        done = run_logged(
            ["sh", "-c", "cut -d' ' -f19 /proc/self/stat"], log_path=tmp_path / "n.log", timeout=30
        )
        assert done.exit_code == 0, done.log_tail
        return int(done.log_tail.split()[-1])

    assert nice_of_a_child() < AHEAD_NICENESS
    assert in_niced_thread(nice_of_a_child) == AHEAD_NICENESS


def test_low_cpu_shares_are_in_the_command_line_and_the_engines_call(tmp_path: Path) -> None:
    plain, low = request(tmp_path), request(tmp_path, cpu_shares=LOW_CPU_SHARES)
    assert "--cpu-shares" not in plain.argv() and "container_limits" not in plain.sdk_arguments()
    argv = low.argv()
    assert argv[argv.index("--cpu-shares") + 1] == "2"
    assert low.sdk_arguments()["container_limits"] == {"cpushares": 2}


def test_a_build_the_search_dropped_says_dropped_and_a_failed_one_says_failed(tmp_path: Path) -> None:
    """The progress line of a build ahead that the search moved past (cancelled on purpose) says
    it was dropped, never that it failed; a build that failed still says failed.  The dropped
    build raises before it reaches an engine: no engine here."""
    import io
    from typing import cast

    import docker

    from tfbisect.core import priority
    from tfbisect.core.errors import DockerError
    from tfbisect.core.progress import Progress
    from tfbisect.envs.docker_builds import Builds

    out = io.StringIO()
    progress = Progress(out)
    builds = Builds(progress, cast(docker.DockerClient, None), echo=False)
    urgency = priority.Urgency()
    urgency.drop()
    with (
        pytest.raises(priority.DroppedError),
        priority.ahead(urgency),
        progress.step("2.16.1", "building the image"),
    ):
        builds.build(request(tmp_path), tmp_path / "build.log", 60)
    with pytest.raises(DockerError), progress.step("2.17.0", "building the image"):
        raise DockerError("the engine refused the build", "see its log.")
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("[2.16.1] building the image: dropped after ")
    assert lines[1].endswith("s (the search no longer needs it)") and "failed" not in lines[1]
    assert lines[3].startswith("[2.17.0] building the image: failed after "), lines


# A static program that leaves its container's CPU shares (cgroup v1) or weight (v2) in the image.
PROBE_C = r"""
#include <stdio.h>
int main(void) {
    const char *paths[] = {"/sys/fs/cgroup/cpu/cpu.shares", "/sys/fs/cgroup/cpu.weight"};
    char buf[64] = "none\n";
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(paths[i], "r");
        if (f) { size_t n = fread(buf, 1, sizeof buf - 1, f); buf[n] = 0; fclose(f); break; }
    }
    FILE *out = fopen("/shares.txt", "w");
    if (!out) return 1;
    fputs(buf, out);
    return fclose(out) != 0;
}
"""


@pytest.mark.slow
@pytest.mark.docker
def test_a_build_from_a_niced_thread_runs_its_steps_with_low_cpu_shares(tmp_path: Path) -> None:
    """The engine accepts the shares (classic builder) and its build step runs under them, while
    the same build from the main thread runs with the engine's default shares."""
    from tfbisect.core.progress import Progress
    from tfbisect.envs.docker_engine import connect

    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to make a static program for an image without a shell")
    (tmp_path / "probe.c").write_text(PROBE_C)
    subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(tmp_path / "probe"), str(tmp_path / "probe.c")], check=True
    )
    # The tag in the context: each build's step runs anew, never from the engine's build cache.
    dockerfile = 'FROM scratch AS cpu\nCOPY probe /probe\nCOPY tag /tag\nRUN ["/probe"]\n'
    (tmp_path / "Dockerfile").write_text(dockerfile)
    engine = connect(Progress(quiet=True), echo=False)
    tags = [f"tfbisect-test-shares:{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        found = []
        for tag, niced in zip(tags, (False, True), strict=True):
            build = request(tmp_path, tag)
            (tmp_path / "tag").write_text(tag)

            def work(build: BuildRequest = build, tag: str = tag) -> tuple[int | None, bytes | None, str]:
                log = tmp_path / f"{tag.split(':')[1]}.log"
                done = engine.build(build, log, 120)
                return done.exit_code, engine.read_file(tag, "/shares.txt", 100), log.read_text()

            found.append(in_niced_thread(work) if niced else work())
        (plain_code, plain_shares, plain_log), (low_code, low_shares, low_log) = found
        assert plain_code == 0 and low_code == 0, plain_log + low_log
        assert "--cpu-shares 2" in low_log and "--cpu-shares" not in plain_log
        assert low_shares is not None and plain_shares is not None
        # cgroup v1: the shares themselves; v2: the weight docker maps them to (2 -> 1)
        assert int(low_shares) in (2, 1) and int(plain_shares) > int(low_shares), (plain_shares, low_shares)
    finally:
        for tag in tags:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


# A static program that sleeps in a build step, so that a test can act while the step runs.
SLEEPER_C = r"""
#include <unistd.h>
int main(void) { sleep(120); return 0; }
"""


@pytest.mark.slow
@pytest.mark.docker
def test_a_hurried_build_gets_default_shares_and_a_cancelled_one_removes_its_step_images(
    tmp_path: Path,
) -> None:
    """A build ahead (a niced thread under an urgency) runs its step with low shares; hurried (a
    run now waits for it), the running step gets the engine's default.  Cancelled (a stop
    signal; or dropped: the search moved past it, which raises), it removes the untagged images
    its own steps made, but never one that has a tag (the first build's, tagged meanwhile), and
    leaves no step container.  About 10 s: two builds on `scratch`, each cancelled in its step."""
    from tfbisect.core import priority
    from tfbisect.core.errors import DockerError
    from tfbisect.core.progress import Progress
    from tfbisect.envs.docker_builds import StepTrail, cancel_all
    from tfbisect.envs.docker_engine import connect

    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to make a static program for an image without a shell")
    (tmp_path / "sleeper.c").write_text(SLEEPER_C)
    subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(tmp_path / "sleeper"), str(tmp_path / "sleeper.c")], check=True
    )
    (tmp_path / "Dockerfile").write_text(
        'FROM scratch AS cpu\nCOPY sleeper /sleeper\nCOPY tag /tag\nRUN ["/sleeper"]\n'
    )
    engine = connect(Progress(quiet=True), echo=False)
    run = uuid.uuid4().hex[:8]
    keep = f"tfbisect-test-kept:{run}"

    def inspect(what: str, ref: str, field: str) -> str:
        done = subprocess.run(
            ["docker", what, "inspect", "--format", field, ref], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    def started_build(name: str) -> tuple[priority.Urgency, StepTrail, threading.Thread, list[object]]:
        (tmp_path / "tag").write_text(f"{run}-{name}")  # a step of its own, never from the cache
        log = tmp_path / f"{name}.log"
        urgency = priority.Urgency()
        finished: list[object] = []

        def build() -> object:
            with priority.ahead(urgency):
                try:
                    return engine.build(request(tmp_path, f"tfbisect-test-cancel:{run}-{name}"), log, 120)
                except DockerError as exc:
                    return exc

        thread = threading.Thread(target=lambda: finished.append(in_niced_thread(build)))
        thread.start()
        trail = StepTrail()
        deadline = time.monotonic() + 60
        while trail.container is None and time.monotonic() < deadline:
            time.sleep(0.2)
            trail = StepTrail()
            trail.feed(log.read_text() if log.exists() else "")
        assert trail.container is not None and trail.made, log.read_text() if log.exists() else "no log"
        assert inspect("container", trail.container, "{{.HostConfig.CpuShares}}") == str(LOW_CPU_SHARES)
        return urgency, trail, thread, finished

    try:
        urgency, tagged, thread, finished = started_build("tagged")
        urgency.hurry()
        assert tagged.container is not None
        assert inspect("container", tagged.container, "{{.HostConfig.CpuShares}}") == "1024", "hurried"
        subprocess.run(["docker", "tag", tagged.made[-1], keep], check=True, capture_output=True)
        cancel_all()  # the search is over
        thread.join(60)
        assert finished and isinstance(finished[0], priority.DroppedError), "cancelled: no failure to retry"
        assert inspect("image", keep, "{{.Id}}"), "a tagged image is never removed"

        urgency, dropped, thread, finished = started_build("dropped")
        urgency.drop()
        thread.join(60)
        assert finished and isinstance(finished[0], priority.DroppedError), finished
        assert [image for image in dropped.made if inspect("image", image, "{{.Id}}")] == [], (
            "step images gone"
        )
        assert dropped.container is not None and not inspect("container", dropped.container, "{{.Id}}")
        assert inspect("image", keep, "{{.Id}}"), "the other build's tagged image is still there"
    finally:
        subprocess.run(["docker", "rmi", keep], capture_output=True, check=False)
