"""`tox -e bench`: the speed promises, measured as ratios (never as timed tests).

search   every single-change position over the real catalogue, for 1..8 workers:
         runs / (ceil(log2 n) + 2) and rounds / (ceil(log_{N+1} n) + 1), both must be <= 1,
         and runs against a naive sweep of the range.
repeat   (--real) a real bisection run twice: the second must need 0 builds and 0 runs.
proof    (--proof) the flagship bisected with its narrowing and proof (venvs, TF 2.3.0..2.4.1),
         then again: the repeat must make 0 runs of any kind (releases, builds, traced, patched)
         and finish in < 5 s; the proof's runs over the units it tried, and the seconds of one
         hard-linked copy of a cached venv (the copy each patched run is made in).
docker   (--docker) two TF versions on one base: rebuild time of an unchanged image, layers
         shared, bytes fetched over unique wheel bytes (must be 1.0), container overhead.
swarm    (--swarm) a 2-node local swarm (.ci/swarm-up 2): the flagship on the same image, on the
         swarm against local Docker, once the image is on the nodes (target <= 1.3); and a
         sweep of 4 cells: both nodes used, imbalance <= 1 cell.
prefetch (--prefetch) a cold bisection (fresh caches) with --prefetch 2 against --prefetch 0,
         same versions (target <= 0.7); (--docker-prefetch) the same for the flagship with containers
         (TF 2.3.4..2.7.0, --backend auto), no tfbisect image before each side, not even the base.
narrow   the narrowing's search over k candidate RCs or nightlies between two judged releases, every
         single change point, k = 1..64: runs / (ceil(log2 k) + 1) must be <= 1; and (--narrow) a
         real narrowing of the flagship (TF 2.3.4..2.4.0): the traced run of the failing probe over
         the untraced run of it alone (target <= 3) and the diff of the two versions (< 60 s).
cold     (--cold) TF 2.9.3 on Python 3.9 from empty caches for both sides (a fresh tfbisect cache and
         uv cache each, no image of the version; the base is shared): a cold image and its run over
         a cold venv and its run (target <= 1.5), the warm container run over the warm venv run
         (median of 3, target <= 1.2), and the bytes fetched for the release built as an image and
         then as a venv in one cache over its unique wheel bytes (target 1.00).
cuda     (--cuda) CUDA images of three TF versions on one CUDA set (the cu11 set; TF 2.18/2.19's
         CUDA 12.5): disk bytes of the three over one such image, against the 1.5 target and
         against the floor that storing the NVIDIA image once allows (must be met).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tfbisect.core import catalogue, jsonread
from tfbisect.envs.backend_docker import DockerBackend
from tfbisect.search.state import BisectState, Class, max_rounds, max_runs


def searched(state: BisectState, todo: list[int], change: int) -> tuple[int, int]:
    """The search driven to its end from `todo`, the change at index `change`: (runs, rounds)."""
    runs = rounds = 0
    while todo:
        rounds += 1
        runs += len(todo)
        for i in todo:
            state.record(i, Class.OLD if i < change else Class.NEW)
        todo = state.next_round()
    assert state.result().change.first_new == change
    return runs, rounds


def search_ratios(size: int, jobs: int) -> dict[str, float]:
    worst_runs = worst_rounds = 0
    total_runs = 0
    for change in range(1, size):
        state = BisectState(size, jobs)
        runs, rounds = searched(state, state.first_round(), change)
        worst_runs, worst_rounds = max(worst_runs, runs), max(worst_rounds, rounds)
        total_runs += runs
    return {
        "versions": size,
        "jobs": jobs,
        "worst_runs": worst_runs,
        "worst_rounds": worst_rounds,
        "runs_over_bound": worst_runs / max_runs(size),
        "rounds_over_bound": worst_rounds / max_rounds(size, jobs),
        "mean_runs_over_sweep": total_runs / (size - 1) / size,
    }


def tfbisect(reports: Path, cache: Path | None = None) -> list[str]:
    """The command line of this tfbisect, with reports (and a cache) of the measurement's own."""
    return [
        sys.executable,
        "-m",
        "tfbisect",
        "--reports",
        str(reports),
        *(["--cache", str(cache)] if cache else []),
    ]


def real_repeat(reports: Path) -> dict[str, float]:
    # The bisection alone (a narrowing's traced runs are measured on their own below).
    args = [
        "--good",
        "2.3.0",
        "--bad",
        "2.4.1",
        "--probe",
        "gradient_eager_plain",
        "--jobs",
        "2",
        "--no-narrow",
    ]
    command = [*tfbisect(reports), "bisect", *args]
    timings = []
    for _ in range(2):
        start = time.monotonic()
        subprocess.run(command, check=True, capture_output=True)
        timings.append(time.monotonic() - start)
    logs = sorted((reports / "bisect").glob("*.json"), key=lambda p: p.stat().st_mtime)
    first, second = (jsonread.read(p, max_bytes=None)["summary"] for p in logs[-2:])
    return {
        "first_runs": first["runs"],
        "repeat_runs": second["runs"],
        "repeat_reused": second["reused"],
        "repeat_time_over_first": timings[1] / timings[0],
    }


FLAGSHIP = ("--good", "2.3.0", "--bad", "2.4.1", "--probe", "gradient_eager_plain", "--backend", "venv")


def new_runs(log: dict[str, Any]) -> int:
    """Every run a bisection log says was made now: the releases', the builds' between them, the
    traced (and untraced) probe runs and the proof's patched runs; stored ones reused are not."""
    narrowing = log.get("narrowing") or {}
    trace = narrowing.get("trace") or {}
    proof = narrowing.get("proof") or {}
    return int(log["summary"]["runs"]) + sum(int(part.get("runs") or 0) for part in (narrowing, trace, proof))


def real_repeat_proven(reports: Path) -> dict[str, float]:
    """The flagship bisected with its narrowing and proof, twice (the venvs cached as they are):
    what each made, how long each took, and the proof's cost."""
    command = [*tfbisect(reports), "bisect", *FLAGSHIP]
    timings = []
    for _ in range(2):
        start = time.monotonic()
        subprocess.run(command, check=True, capture_output=True)
        timings.append(time.monotonic() - start)
    logs = sorted((reports / "bisect").glob("*.json"), key=lambda p: p.stat().st_mtime)
    first, second = (jsonread.read(p, max_bytes=None) for p in logs[-2:])
    proof = (first.get("narrowing") or {}).get("proof") or {}
    # The units and packages tried; the shrink's tries name parts of the proven unit, not units.
    trials = [trial for trial in proof.get("trials") or [] if trial.get("kind") != "shrink"]
    units = {unit for trial in trials for unit in trial.get("units") or []}
    shrink_runs = int((proof.get("shrink") or {}).get("runs") or 0)
    trace = (second.get("narrowing") or {}).get("trace") or {}
    return {
        "first_s": timings[0],
        "repeat_s": timings[1],
        "first_runs": new_runs(first),
        "repeat_runs": new_runs(second),
        "repeat_traced_reused": int(trace.get("reused") or 0),
        "proof_runs": int(proof.get("runs") or 0),
        "proof_shrink_runs": shrink_runs,
        "proof_units": len(units),
        "proof_runs_over_units": (int(proof.get("runs") or 0) - shrink_runs) / max(len(units), 1),
        "copy_s": venv_copy_seconds(reports),
    }


def venv_copy_seconds(reports: Path, copies: int = 3) -> float:
    """Seconds of one hard-linked copy of the cached TF 2.4.0 venv (made and removed), the mean of
    `copies`: what each proof run pays before it runs."""
    from tfbisect.core.progress import Progress
    from tfbisect.envs.cache import default_cache_dir
    from tfbisect.runs.patched import venv_copy, venv_root
    from tfbisect.runs.runner import Runner, Settings

    cache = default_cache_dir()
    runner = Runner(catalogue.load_snapshot(), Settings(reports, cache), Progress(quiet=True))
    spec = runner.spec_for("2.4.0", python="3.8", backends=("venv",))
    root = venv_root(runner.environment(spec.backend).prepare(spec, runner.lock_for(spec), reports / "logs"))
    start = time.monotonic()
    for _ in range(copies):
        with venv_copy(root, cache / "proof-copies"):
            pass
    return (time.monotonic() - start) / copies


def narrow_search_ratio(candidates: int) -> dict[str, float]:
    """Both ends known (the bisection judged them), a change at every position among the k
    candidates between: the runs the narrowing's search needs over its promise."""
    worst = 0
    size = candidates + 2
    for change in range(1, size):
        state = BisectState(size, 1)
        state.record(0, Class.OLD)
        state.record(size - 1, Class.NEW)
        runs, _ = searched(state, state.next_round(), change)
        worst = max(worst, runs)
    bound = math.ceil(math.log2(candidates)) + 1 if candidates > 1 else 1
    return {"candidates": candidates, "worst_runs": worst, "runs_over_bound": worst / bound}


def real_narrowing(reports: Path) -> dict[str, float]:
    """The flagship's change point narrowed for real: what tracing and the diff cost."""
    command = [
        *tfbisect(reports),
        "bisect",
        "--good",
        "2.3.4",
        "--bad",
        "2.4.0",
        "--probe",
        "gradient_eager_plain",
    ]
    subprocess.run([*command, "--backend", "venv"], check=True, capture_output=True)
    log = max((reports / "bisect").glob("*.json"), key=lambda p: p.stat().st_mtime)
    trace = jsonread.read(log, max_bytes=None)["narrowing"]["trace"]
    if trace.get("error"):
        raise SystemExit(f"the traced runs failed: {trace['error']}")
    seconds = trace["seconds"]
    return {
        "failing_new_s": seconds["failing_new"],
        "failing_old_s": seconds["failing_old"],
        "untraced_s": trace["untraced_seconds"],
        "traced_over_untraced": max(seconds["failing_new"], seconds["failing_old"])
        / trace["untraced_seconds"],
        "diff_s": trace["diff_seconds"],
    }


def docker_ratios(cache: Path, reports: Path) -> dict[str, float]:
    from tfbisect.core.outcome import Outcome
    from tfbisect.core.progress import Progress
    from tfbisect.core.scenario import find
    from tfbisect.core.spec import Flavour
    from tfbisect.envs.wheelhouse import pins
    from tfbisect.runs.runner import Runner, Settings

    # force: the container's overhead is measured on a real run, never a stored result
    runner = Runner(catalogue.load_snapshot(), Settings(reports, cache, force=True), Progress(quiet=True))
    scenario = find("gradient_mismatch")
    backend = runner.environment(DockerBackend.name)
    assert isinstance(backend, DockerBackend)
    listing = ["images", "--quiet", "--no-trunc", "--filter", "reference=tfbisect*"]
    before, volumes = set(backend.engine.capture(*listing, quiet=True).split()), site_volumes()
    layers: list[list[str]] = []
    used: dict[str, int] = {}
    overheads = []
    for version in ("2.20.0", "2.21.0"):
        spec = runner.spec_for(version, python="3.11", flavour=Flavour.CPU, backends=(DockerBackend.name,))
        lock = runner.lock_for(spec)
        image = backend.ensure_image(spec, lock, reports / "logs")
        inspected = backend.engine.image_inspect(image.tag) or {}
        root = inspected.get("RootFS") or {}
        layers.append(list(root.get("Layers", [])) if isinstance(root, dict) else [])
        index = jsonread.read(backend.wheels.folder("3.11") / "index.json", max_bytes=None)
        for pin in pins(lock.path.read_text()):
            if not pin.is_nvidia:
                wheel = backend.wheels.folder("3.11") / index[pin.key]
                used[wheel.name] = wheel.stat().st_size
        start = time.monotonic()
        again = backend.ensure_image(spec, lock, reports / "logs")
        rebuild = time.monotonic() - start
        assert not again.built
        record = runner.run(spec, scenario).record
        if record.outcome in (Outcome.REPRODUCED, Outcome.NOT_REPRODUCED) and record.document:
            inside = float(record.document["timings"]["total_s"])
            overheads.append((record.duration_s - inside) / inside)
    remove_site_volumes(volumes)
    remove_new_images(backend, before)
    shared = 0
    for a, b in zip(layers[0], layers[1], strict=False):
        if a != b:
            break
        shared += 1
    return {
        "rebuild_unchanged_s": rebuild,
        "shared_layers": shared,
        "layers": len(layers[1]),
        "fetched_over_unique": backend.wheels.fetched_bytes / max(sum(used.values()), 1),
        "container_overhead": sum(overheads) / max(len(overheads), 1),
    }


def remove_new_images(backend: DockerBackend, before: set[str]) -> None:
    """The bench cleans up after itself (1-7 GB an image): every tfbisect image it made, children
    before the images they are built on (an image with children cannot go first)."""
    listing = ["images", "--quiet", "--no-trunc", "--filter", "reference=tfbisect*"]
    for _ in range(4):
        left = set(backend.engine.capture(*listing, quiet=True).split()) - before
        for created in left:
            backend.engine.remove_image(created)
        if not left:
            return


EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"  # an empty diff


def layer_sizes(backend: DockerBackend, tag: str) -> dict[str, int]:
    """Each of the image's layers (by diff ID) with its size: the history's steps with bytes
    are, in order, the layers that are not the empty diff."""
    layers = [d for d in backend.engine.image_layers(tag) if d != EMPTY_LAYER]
    sizes = [size for size in backend.engine.image_step_sizes(tag) if size > 0]
    assert len(sizes) == len(layers), f"{tag}: {len(sizes)} steps with bytes, {len(layers)} layers"
    return dict(zip(layers, sizes, strict=True))


CUDA_TRIPLES = {
    "cu11.8-cudnn8.6 set (TF 2.12.0, 2.12.1, 2.13.1)": ("2.12.0", "2.12.1", "2.13.1"),
    "tensorflow[and-cuda] CUDA 12.5 (TF 2.18.0, 2.18.1, 2.19.0)": ("2.18.0", "2.18.1", "2.19.0"),
}


def cuda_sharing(cache: Path, reports: Path, versions: tuple[str, ...]) -> dict[str, float]:
    """Disk bytes of three CUDA images against one: the union of their layers' bytes (a layer
    two images share is stored once) over the bytes of one image."""
    from tfbisect.core.progress import Progress
    from tfbisect.core.spec import Flavour
    from tfbisect.runs.runner import Runner, Settings

    runner = Runner(catalogue.load_snapshot(), Settings(reports, cache), Progress(quiet=True))
    backend = runner.environment(DockerBackend.name)
    assert isinstance(backend, DockerBackend)
    listing = ["images", "--quiet", "--no-trunc", "--filter", "reference=tfbisect*"]
    before = set(backend.engine.capture(*listing, quiet=True).split())
    images: list[dict[str, int]] = []
    nvidia: dict[str, int] = {}
    own_nvidia: list[int] = []
    try:
        for version in versions:
            spec = runner.spec_for(
                version, python="3.11", flavour=Flavour.CUDA, backends=(DockerBackend.name,)
            )
            image = backend.ensure_image(spec, runner.lock_for(spec), reports / "logs")
            images.append(layer_sizes(backend, image.tag))
            below = layer_sizes(backend, str(image.nvidia))
            nvidia.update(below)
            own_nvidia.append(sum(below.values()))
    finally:
        remove_new_images(backend, before)
    union: dict[str, int] = {}
    for layers in images:
        union.update(layers)
    one = sum(images[0].values())
    sizes = [sum(layers.values()) for layers in images]
    shared = sum(nvidia.values())
    return {
        "image_bytes": one,
        "nvidia_bytes": shared,
        "three_over_one": sum(union.values()) / one,
        # what the three take when exactly the NVIDIA image (and the base under it) is shared
        "shared_once_over_one": (
            shared + sum(size - own for size, own in zip(sizes, own_nvidia, strict=True))
        )
        / one,
        "unshared_three_over_one": sum(sizes) / one,
    }


ROOT = Path(__file__).resolve().parents[2]


LOCAL = ["-H", "unix:///var/run/docker.sock"]  # the main engine (DOCKER_HOST may name a manager)


def tagged_images() -> set[str]:
    out = subprocess.run(
        ["docker", *LOCAL, "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {ref for ref in out.split() if "tfbisect" in ref and not ref.startswith("tfbisect-base:")}


def site_volumes() -> set[str]:
    """The site volumes on the main engine (envs/docker_sites.py: a CPU release's packages)."""
    out = subprocess.run(
        ["docker", *LOCAL, "volume", "ls", "--quiet", "--filter", "label=tfbisect.site"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return set(out.split())


def remove_site_volumes(before: set[str]) -> None:
    """The bench cleans up the site volumes it filled (about 1 GB each), as it does its images."""
    made = sorted(site_volumes() - before)
    if made:
        subprocess.run(["docker", *LOCAL, "volume", "rm", "--force", *made], capture_output=True, check=False)


def swarm_ratios(tmp: Path) -> dict[str, float]:
    """The flagship on TF 2.21's image: median of 3 runs on the swarm over median of 3 local
    Docker runs (the image already on the nodes), and a 4-cell sweep's cells per node."""
    import statistics

    state = tmp / "swarm"
    env = swarm_up(state)
    before, volumes = tagged_images(), site_volumes()
    try:
        timings = swarm_timings(tmp, env)
        nodes = swarm_sweep_nodes(tmp, env)
    finally:
        swarm_down(state, before)
        remove_site_volumes(volumes)
    # A cell without a node (a skip: the task never ran, e.g. a node out of disk) is a finding
    # of its own, never a node called None (sorting None with names was a TypeError).
    placed = [str(n) for n in nodes if isinstance(n, str) and n]
    per_node = [placed.count(n) for n in sorted(set(placed))]
    return {
        "cells_without_node": len(nodes) - len(placed),
        "docker_s": statistics.median(timings["docker"]),
        "swarm_s": statistics.median(timings["swarm"]),
        "swarm_over_docker": statistics.median(timings["swarm"]) / statistics.median(timings["docker"]),
        "nodes_used": len(per_node),
        "imbalance": max(per_node) - min(per_node) if per_node else 99,
    }


def swarm_up(state: Path) -> dict[str, str]:
    """A 2-node local swarm (`.ci/swarm-up 2`); the environment that names it (DOCKER_HOST …)."""
    up = subprocess.run(
        [
            str(ROOT / ".ci" / "swarm-up"),
            "2",
            "--state",
            str(state),
            "--subnet",
            "10.231.93",
            "--registry-port",
            "5293",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(os.environ, **dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line))


def swarm_down(state: Path, before: set[str]) -> None:
    """The swarm gone, and the images it made here (the TF images, and their registry tags)."""
    subprocess.run(
        [str(ROOT / ".ci" / "swarm-down"), "--state", str(state)], capture_output=True, check=False
    )
    made = sorted(tagged_images() - before)
    if made:
        subprocess.run(["docker", *LOCAL, "image", "rm", "--force", *made], capture_output=True, check=False)


def swarm_timings(tmp: Path, env: dict[str, str]) -> dict[str, list[float]]:
    """Seconds of 3 runs of one cell on each backend, once the image is on both nodes."""
    local = {k: v for k, v in env.items() if k != "DOCKER_HOST"}
    base = tfbisect(tmp / "reports", tmp / "cache")
    cell = ["--tf", "2.21.0", "--python", "3.11", "--force"]
    # Warm: the image built, pushed, and pulled by both nodes (two cells at once).
    subprocess.run(
        [
            *base,
            "sweep",
            "--tf",
            "2.21.0",
            "--keras",
            "default,legacy",
            "--python",
            "3.11",
            "--backend",
            "swarm",
            "--jobs",
            "2",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    timings: dict[str, list[float]] = {"docker": [], "swarm": []}
    for _ in range(3):
        for backend, environment in (("docker", local), ("swarm", env)):
            start = time.monotonic()
            subprocess.run(
                [*base, "run", *cell, "--backend", backend],
                env=environment,
                check=False,
                capture_output=True,
            )
            timings[backend].append(time.monotonic() - start)
    return timings


def swarm_sweep_nodes(tmp: Path, env: dict[str, str]) -> list[Any]:
    """The node each cell of a 4-cell swarm sweep ran on, as its record says (None for a record
    without one: `swarm_ratios` reports those as a finding)."""
    reports = tmp / "reports4"
    four = [
        *tfbisect(reports, tmp / "cache"),
        "sweep",
        "--tf",
        "2.20.0,2.21.0",
        "--keras",
        "default,legacy",
        "--python",
        "3.11",
        "--backend",
        "swarm",
    ]
    subprocess.run(four, env=env, check=True, capture_output=True)
    return [
        jsonread.read(p, max_bytes=None)["extra"].get("node") for p in (reports / "results").rglob("*.json")
    ]


def prefetch_ratio(tmp: Path) -> dict[str, float]:
    """A cold bisection (fresh caches, venvs) with --prefetch 2 over the same one with 0."""
    timings = {}
    runs = {}
    for prefetch in ("0", "2"):
        folder = tmp / f"prefetch{prefetch}"
        command = [
            *tfbisect(folder, folder / "cache"),
            "bisect",
            "--good",
            "2.2.0",
            "--bad",
            "2.5.0",
            "--probe",
            "gradient_eager_plain",
        ]
        command += ["--backend", "venv", "--prefetch", prefetch, "--no-narrow"]
        # Cold for both: tfbisect's caches and its uv wheel cache fresh.
        env = dict(
            os.environ, UV_CACHE_DIR=str(folder / "uv-cache"), TFBISECT_UV_CACHE=str(folder / "uv-cache")
        )
        start = time.monotonic()
        subprocess.run(command, check=False, capture_output=True, env=env)
        timings[prefetch] = time.monotonic() - start
        log = max((folder / "bisect").glob("*.json"), key=lambda p: p.stat().st_mtime)
        runs[prefetch] = jsonread.read(log, max_bytes=None)["summary"]["runs"]
    return {
        "without_s": timings["0"],
        "with_s": timings["2"],
        "with_over_without": timings["2"] / timings["0"],
        "runs_without": runs["0"],
        "runs_with": runs["2"],
    }


# The flagship's main command in small: TF 2.3.4 runs in a venv (no Debian base has its Python
# 3.8), 2.5 and later in containers on the Python 3.9 base; the change (2.4.0) is found in 4-5 rounds
# of one run each, while the next round's environments (images among them) are prepared ahead.
DOCKER_PREFETCH_RANGE = ("2.3.4", "2.7.0")


def docker_prefetch_ratio(tmp: Path) -> dict[str, Any]:
    """A cold flagship bisection with containers (`--backend auto`) with --prefetch 2 over the
    same one with 0, one after the other, each as on a bare machine: no tfbisect image (the
    Debian base included) or site volume and a fresh tfbisect cache (wheels) for each, every
    image and volume either made removed after it (uv's cache is kept).  A base the machine
    had is set aside under another tag meanwhile and put back at the end."""
    from tfbisect.core.progress import Progress
    from tfbisect.envs.docker_engine import connect

    engine = connect(Progress(quiet=True), echo=False)
    listing = ["images", "--quiet", "--no-trunc", "--filter", "reference=tfbisect*"]
    put_back_base(engine)  # a bench killed before it put the machine's base back
    had_base = engine.image_id(BENCH_BASE) is not None
    try:
        if had_base:  # untagged, not removed: its layers stay, under the other tag
            engine.capture("tag", BENCH_BASE, KEPT_BASE, quiet=True)
            engine.remove_image(BENCH_BASE)
        found: dict[str, Any] = {"base_kept": had_base}
        found["images_before"] = float(len(engine.capture(*listing, quiet=True).split()) - had_base)
        found["volumes_before"] = float(len(site_volumes()))
        before = set(engine.capture(*listing, quiet=True).split())
        return _docker_prefetch_sides(engine, listing, before, found, tmp)
    finally:
        put_back_base(engine)


BENCH_BASE, KEPT_BASE = "tfbisect-base:bullseye", "tfbisect-bench-kept-base:bullseye"


def put_back_base(engine: Any) -> None:
    """The machine's base, set aside under KEPT_BASE, tagged as itself again (in place of one a
    side built and left)."""
    if engine.image_id(KEPT_BASE) is None:
        return
    if engine.image_id(BENCH_BASE) is not None:
        engine.remove_image(BENCH_BASE)
    engine.capture("tag", KEPT_BASE, BENCH_BASE, quiet=True)
    engine.remove_image(KEPT_BASE)


def _docker_prefetch_sides(
    engine: Any, listing: list[str], before: set[str], found: dict[str, Any], tmp: Path
) -> dict[str, Any]:
    before |= set(
        engine.capture("images", "--quiet", "--no-trunc", "--filter", "dangling=true", quiet=True).split()
    )
    good, bad = DOCKER_PREFETCH_RANGE
    for prefetch in ("0", "2"):
        folder = tmp / f"docker-prefetch{prefetch}"
        command = [*tfbisect(folder, folder / "cache"), "bisect", "--good", good, "--bad", bad]
        command += ["--probe", "gradient_eager_plain", "--backend", "auto", "--jobs", "1"]
        command += ["--prefetch", prefetch, "--no-narrow"]
        start = time.monotonic()
        volumes = site_volumes()
        try:
            done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=3600)
            found[f"s_{prefetch}"] = time.monotonic() - start
        finally:
            remove_site_volumes(volumes)
            _remove_images_since(engine, listing, before)
        log = max((folder / "bisect").glob("*.json"), key=lambda p: p.stat().st_mtime)
        summary = jsonread.read(log, max_bytes=None)
        found[f"runs_{prefetch}"] = summary["summary"]["runs"]
        found[f"answer_{prefetch}"] = f"{summary.get('last_old')} -> {summary.get('first_new')}"
        found[f"time_{prefetch}"] = next(
            (line for line in done.stdout.splitlines() if line.startswith("Time: ")), "(no time line)"
        )
    found["with_over_without"] = found["s_2"] / found["s_0"]
    return found


def _remove_images_since(engine: Any, listing: list[str], before: set[str]) -> None:
    """Every tfbisect image made since `before`, children before the images they are built on, and
    the untagged ones: a prefetch's build cancelled when the search ends leaves its last layer."""
    dangling = ["images", "--quiet", "--no-trunc", "--filter", "dangling=true"]
    for _ in range(4):
        made = engine.capture(*listing, quiet=True).split() + engine.capture(*dangling, quiet=True).split()
        left = set(made) - before
        for created in left:
            engine.remove_image(created)
        if not left:
            return


COLD_RELEASE = ("2.9.3", "3.9")


def _timed_runs(runner: Any, spec: Any, scenario: Any, times: int) -> list[float]:
    """Wall seconds of `times` runs of the scenario (the first one prepares its environment)."""
    seconds = []
    for _ in range(times):
        start = time.monotonic()
        record = runner.run(spec, scenario).record
        seconds.append(time.monotonic() - start)
        if record.document is None:
            raise SystemExit(
                f"the bench's run of TF {spec.tf_version} ({spec.backend}) failed: {record.outcome}"
            )
    return seconds


def cold_side(tmp: Path, name: str, backend: str) -> dict[str, Any]:
    """One backend's environment of the cold release built and run from empty caches in `tmp/name`
    (its own tfbisect cache, uv cache and the wheel cache beside it), then run warm 3 times."""
    from tfbisect.core.progress import Progress
    from tfbisect.core.scenario import find
    from tfbisect.core.spec import Flavour
    from tfbisect.core.timing import SPENT, Phase
    from tfbisect.runs.runner import Runner, Settings

    version, python = COLD_RELEASE
    os.environ["TFBISECT_UV_CACHE"] = str(tmp / name / "uv")
    cache = tmp / name / "cache"
    runner = Runner(
        catalogue.load_snapshot(), Settings(tmp / name / "reports", cache, force=True), Progress(quiet=True)
    )
    scenario = find("gradient_mismatch")
    spec = runner.spec_for(version, python=python, flavour=Flavour.CPU, backends=(backend,))
    environment: Any = runner.environment(backend)
    if backend == DockerBackend.name:
        # The base and its runtime image are shared by every release: not part of a release's cold cost.
        from tfbisect.envs.backend_docker import dockerfile_bytes
        from tfbisect.envs.docker_sites import plan_runtime

        base = environment.bases.get(python, None)
        environment.ensure_plan(plan_runtime(spec, dockerfile_bytes(), base), base, tmp / name / "logs")
    before = SPENT.totals()
    cold = _timed_runs(runner, spec, scenario, 1)[0]
    spent = SPENT.since(before)  # where the cold run's time went: fetching, building, the rest running
    warm = sorted(_timed_runs(runner, spec, scenario, 3))[1]
    return {
        "cold_s": cold,
        "download_s": spent[Phase.DOWNLOAD],
        "build_s": spent[Phase.BUILD],
        "warm_s": warm,
        "fetched": environment.wheels.fetched_bytes,
        "cache": cache,
        "runner": runner,
        "spec": spec,
    }


def cold_ratios(tmp: Path) -> dict[str, float]:
    """The cold release as an image and as a venv, side by side from empty caches, and the bytes
    fetched when one cache builds both (the image first, then a venv with a fresh uv cache)."""
    from tfbisect.envs.backend_venv import VenvBackend

    # Cold means cold: a site volume of the release left from before is filled again.
    version, python = COLD_RELEASE
    stale = [v for v in site_volumes() if v.startswith(f"tfbisect-site-tf{version}-py{python}-cpu-")]
    if stale:
        subprocess.run(
            ["docker", *LOCAL, "volume", "rm", "--force", *stale], capture_output=True, check=False
        )
    before, volumes = tagged_images(), site_volumes()
    try:
        image = cold_side(tmp, "image", DockerBackend.name)
        venv = cold_side(tmp, "venv", VenvBackend.name)
        # The image's cache builds the venv too: it must fetch nothing the image build fetched.
        with private_wheels(tmp / "image" / "uv"):
            runner = image["runner"]
            spec = runner.spec_for(COLD_RELEASE[0], python=COLD_RELEASE[1], backends=(VenvBackend.name,))
            both = runner.environment(VenvBackend.name)
            both.prepare(spec, runner.lock_for(spec), tmp / "image" / "reports" / "logs")
        # The image side's wheel cache (beside its own uv cache), which the venv built from too.
        unique = sum(p.stat().st_size for p in both.wheels.root.glob("py*/*.whl"))
        fetched = image["fetched"] + both.wheels.fetched_bytes
    finally:
        # What it made: the release's site volume and the runtime image (the shared base stays).
        remove_site_volumes(volumes)
        made = sorted(tagged_images() - before)
        if made:
            subprocess.run(
                ["docker", *LOCAL, "image", "rm", "--force", *made], capture_output=True, check=False
            )
    return {
        "image_cold_s": image["cold_s"],
        "image_download_s": image["download_s"],
        "image_build_s": image["build_s"],
        "venv_download_s": venv["download_s"],
        "venv_build_s": venv["build_s"],
        "venv_cold_s": venv["cold_s"],
        "cold_ratio": image["cold_s"] / venv["cold_s"],
        "image_warm_s": image["warm_s"],
        "venv_warm_s": venv["warm_s"],
        "warm_ratio": image["warm_s"] / venv["warm_s"],
        "fetched_over_unique": fetched / max(unique, 1),
    }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfbisect.bench", description=__doc__)
    parser.add_argument("--real", action="store_true", help="also bisect real TF twice (minutes)")
    parser.add_argument("--reports", type=Path, help="where the real runs keep results (default: a temp dir)")
    parser.add_argument(
        "--docker", action="store_true", help="also build two versions' images (needs an engine)"
    )
    parser.add_argument("--swarm", action="store_true", help="also measure a 2-node local swarm (root)")
    parser.add_argument(
        "--prefetch", action="store_true", help="also bisect cold twice, with and without prefetch"
    )
    parser.add_argument(
        "--docker-prefetch",
        action="store_true",
        help="also bisect the flagship cold with containers twice, with and without prefetch (needs an engine)",
    )
    parser.add_argument(
        "--narrow", action="store_true", help="also narrow the flagship's change point for real (minutes)"
    )
    parser.add_argument(
        "--proof",
        action="store_true",
        help="also bisect the flagship with narrowing and proof twice: the repeat's runs and time (minutes)",
    )
    parser.add_argument(
        "--cold", action="store_true", help="also build one release cold as an image and as a venv (minutes)"
    )
    parser.add_argument(
        "--cuda", action="store_true", help="also build three CUDA images on each of two CUDA sets (~15 GB)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    failed = search_promises()
    # Each measurement prints what it found and says whether a promise is broken, in this order.
    optional: list[tuple[bool, Callable[[], bool]]] = [
        (args.narrow, narrow_promise),
        (args.real, lambda: repeat_promise(args.reports)),
        (args.proof, lambda: proven_repeat_promise(args.reports)),
        (args.docker, docker_promise),
        (args.swarm, swarm_promise),
        (args.prefetch, prefetch_promise),
        (args.docker_prefetch, docker_prefetch_promise),
        (args.cold, cold_promise),
        (args.cuda, cuda_promise),
    ]
    for wanted, measure in optional:
        if wanted:
            failed |= measure()
    print("FAILED: a promise is broken" if failed else "all promises hold")
    return 1 if failed else 0


def search_promises() -> bool:
    """The search's and the narrowing's bounds over the catalogue; True when one is broken."""
    size = len(catalogue.load_snapshot().releases())
    failed = False
    print(f"search over the catalogue's {size} releases, every single change point:")
    print("  jobs  worst runs  runs/bound  worst rounds  rounds/bound  runs/sweep")
    for jobs in (1, 2, 4, 8):
        r = search_ratios(size, jobs)
        print(
            f"  {jobs:>4}  {r['worst_runs']:>10}  {r['runs_over_bound']:>10.2f}  {r['worst_rounds']:>12}"
            f"  {r['rounds_over_bound']:>12.2f}  {r['mean_runs_over_sweep']:>10.3f}"
        )
        failed |= (r["runs_over_bound"] > 1.0 if jobs == 1 else False) or r["rounds_over_bound"] > 1.0
    worst_narrow = max(narrow_search_ratio(k)["runs_over_bound"] for k in range(1, 65))
    print(
        f"narrowing over k = 1..64 candidates, every change point: worst runs / (ceil(log2 k) + 1) = {worst_narrow:.2f}"
    )
    return failed or worst_narrow > 1.0


def narrow_promise() -> bool:
    with tempfile.TemporaryDirectory(prefix="tfbisect-bench-narrow-") as tmp:
        r = real_narrowing(Path(tmp))
    print("narrowing the flagship (TF 2.3.4..2.4.0, venvs): traced runs of gradient_eager_plain alone")
    print(
        f"  traced: {r['failing_old_s']:.1f}s (2.3.4), {r['failing_new_s']:.1f}s (2.4.0); untraced: {r['untraced_s']:.1f}s; "
        f"ratio {r['traced_over_untraced']:.2f} (target <= 3)\n"
        f"  sources read, diffed and ranked in {r['diff_s']:.1f}s (target < 60s)"
    )
    return r["traced_over_untraced"] > 3 or r["diff_s"] >= 60


def repeat_promise(reports: Path | None) -> bool:
    with tempfile.TemporaryDirectory(prefix="tfbisect-bench-") as tmp:
        r = real_repeat(reports or Path(tmp))
    print("repeat of a finished bisection (TF 2.3.0..2.4.1, real venvs):")
    print(
        f"  first: {r['first_runs']:.0f} runs; repeat: {r['repeat_runs']:.0f} runs, "
        f"{r['repeat_reused']:.0f} reused; repeat time / first time = {r['repeat_time_over_first']:.3f}"
    )
    return r["repeat_runs"] != 0


def proven_repeat_promise(reports: Path | None) -> bool:
    with tempfile.TemporaryDirectory(prefix="tfbisect-bench-proof-") as tmp:
        r = real_repeat_proven(reports or Path(tmp))
    print(
        "repeat of a finished bisection with its narrowing and proof (the flagship, TF 2.3.0..2.4.1, venvs):"
    )
    print(
        f"  first: {r['first_runs']:.0f} runs in {r['first_s']:.1f}s; repeat: {r['repeat_runs']:.0f} runs "
        f"(target 0; {r['repeat_traced_reused']:.0f} traced runs reused) in {r['repeat_s']:.1f}s (target < 5s)\n"
        f"  proof: {r['proof_runs'] - r['proof_shrink_runs']:.0f} patched runs over {r['proof_units']:.0f} units "
        f"tried = {r['proof_runs_over_units']:.2f}, then {r['proof_shrink_runs']:.0f} shrinking the patch; "
        f"one hard-linked venv copy: {r['copy_s']:.2f}s (about 1s promised)"
    )
    return r["repeat_runs"] != 0 or r["repeat_s"] >= 5


@contextlib.contextmanager
def private_wheels(folder: Path) -> Iterator[None]:
    """A uv cache of its own, and so a wheel cache of its own (envs/cache.py: the machine's sits
    beside the uv cache), for what this process builds meanwhile: "fresh" means fresh."""
    saved = os.environ.get("TFBISECT_UV_CACHE")
    os.environ["TFBISECT_UV_CACHE"] = str(folder)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TFBISECT_UV_CACHE", None)
        else:
            os.environ["TFBISECT_UV_CACHE"] = saved


def docker_promise() -> bool:
    with (
        tempfile.TemporaryDirectory(prefix="tfbisect-bench-docker-") as tmp,
        private_wheels(Path(tmp) / "uv"),
    ):
        r = docker_ratios(Path(tmp) / "cache", Path(tmp) / "reports")
    print("docker images (TF 2.20.0 and 2.21.0 on one Python 3.11 base, fresh wheel cache):")
    print(
        f"  rebuild of an unchanged image: {r['rebuild_unchanged_s']:.2f}s (promise: < 5s, no layer rebuilt)\n"
        f"  layers shared by the two versions: {r['shared_layers']:.0f} of {r['layers']:.0f}\n"
        f"  bytes fetched / bytes of unique wheels: {r['fetched_over_unique']:.3f} (promise: 1.0)\n"
        f"  container overhead / scenario time: {r['container_overhead']:.3f}"
    )
    return (
        r["rebuild_unchanged_s"] >= 5 or abs(r["fetched_over_unique"] - 1.0) > 1e-9 or r["shared_layers"] < 2
    )


def swarm_promise() -> bool:
    with tempfile.TemporaryDirectory(prefix="tfbisect-bench-swarm-") as tmp:
        r = swarm_ratios(Path(tmp))
    print("swarm (2 local nodes; TF 2.21.0's image already on them):")
    print(
        f"  a run: {r['swarm_s']:.1f}s on the swarm, {r['docker_s']:.1f}s with local Docker: "
        f"ratio {r['swarm_over_docker']:.2f} (target <= 1.3)\n"
        f"  a 4-cell sweep: {r['nodes_used']:.0f} nodes used, imbalance {r['imbalance']:.0f} cell(s) (promise: 2, <= 1)"
    )
    if r["cells_without_node"]:
        print(
            f"  FINDING: {r['cells_without_node']:.0f} cell(s) of the sweep ran on no node (stored as a "
            "skip: see their records' failure, e.g. a node out of disk)"
        )
    broken = r["swarm_over_docker"] > 1.3 or r["nodes_used"] != 2 or r["imbalance"] > 1
    return broken or r["cells_without_node"] > 0


def prefetch_promise() -> bool:
    with tempfile.TemporaryDirectory(prefix="tfbisect-bench-prefetch-") as tmp:
        r = prefetch_ratio(Path(tmp))
    print("prefetch (a cold bisection of TF 2.2.0..2.5.0 in venvs, fresh caches each):")
    print(
        f"  without: {r['without_s']:.0f}s ({r['runs_without']:.0f} runs); with --prefetch 2: {r['with_s']:.0f}s "
        f"({r['runs_with']:.0f} runs); ratio {r['with_over_without']:.2f} (target <= 0.7)"
    )
    return r["with_over_without"] > 0.7


def docker_prefetch_promise() -> bool:
    with tempfile.TemporaryDirectory(prefix="tfbisect-bench-docker-prefetch-") as tmp:
        r = docker_prefetch_ratio(Path(tmp))
    good, bad = DOCKER_PREFETCH_RANGE
    print(
        f"prefetch with containers (the flagship, TF {good}..{bad}, --backend auto: 2.5+ in containers; "
        "no tfbisect image and a fresh cache each):"
    )
    print(
        f"  without: {r['s_0']:.0f}s ({r['runs_0']:.0f} runs, {r['answer_0']}); with --prefetch 2: "
        f"{r['s_2']:.0f}s ({r['runs_2']:.0f} runs, {r['answer_2']}); ratio {r['with_over_without']:.2f} "
        "(target <= 0.7)\n"
        f"  without: {r['time_0']}\n  with:    {r['time_2']}"
    )
    print(
        "  the Debian bullseye base: built inside each side"
        + (" (the machine's own set aside meanwhile, and put back)" if r["base_kept"] else "")
    )
    if r["images_before"] or r["volumes_before"]:
        print(
            f"  NOTE: {r['images_before']:.0f} tfbisect images and {r['volumes_before']:.0f} site volumes "
            "were there before (kept): a release among them is warm on both sides"
        )
    return bool(r["with_over_without"] > 0.7)


def cold_promise() -> bool:
    with tempfile.TemporaryDirectory(prefix="tfbisect-bench-cold-") as tmp:
        r = cold_ratios(Path(tmp))
    version, python = COLD_RELEASE
    print(f"a cold release (TF {version}, Python {python}, CPU), empty caches for both sides:")
    print(
        f"  container (its site volume filled) and run: {r['image_cold_s']:.1f}s; "
        f"venv installed and run: {r['venv_cold_s']:.1f}s; "
        f"ratio {r['cold_ratio']:.2f} (target <= 1.5)\n"
        f"    container: {r['image_download_s']:.1f}s fetching wheels, {r['image_build_s']:.1f}s filling; "
        f"venv: {r['venv_download_s']:.1f}s fetching wheels, {r['venv_build_s']:.1f}s installing\n"
        f"  warm runs (median of 3): container {r['image_warm_s']:.1f}s, venv {r['venv_warm_s']:.1f}s; "
        f"ratio {r['warm_ratio']:.2f} (target <= 1.2)\n"
        f"  bytes fetched for the release as an image and a venv / unique wheel bytes: "
        f"{r['fetched_over_unique']:.2f} (target 1.00)"
    )
    return r["cold_ratio"] > 1.5 or r["warm_ratio"] > 1.2 or abs(r["fetched_over_unique"] - 1.0) > 1e-9


def cuda_promise() -> bool:
    failed = False
    for title, versions in CUDA_TRIPLES.items():
        with tempfile.TemporaryDirectory(prefix="tfbisect-bench-cuda-") as tmp:
            r = cuda_sharing(Path(tmp) / "cache", Path(tmp) / "reports", versions)
        print(f"CUDA images on one NVIDIA image, Python 3.11: {title}")
        print(
            f"  one image: {r['image_bytes'] / 1e9:.2f} GB, of which its NVIDIA image {r['nvidia_bytes'] / 1e9:.2f} GB\n"
            f"  disk of the three / disk of one: {r['three_over_one']:.2f} "
            f"(target <= 1.5: {'met' if r['three_over_one'] <= 1.5 else 'not met'}; "
            f"with the NVIDIA image stored once: {r['shared_once_over_one']:.2f}; "
            f"unshared: {r['unshared_three_over_one']:.2f})"
        )
        # The promise: the NVIDIA layers are stored once (TF's own size sets the floor).
        failed |= r["three_over_one"] > r["shared_once_over_one"] + 0.01
    return failed


if __name__ == "__main__":
    sys.exit(main())
