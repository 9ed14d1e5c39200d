"""The fault table: hostile scenarios, signals and loopback servers against the real `tfbisect` CLI.

    python tests/faults/table.py [--only SUBSTRING] [--no-docker] [-j N]

Every case drives `python -m tfbisect` as a subprocess (from the repository root) with locks
that install nothing, so the venv backend builds one empty venv for the whole table (and the
Docker backend one bare image): no TensorFlow is needed.  It prints one line per case,
`PASS|FAIL  <category>/<case>  <detail>` (SKIP where a case cannot run here, e.g. mknod without
root; skips are not counted), then exactly one totals line:

    faults: cases N, passed N, containers leaked N, processes leaked N, temporary folders leaked N,
    results lost N, secrets leaked N

(on one line) and exits 0 only when every case passed and the five counts are 0.  The counts are
global: containers named `tfbisect-*` that mount the table's folders and outlive their run,
processes of a scenario (each carries the case's marker in its command line or environment) that
outlive their run, tfbisect's temporary folders (`tfbisect-*`) left in a case's TMPDIR when the
case ends, finished results missing from the store after an interruption or a run that
said it stored one, and the table's secrets (a file a scenario links to, the GitHub token) found
in any output of tfbisect, any file under the table's folder or any request a server should
not have had.  Everything the table makes (folders, processes, containers, images) is removed
at the end, also on failure and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.server
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unicodedata
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
PACKAGE = ROOT / "bisect" / "tfbisect"
TF_NEW, TF_OLD, PY = "2.21.0", "2.20.0", "3.11"
RUN_CODES = {0, 1, 70, 124, 125}
TOKEN_VARIABLES = ("TFBISECT_GITHUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")
# The docker scenarios get no environment: they link to this fixed host path and mark their
# children with a fixed marker.
DOCKER_SECRET_PATH = Path("/tmp/tfbisect-fault-secret.json")
DOCKER_NEEDLES = (b"tfbisect-fault-docker", b"/scenario/docker_")
RECORD_MAX = 256 * 1024
LOG_MAX = 10 * 1024 * 1024
REPORT_MAX = 5 * 1024 * 1024
OUTPUT_READ_MAX = 64 * 1024 * 1024
# Run under this address-space limit, a tfbisect that reads /dev/zero or a 100 GB file whole fails
# with MemoryError instead of taking the machine's memory.
MEMORY_LIMIT = 6 << 30
WITH_MEMORY_LIMIT = (
    f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT})); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)
LOCK_TEXT = """# tfbisect lock (fault table: installs nothing)
# tensorflow: {version}
# python: {python}
# flavour: {flavour}
# keras: default
# requirements: none
# exclude-newer: 2026-01-01T00:00:00Z
"""
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x80-\x9f]")
FRAME = re.compile(r'File "(?P<path>[^"\n]+)", line \d+')
CUT_MARK = re.compile(rb"(?i)\b(cut|omitted|truncated|elided|skipped|dropped|removed)\b")


# ---------------------------------------------------------------------------------- plumbing
class Skip(Exception):
    """The case cannot run here (printed as SKIP, not counted)."""


@dataclass(frozen=True)
class Case:
    name: str
    phase: str  # setup, parallel, store, serial, docker
    func: Callable[[Ctx], str]


CASES: list[Case] = []
PHASES = ("setup", "parallel", "store", "serial", "docker")


def case(name: str, phase: str = "parallel") -> Callable[[Callable[[Ctx], str]], Callable[[Ctx], str]]:
    def register(func: Callable[[Ctx], str]) -> Callable[[Ctx], str]:
        CASES.append(Case(name, phase, func))
        return func

    return register


@dataclass
class Call:
    argv: list[str]
    rc: int | None  # None: it did not finish within the table's wall limit and was killed
    out: str
    err: str
    raw: bytes
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def hung(self) -> bool:
        return self.rc is None


@dataclass
class Running:
    popen: subprocess.Popen[bytes]
    argv: list[str]
    out_path: Path
    err_path: Path
    started: float


@dataclass
class Result:
    name: str
    status: str
    detail: str
    seconds: float


def clean(text: str, limit: int = 220) -> str:
    """One printable line: control characters shown escaped, newlines as ' | '."""
    text = " | ".join(part.strip() for part in text.strip().splitlines() if part.strip())
    text = CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def last_line(call: Call) -> str:
    for stream in (call.err, call.out):
        lines = [line for line in stream.splitlines() if line.strip()]
        if lines:
            return clean(lines[-1], 160)
    return "no output"


def tfbisect_traceback(text: str) -> str | None:
    """The exception line of a Python traceback raised inside tfbisect itself, if there is one."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.lstrip().startswith(("Traceback (most recent call last)", "Exception in thread")):
            continue
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j].startswith((" ", "\t"))):
            j += 1
        for match in FRAME.finditer("\n".join(lines[i:j])):
            path = match.group("path")
            if path.startswith(str(PACKAGE)) or "/site-packages/tfbisect/" in path:
                return clean(lines[j] if j < len(lines) else line, 160)
    return None


def read_capped(path: Path, limit: int = OUTPUT_READ_MAX) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit)
    except OSError:
        return b""


def file_contains(path: Path, needles: Sequence[bytes]) -> bool:
    """Whether a regular file holds any needle (big files: the first and last 150 MiB)."""
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            return False
        overlap = max(len(n) for n in needles)
        windows = [(0, info.st_size)]
        if info.st_size > 300 << 20:
            windows = [(0, 150 << 20), (info.st_size - (150 << 20), 150 << 20)]
        with open(path, "rb") as handle:
            for start, length in windows:
                handle.seek(start)
                carry, left = b"", length
                while left > 0:
                    chunk = handle.read(min(8 << 20, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    window = carry + chunk
                    if any(n in window for n in needles):
                        return True
                    carry = window[-overlap:]
    except OSError:
        return False
    return False


def scan_processes(needles: Sequence[bytes]) -> list[tuple[int, str]]:
    """Live processes whose command line or environment holds a needle (zombies excluded)."""
    found = []
    me = os.getpid()
    for base in Path("/proc").iterdir():
        entry = base.name
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            state = (base / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            command = (base / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if state in (b"Z", b"X"):
            continue
        try:
            environ = (base / "environ").read_bytes()
        except OSError:
            environ = b""
        if any(n in command or n in environ for n in needles):
            found.append((int(entry), command.replace(b"\0", b" ").decode("utf-8", "replace")[:100]))
    return found


def kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def wait_for(predicate: Callable[[], bool], seconds: float, running: Running | None = None) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        if running is not None and running.popen.poll() is not None:
            return predicate()
        time.sleep(0.1)
    return predicate()


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=timeout)


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return docker("info", "--format", "{{.ServerVersion}}", timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def containers_mounting(paths: Sequence[Path]) -> list[str]:
    """Containers named tfbisect-* that bind-mount something under one of `paths`."""
    listed = docker("ps", "-a", "--filter", "name=tfbisect-", "--format", "{{.Names}}")
    found = []
    for name in listed.stdout.split():
        mounts = docker("inspect", "--format", '{{range .Mounts}}{{.Source}}{{"\\n"}}{{end}}', name)
        sources = mounts.stdout.split("\n")
        if any(s.startswith(str(p)) for s in sources if s for p in paths):
            found.append(name)
    return found


def images() -> set[str]:
    listed = docker("images", "--format", "{{.Repository}}:{{.Tag}}")
    return {line for line in listed.stdout.split() if line.startswith("tfbisect")}


def records(reports: Path, stem: str) -> list[tuple[Path, dict[str, Any] | None]]:
    """Stored records of one scenario (None where the file is too big or not a JSON object)."""
    found: list[tuple[Path, dict[str, Any] | None]] = []
    for path in sorted((reports / "results" / stem).glob("*/*.json")):
        data: Any = None
        with contextlib.suppress(OSError, ValueError):
            if path.is_file() and path.stat().st_size <= OUTPUT_READ_MAX:
                data = json.loads(path.read_text(encoding="utf-8"))
        found.append((path, data if isinstance(data, dict) else None))
    return found


def record_of(reports: Path, stem: str, version: str | None = None) -> dict[str, Any] | None:
    for _, data in reversed(records(reports, stem)):
        if data is not None and (version is None or (data.get("spec") or {}).get("tf_version") == version):
            return dict(data)
    return None


def failure_text(record: dict[str, Any]) -> str:
    failure = record.get("failure")
    if isinstance(failure, dict):
        return f"{failure.get('type', '')}: {failure.get('message', '')}"
    return ""


def scenario_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def valid_document(scenario: Path, summary: str) -> str:
    return json.dumps(
        {
            "schema_version": 1,
            "scenario": {"name": scenario.stem, "sha256": scenario_sha(scenario)},
            "environment": {"python": "3.11"},
            "probes": [],
            "verdict": {"outcome": "not_reproduced", "summary": summary, "disagreements": []},
            "timings": {},
        }
    )


# ------------------------------------------------------------------------------ the table
class Table:
    def __init__(self, jobs: int, use_docker: bool) -> None:
        self.id = uuid.uuid4().hex[:8]
        self.jobs = jobs
        self.docker = use_docker
        self.root = Path(tempfile.mkdtemp(prefix=f"tfbisect-faults-{self.id}-"))
        self.secret = "FaultSecret" + secrets.token_hex(12)
        self.token = "ghpFaultToken" + secrets.token_hex(12)
        self.secret_dir = self.root / "secret"
        self.secret_file = self.secret_dir / "secret.json"
        self.calls_dir = self.root / "calls"
        self.locks = self.root / "locks"
        self.cache = self.root / "cache"
        self.shared = self.root / "shared" / "reports"
        self.docker_reports = self.root / "docker" / "reports"
        for folder in (self.secret_dir, self.calls_dir, self.locks, self.cache, self.shared.parent):
            folder.mkdir(parents=True)
        for version in (TF_OLD, TF_NEW):
            for flavour in ("cpu", "cuda"):
                (self.locks / f"tf{version}-py{PY}-{flavour}.txt").write_text(
                    LOCK_TEXT.format(version=version, python=PY, flavour=flavour)
                )
        # A valid document naming the symlinking scenario: a driver that follows the link reads
        # a "not reproduced" verdict whose summary is the secret.
        self.secret_file.write_text(
            valid_document(SCENARIOS / "fault_result_symlink_secret.py", self.secret), encoding="utf-8"
        )
        self.base_env = {k: v for k, v in os.environ.items() if k not in TOKEN_VARIABLES}
        for name in ("TFBISECT_MEMORY", "TFBISECT_SCENARIOS", "PYTHONHOME", "VIRTUAL_ENV"):
            self.base_env.pop(name, None)
        self.base_env.update(
            TFBISECT_LOCKS=str(self.locks),
            TFBISECT_CACHE=str(self.cache),
            PYTHONPATH=str(ROOT / "bisect"),
            PYTHONDONTWRITEBYTECODE="1",
            FAULT_TABLE=self.id,
        )
        self.lock = threading.Lock()
        self.counts = {"containers": 0, "processes": 0, "tmp": 0, "lost": 0}
        self.leaks: set[str] = set()  # where a secret was found, each place once
        self.active: set[subprocess.Popen[bytes]] = set()
        self.call_number = 0
        self.case_number = 0
        self.images_before: set[str] = set()
        self.containers_before: set[str] = set()
        self.image_tags: set[str] = set()
        self.docker_broken: str | None = None
        self.seeded: dict[str, threading.Lock] = {}
        self.stopping = False

    # -- counters ------------------------------------------------------------------------
    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n

    def leak(self, where: str) -> None:
        with self.lock:
            self.leaks.add(where)

    def next_call(self) -> int:
        with self.lock:
            self.call_number += 1
            return self.call_number

    def next_case(self) -> int:
        with self.lock:
            self.case_number += 1
            return self.case_number

    @property
    def needles(self) -> tuple[bytes, ...]:
        return (self.secret.encode(), self.token.encode())

    # -- processes -----------------------------------------------------------------------
    def track(self, popen: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.active.add(popen)

    def untrack(self, popen: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.active.discard(popen)

    def kill_active(self) -> None:
        with self.lock:
            running = list(self.active)
        for popen in running:
            with contextlib.suppress(OSError):
                os.killpg(popen.pid, signal.SIGKILL)

    # -- the end -------------------------------------------------------------------------
    def sweep_leftovers(self) -> None:
        """Count and remove what outlived the cases: processes, containers, secrets in files."""
        needles: tuple[bytes, ...] = (f"tfbisect-fault-{self.id}".encode(), f"FAULT_TABLE={self.id}".encode())
        if self.docker:
            needles += DOCKER_NEEDLES
        found = scan_processes(needles)
        if found:
            self.count("processes", len(found))
            kill_pids([pid for pid, _ in found])
        if self.docker:
            left = containers_mounting([self.root, SCENARIOS])
            if left:
                self.count("containers", len(left))
                docker("rm", "--force", *left)
        for path in self.root.rglob("*"):
            if self.secret_dir in path.parents or self.calls_dir in path.parents:
                continue
            if file_contains(path, self.needles):
                self.leak(f"file:{path.relative_to(self.root)}")

    def remove_build_leftovers(self) -> None:
        """A failed classic `docker build` keeps the container of the failing step: remove those of
        builds from the table's locks (their environment names the lock's sha256)."""
        ours = [f"LOCK_SHA={hashlib.sha256(p.read_bytes()).hexdigest()}" for p in self.locks.glob("*.txt")]
        exited = docker("ps", "-a", "--filter", "status=exited", "--format", "{{.ID}}").stdout.split()
        for container in set(exited) - self.containers_before:
            env = docker("inspect", "--format", "{{json .Config.Env}}", container).stdout
            if any(lock in env for lock in ours):
                docker("rm", container)

    def cleanup(self) -> None:
        self.kill_active()
        needles = (f"tfbisect-fault-{self.id}".encode(), f"FAULT_TABLE={self.id}".encode())
        kill_pids([pid for pid, _ in scan_processes(needles + (DOCKER_NEEDLES if self.docker else ()))])
        if self.docker:
            with contextlib.suppress(Exception):
                left = containers_mounting([self.root, SCENARIOS])
                if left:
                    docker("rm", "--force", *left)
            with contextlib.suppress(Exception):
                self.remove_build_leftovers()
            with contextlib.suppress(Exception):
                made = {t for t in self.image_tags if t not in self.images_before}
                made |= {t for t in images() if t.startswith("tfbisect-base:")} - self.images_before
                for tag in sorted(made):
                    docker("image", "rm", "--force", tag, timeout=300)
        with contextlib.suppress(OSError):
            if DOCKER_SECRET_PATH.is_file() and self.secret in DOCKER_SECRET_PATH.read_text():
                DOCKER_SECRET_PATH.unlink()
        for leftover in Path("/tmp").glob("tfbisect-fault-probe-escape*"):
            with contextlib.suppress(OSError):
                leftover.unlink()

        def writable(func: Callable[..., Any], path: str, _: Any) -> None:
            with contextlib.suppress(OSError):
                Path(path).parent.chmod(0o755)
                func(path)

        shutil.rmtree(self.root, onerror=writable)


# ------------------------------------------------------------------------------ one case
class Ctx:
    """One case's folder, marker and calls; `expect` collects what went wrong."""

    def __init__(self, table: Table, name: str) -> None:
        self.table = table
        self.name = name
        self.index = table.next_case()
        self.dir = table.root / "cases" / name.replace("/", "_")
        self.tmp = self.dir / "tmp"
        self.tmp.mkdir(parents=True)
        self.reports = self.dir / "reports"
        self.out = self.dir / "out"
        self.marker = f"tfbisect-fault-{table.id}-{self.index}"
        self.problems: list[str] = []
        self.stems: set[str] = set()

    def expect(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(self.table.base_env, TMPDIR=str(self.tmp), FAULT_MARKER=self.marker)
        env.update(extra or {})
        return env

    def start(
        self,
        *args: str,
        reports: Path | None = None,
        env: dict[str, str] | None = None,
        limit_memory: bool = False,
        command: list[str] | None = None,
    ) -> Running:
        for i, word in enumerate(args[:-1]):
            if word == "--scenario":
                self.stems.add(Path(args[i + 1]).stem)
        argv = command or [
            sys.executable,
            "-m",
            "tfbisect",
            "--reports",
            str(reports or self.reports),
            "--cache",
            str(self.table.cache),
            *args,
        ]
        if limit_memory:
            argv = [sys.executable, "-c", WITH_MEMORY_LIMIT, *argv]
        number = self.table.next_call()
        out_path = self.table.calls_dir / f"{number}.out"
        err_path = self.table.calls_dir / f"{number}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env if env is not None and "FAULT_MARKER" in env else self.env(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # the table's Ctrl-C stays with the table
            )
        self.table.track(popen)
        return Running(popen, argv, out_path, err_path, time.monotonic())

    def finish(self, running: Running, wall: float = 120) -> Call:
        popen = running.popen
        try:
            rc: int | None = popen.wait(timeout=max(0.1, wall - (time.monotonic() - running.started)))
        except subprocess.TimeoutExpired:
            rc = None
            with contextlib.suppress(OSError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
            self.problems.append(f"hung: killed after {wall:.0f}s")
        self.table.untrack(popen)
        out, err = read_capped(running.out_path), read_capped(running.err_path)
        raw = out + err
        call = Call(
            running.argv,
            rc,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
            raw,
            time.monotonic() - running.started,
        )
        if any(n in raw for n in self.table.needles):
            self.table.leak(f"output:{running.out_path.stem}")
            self.problems.append("a secret is in tfbisect's output")
        if self.table.docker:
            self.table.image_tags.update(re.findall(r"\btfbisect:tf[\w.\-]+", call.text))
        return call

    def tfb(
        self,
        *args: str,
        reports: Path | None = None,
        env: dict[str, str] | None = None,
        wall: float = 120,
        limit_memory: bool = False,
    ) -> Call:
        return self.finish(self.start(*args, reports=reports, env=env, limit_memory=limit_memory), wall)

    def shell(self, line: str, env: dict[str, str], wall: float = 180) -> Call:
        """A command line as tfbisect printed it, run from the repository root with the same env."""
        return self.finish(self.start(command=["bash", "-c", line], env=env), wall)

    def run(
        self,
        scenario: Path,
        *extra: str,
        reports: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        wall: float = 120,
        backend: str = "venv",
        limit_memory: bool = False,
    ) -> Call:
        """`tfbisect run` of TF 2.21.0 on Python 3.11; a run exit without a stored result is lost."""
        reports = reports or self.reports
        args = [
            "run",
            "--tf",
            TF_NEW,
            "--python",
            PY,
            "--scenario",
            str(scenario),
            "--timeout",
            f"{timeout:g}",
        ]
        if backend != "venv":
            args += ["--backend", backend]
        call = self.tfb(*args, *extra, reports=reports, env=env, wall=wall, limit_memory=limit_memory)
        crashed = tfbisect_traceback(call.text) is not None
        if call.rc in RUN_CODES and not crashed and not records(reports, scenario.stem):
            self.table.count("lost")
            self.problems.append(f"exit {call.rc} but no stored result")
        return call

    # -- common checks ---------------------------------------------------------------------
    def no_traceback(self, call: Call) -> None:
        found = tfbisect_traceback(call.text)
        self.expect(found is None, f"tfbisect traceback: {found}")

    def no_controls(self, call: Call, what: str) -> None:
        found = sorted({ascii(c)[1:-1] for c in CONTROL.findall(call.text)})
        self.expect(not found, f"{what}: raw control characters reach the terminal ({' '.join(found[:6])})")

    def rc(self, call: Call, allowed: Sequence[int], what: str = "") -> bool:
        if call.hung:
            return False
        return self.expect(
            call.rc in allowed,
            f"{what + ': ' if what else ''}exit {call.rc}, expected {'/'.join(map(str, allowed))}: {last_line(call)}",
        )

    def survivors(self, needles: Sequence[bytes]) -> None:
        """Processes of this case still alive (after a short grace): counted, reported, killed."""
        found = scan_processes(needles)
        deadline = time.monotonic() + 3
        while found and time.monotonic() < deadline:
            time.sleep(0.2)
            found = scan_processes(needles)
        if found:
            self.table.count("processes", len(found))
            kill_pids([pid for pid, _ in found])
            self.problems.append(
                f"{len(found)} process(es) of the scenario survived: {clean(found[0][1], 80)}"
            )

    def containers(self) -> None:
        if not self.table.docker:
            return
        left = containers_mounting([self.dir])
        if left:
            self.table.count("containers", len(left))
            docker("rm", "--force", *left)
            self.problems.append(f"container(s) left: {', '.join(left)}")

    def temporary_folders(self) -> None:
        """tfbisect's temporary folders still in this case's TMPDIR: counted, reported, removed."""
        left = sorted(self.tmp.glob("tfbisect-*"))
        if left:
            self.table.count("tmp", len(left))
            self.problems.append(f"temporary folder(s) left: {', '.join(p.name for p in left[:3])}")
            for path in left:
                shutil.rmtree(path, ignore_errors=True)

    def repository_untouched(self) -> None:
        """Nothing of this case's scenarios landed in the repository's own reports/."""
        for stem in self.stems:
            for place in (ROOT / "reports" / "results" / stem, ROOT / "reports" / "logs" / stem):
                if place.exists():
                    self.problems.append(f"wrote into the repository: {place.relative_to(ROOT)}")
                    shutil.rmtree(place, ignore_errors=True)
            for log in (ROOT / "reports" / "bisect").glob(f"*-{stem}-*.json"):
                self.problems.append(f"wrote into the repository: {log.relative_to(ROOT)}")
                log.unlink()

    def secrets_in(self, *folders: Path) -> None:
        for folder in folders:
            for path in folder.rglob("*") if folder.is_dir() else []:
                if file_contains(path, self.table.needles):
                    self.table.leak(f"file:{path.relative_to(self.table.root)}")
                    self.problems.append(f"a secret is in {path.name}")


def run_case(table: Table, spec: Case) -> Result:
    start = time.monotonic()
    ctx = Ctx(table, spec.name)
    status, detail = "PASS", ""
    try:
        detail = spec.func(ctx)
    except Skip as exc:
        status, detail = "SKIP", str(exc)
    except Exception as exc:
        ctx.problems.append(f"the case raised {type(exc).__name__}: {exc}")
        if os.environ.get("FAULT_TABLE_DEBUG"):
            traceback.print_exc()
    finally:
        try:
            needles = [ctx.marker.encode()]
            if spec.phase == "docker":
                needles += DOCKER_NEEDLES
            ctx.survivors(needles)
            if spec.phase == "docker":
                ctx.containers()
            ctx.repository_untouched()
            ctx.temporary_folders()
        except Exception as exc:
            ctx.problems.append(f"checking for leftovers raised {type(exc).__name__}: {exc}")
    if status != "SKIP" and ctx.problems:
        status, detail = "FAIL", "; ".join(ctx.problems[:4]) + (" …" if len(ctx.problems) > 4 else "")
    detail = detail.replace(str(ctx.dir), "$CASE").replace(str(table.root), "$TABLE")
    return Result(spec.name, status, clean(detail, 400), time.monotonic() - start)


# ------------------------------------------------------------------- cases: set-up
def scenario(stem: str) -> Path:
    return SCENARIOS / f"{stem}.py"


@case("setup/empty-venv", "setup")
def setup_empty_venv(ctx: Ctx) -> str:
    """The empty venv of the header-only lock, built once for the table (a well-behaved run)."""
    call = ctx.run(scenario("fault_ok"), wall=600)
    ctx.no_traceback(call)
    ctx.rc(call, [0])
    return f"a well-behaved scenario runs: not reproduced ({call.seconds:.1f}s, venv built)"


# ---------------------------------------------------- cases: results and logs (shared store)
def shared_run(ctx: Ctx, stem: str, *, env: dict[str, str] | None = None, wall: float = 90) -> Call:
    return ctx.run(
        scenario(stem), reports=ctx.table.shared, env=env, wall=wall, timeout=120, limit_memory=True
    )


def expect_error(
    ctx: Ctx,
    call: Call,
    stem: str,
    words: Sequence[str],
    *,
    reports: Path | None = None,
    also: Sequence[str] = (),
) -> str:
    """A run that must be an `error` record (exit 70) whose failure says one of `words`."""
    ctx.no_traceback(call)
    ctx.rc(call, [70])
    record = record_of(reports or ctx.table.shared, stem)
    if record is None:
        ctx.problems.append("no readable record was stored")
        return ""
    message = failure_text(record)
    ctx.expect(
        record.get("outcome") == "error",
        f"stored as {record.get('outcome')!r}, not error: {clean(message, 100)}",
    )
    if words:
        ctx.expect(
            any(w.lower() in message.lower() for w in words),
            f"the failure does not say {' / '.join(words)}: {clean(message, 120)!r}",
        )
    for word in also:
        ctx.expect(
            word.lower() in message.lower(), f"the failure does not name {word!r}: {clean(message, 120)!r}"
        )
    return f"error: {clean(message, 120)}"


OUTPUT_CASES = [
    ("output/symlink-to-secret", "fault_result_symlink_secret", ("symlink", "symbolic link")),
    ("output/symlink-to-dev-zero", "fault_result_symlink_zero", ("symlink", "symbolic link")),
    ("output/fifo", "fault_result_fifo", ("fifo", "named pipe")),
    ("output/directory", "fault_result_directory", ("directory", "folder")),
    ("output/device-node", "fault_result_device", ("device",)),
    (
        "output/sparse-100g",
        "fault_result_sparse",
        ("too large", "larger than", "exceeds", "16 MiB", "16777216"),
    ),
]


def output_case(name: str, stem: str, words: Sequence[str]) -> None:
    @case(name)
    def check(ctx: Ctx) -> str:
        if stem == "fault_result_device" and os.geteuid() != 0:
            raise Skip("mknod needs root")
        call = shared_run(ctx, stem, env={"FAULT_SECRET_FILE": str(ctx.table.secret_file)})
        ctx.expect(call.hung or call.seconds < 30, f"took {call.seconds:.0f}s to give up on the result file")
        detail = expect_error(ctx, call, stem, words)
        shared = ctx.table.shared
        ctx.secrets_in(shared / "results" / stem, shared / "logs" / stem)
        return f"{detail} ({call.seconds:.1f}s)"


for _name, _stem, _words in OUTPUT_CASES:
    output_case(_name, _stem, _words)


DOCUMENT_CASES: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    ("document/not-utf8", "fault_doc_not_utf8", ("utf-8", "utf8"), ()),
    ("document/over-16-mib", "fault_doc_too_large", ("16 MiB", "16MiB", "16777216", "16 MB"), ()),
    ("document/not-json", "fault_doc_not_json", ("json",), ()),
    ("document/breaks-schema", "fault_doc_schema", ("verdict",), ()),
    ("document/exit-0-says-reproduced", "fault_doc_exit0_reproduced", (), ()),
    ("document/exit-1-says-not-reproduced", "fault_doc_exit1_not_reproduced", (), ()),
    ("document/wrong-sha256", "fault_doc_wrong_sha", (), ()),
    ("document/empty-file", "fault_doc_empty", (), ()),
    ("document/deep-nesting", "fault_doc_deep", (), ()),
    ("document/traceback-no-document", "fault_traceback", ("ValueError",), ("the real message 42",)),
]


def document_case(name: str, stem: str, words: Sequence[str], also: Sequence[str]) -> None:
    @case(name)
    def check(ctx: Ctx) -> str:
        call = shared_run(ctx, stem)
        detail = expect_error(ctx, call, stem, words, also=also)
        if stem == "fault_doc_not_utf8":
            record = record_of(ctx.table.shared, stem) or {}
            ctx.expect(
                re.search(r"\b101[01]\b", failure_text(record)) is not None,
                "the failure does not name the byte offset 1010",
            )
        return detail


for _name, _stem, _words, _also in DOCUMENT_CASES:
    document_case(_name, _stem, _words, _also)


@case("document/nan-and-infinity")
def document_nan(ctx: Ctx) -> str:
    """NaN/Infinity are not JSON: whatever the outcome, the stored record must be strict JSON."""
    call = shared_run(ctx, "fault_doc_nan")
    ctx.no_traceback(call)
    ctx.rc(call, [0, 70])
    for path, _ in records(ctx.table.shared, "fault_doc_nan"):

        def reject(word: str) -> Any:
            raise ValueError(f"{word} in the stored record")

        try:
            json.loads(path.read_text(encoding="utf-8"), parse_constant=reject)
        except ValueError as exc:
            ctx.problems.append(f"{path.name} is not strict JSON: {exc}")
    return f"exit {call.rc}, the stored record is strict JSON"


# ------------------------------------------------------------------ cases: bounded output
def bounded(ctx: Ctx, stem: str, want: Sequence[int], marks: bool) -> str:
    shared = ctx.table.shared
    call = shared_run(ctx, stem, wall=400)
    ctx.no_traceback(call)
    ctx.rc(call, want)
    sizes = [path.stat().st_size for path, _ in records(shared, stem)]
    ctx.expect(bool(sizes), "no record stored")
    ctx.expect(
        all(s < RECORD_MAX for s in sizes), f"the record is {max(sizes or [0]) >> 10} KiB (limit 256 KiB)"
    )
    logs = [
        p
        for p in (shared / "logs" / stem).rglob("*.log")
        if not p.name.endswith((".install.log", ".build.log"))
    ]
    biggest = max((p.stat().st_size for p in logs), default=0)
    if marks:
        ctx.expect(bool(logs), "no log file was written")
        ctx.expect(biggest < LOG_MAX, f"the log file is {biggest >> 20} MiB (limit 10 MiB)")
        for log in logs:
            if log.stat().st_size < LOG_MAX:
                text = log.read_bytes()
                ctx.expect(b"HEAD-MARK" in text, f"{log.name} lost the head of the output")
                ctx.expect(b"TAIL-MARK" in text, f"{log.name} lost the tail of the output")
                ctx.expect(CUT_MARK.search(text) is not None, f"{log.name} does not mark where it was cut")
    report = ctx.tfb(
        "report",
        "--scenario",
        str(scenario(stem)),
        "--out",
        str(ctx.out),
        reports=shared,
        wall=400,
        limit_memory=True,
    )
    ctx.no_traceback(report)
    if ctx.rc(report, [0], "report"):
        html = ctx.out / "report.html"
        size = html.stat().st_size if html.exists() else 0
        ctx.expect(html.exists(), "report wrote no report.html")
        ctx.expect(size < REPORT_MAX, f"report.html is {size >> 20} MiB (limit 5 MiB)")
    return (
        f"exit {call.rc} in {call.seconds:.0f}s; record {max(sizes or [0]) >> 10} KiB, "
        f"log {biggest >> 10} KiB, report {report.seconds:.0f}s"
    )


@case("bounds/200mb-on-one-line")
def bounds_one_line(ctx: Ctx) -> str:
    return bounded(ctx, "fault_print_one_line", [0], marks=True)


@case("bounds/three-million-lines")
def bounds_many_lines(ctx: Ctx) -> str:
    return bounded(ctx, "fault_print_many_lines", [0], marks=True)


@case("bounds/10mb-summary")
def bounds_summary(ctx: Ctx) -> str:
    return bounded(ctx, "fault_doc_big_summary", [0], marks=False)


@case("bounds/5mb-exception-message")
def bounds_exception(ctx: Ctx) -> str:
    detail = bounded(ctx, "fault_big_exception", [70], marks=False)
    record = record_of(ctx.table.shared, "fault_big_exception") or {}
    ctx.expect("ValueError" in failure_text(record), "the failure does not name ValueError")
    return detail


# ------------------------------------------------------------------ cases: terminal escapes
@case("escape/scenario-output-and-document")
def escape_output(ctx: Ctx) -> str:
    stem = "fault_escape_output"
    call = shared_run(ctx, stem)
    ctx.no_traceback(call)
    ctx.rc(call, [0])
    ctx.no_controls(call, "run")
    for path, _ in records(ctx.table.shared, stem):
        shown = ctx.tfb("show", str(path), reports=ctx.table.shared)
        ctx.rc(shown, [0], "show")
        ctx.no_controls(shown, "show")
    report = ctx.tfb(
        "report", "--scenario", str(scenario(stem)), "--out", str(ctx.out), reports=ctx.table.shared
    )
    ctx.rc(report, [0], "report")
    ctx.no_controls(report, "report")
    return "no escape sequence reaches the terminal (run, show, report)"


@case("escape/exception-message")
def escape_exception(ctx: Ctx) -> str:
    stem = "fault_escape_exception"
    call = shared_run(ctx, stem)
    ctx.no_traceback(call)
    ctx.rc(call, [70])
    ctx.no_controls(call, "run")
    for path, _ in records(ctx.table.shared, stem):
        shown = ctx.tfb("show", str(path), reports=ctx.table.shared)
        ctx.no_controls(shown, "show")
    return "error, and no escape sequence reaches the terminal"


# ------------------------------------------------------------------- cases: exit by signal
for _signame in ("SIGSEGV", "SIGABRT", "SIGKILL"):

    def signal_case(signame: str) -> None:
        @case(f"signal/{signame.lower()}")
        def check(ctx: Ctx) -> str:
            call = ctx.run(scenario("fault_self_signal"), env={"FAULT_SIGNAL": signame})
            return expect_error(ctx, call, "fault_self_signal", (signame,), reports=ctx.reports)

    signal_case(_signame)


# ------------------------------------------------- cases: the store after bad cells exist
STORE_SEEDS = (
    "fault_doc_not_json",
    "fault_doc_schema",
    "fault_doc_wrong_sha",
    "fault_doc_exit0_reproduced",
    "fault_doc_not_utf8",
    "fault_traceback",
    "fault_escape_output",
    "fault_result_directory",
)


def seed_store(ctx: Ctx) -> None:
    """The shared store holds bad cells: those of the result cases, or these quick ones."""
    for stem in STORE_SEEDS:
        with ctx.table.lock:
            lock = ctx.table.seeded.setdefault(stem, threading.Lock())
        with lock:
            if not records(ctx.table.shared, stem):
                shared_run(ctx, stem, wall=60)


def bad_cells(ctx: Ctx) -> list[str]:
    folder = ctx.table.shared / "results"
    return sorted(p.name for p in folder.iterdir() if scenario(p.name).is_file()) if folder.is_dir() else []


@case("store/show-lists-every-cell", "store")
def store_show(ctx: Ctx) -> str:
    seed_store(ctx)
    call = ctx.tfb("show", reports=ctx.table.shared)
    ctx.no_traceback(call)
    ctx.rc(call, [0])
    return f"{len(call.out.splitlines())} cells listed"


@case("store/show-each-record", "store")
def store_show_each(ctx: Ctx) -> str:
    seed_store(ctx)
    paths = sorted((ctx.table.shared / "results").glob("*/*/*.json"))
    for path in paths:
        call = ctx.tfb("show", str(path), reports=ctx.table.shared)
        ctx.no_traceback(call)
        ctx.rc(call, [0], f"show {path.parent.parent.name}")
    return f"{len(paths)} records shown"


@case("store/report-each-scenario", "store")
def store_report_each(ctx: Ctx) -> str:
    seed_store(ctx)
    stems = bad_cells(ctx)
    for stem in stems:
        call = ctx.tfb(
            "report",
            "--scenario",
            str(scenario(stem)),
            "--out",
            str(ctx.out / stem),
            reports=ctx.table.shared,
            wall=300,
            limit_memory=True,
        )
        ctx.no_traceback(call)
        ctx.rc(call, [0], f"report {stem}")
    return f"{len(stems)} reports written"


@case("store/sweep-over-bad-cells", "store")
def store_sweep(ctx: Ctx) -> str:
    seed_store(ctx)
    call = ctx.tfb(
        "sweep",
        "--tf",
        f"{TF_OLD},{TF_NEW}",
        "--backend",
        "venv",
        "--python",
        PY,
        "--scenario",
        str(scenario("fault_doc_schema")),
        "--timeout",
        "30",
        reports=ctx.table.shared,
    )
    ctx.no_traceback(call)
    ctx.rc(call, [0])
    return f"exit {call.rc}"


@case("store/bisect-over-bad-cells", "store")
def store_bisect(ctx: Ctx) -> str:
    seed_store(ctx)
    call = ctx.tfb(
        "bisect",
        "--good",
        TF_OLD,
        "--bad",
        TF_NEW,
        "--no-narrow",
        "--backend",
        "venv",
        "--python",
        PY,
        "--scenario",
        str(scenario("fault_doc_not_json")),
        "--timeout",
        "30",
        reports=ctx.table.shared,
    )
    ctx.no_traceback(call)
    ctx.rc(call, [0, 1])
    log = ctx.tfb("bisect", "log", reports=ctx.table.shared)
    ctx.no_traceback(log)
    ctx.rc(log, [0], "bisect log")
    return f"bisect exit {call.rc}, bisect log exit {log.rc}"


@case("store/corrupt-record-files", "store")
def store_corrupt(ctx: Ctx) -> str:
    ok = scenario("fault_ok")
    first = ctx.run(ok)
    ctx.rc(first, [0])
    found = records(ctx.reports, "fault_ok")
    if not found:
        return ""
    folder = found[0][0].parent
    good = found[0][0].read_text(encoding="utf-8")
    (folder / "tf2.19.0-py3.11-cpu-venv.json").write_text(good[: len(good) // 2], encoding="utf-8")
    (folder / "tf2.18.0-py3.11-cpu-venv.json").write_bytes(b"\xff\xfe{not utf-8\x00")
    (folder / "tf2.17.0-py3.11-cpu-venv.json").write_text("[]", encoding="utf-8")
    (folder / "tf2.16.0-py3.11-cpu-venv.json").write_text(
        json.dumps({"outcome": "pwned", "spec": {}, "failure": "x"}), encoding="utf-8"
    )
    (folder / "tf2.15.0-py3.11-cpu-venv.json").mkdir()  # a folder named like a record
    calls = {
        "show": ctx.tfb("show"),
        "report": ctx.tfb("report", "--scenario", str(ok), "--out", str(ctx.out)),
        "run again": ctx.run(ok),
        "sweep": ctx.tfb(
            "sweep", "--tf", f"{TF_OLD},{TF_NEW}", "--backend", "venv", "--python", PY, "--scenario", str(ok)
        ),
    }
    for path in sorted(folder.iterdir()):
        calls[f"show {path.name}"] = ctx.tfb("show", str(path))
    corrupt = [p.name for p in folder.iterdir() if p.name != found[0][0].name]
    for what, call in calls.items():
        tb = tfbisect_traceback(call.text)
        culprits = [name for name in corrupt if name in call.text]
        kind = tb.split(":")[0] if tb else ""
        ctx.expect(
            tb is None, f"{what}: tfbisect traceback ({kind}) over {', '.join(culprits) or 'a corrupt file'}"
        )
        if not what.startswith("show "):
            ctx.rc(call, [0], what)
    return "show, show FILE, report, run and sweep survive corrupted record files"


# ------------------------------------------------------------ cases: processes and timeouts
def timeout_case(name: str, stem: str, env: dict[str, str], want: Sequence[int], limit: float = 3) -> None:
    @case(name, "serial")
    def check(ctx: Ctx) -> str:
        call = ctx.run(scenario(stem), env=env, timeout=limit, wall=60)
        ctx.no_traceback(call)
        ctx.rc(call, want)
        ctx.expect(
            call.hung or call.seconds <= limit + 6,
            f"returned after {call.seconds:.1f}s (timeout {limit:g}s; allowed {limit + 6:g}s)",
        )
        return f"exit {call.rc} after {call.seconds:.1f}s, nothing of the scenario left"


timeout_case("process/hang", "fault_hang", {}, [124])
timeout_case("process/double-forked-daemon-holding-the-pipe", "fault_daemon", {}, [124])
timeout_case("process/daemon-then-exit-0", "fault_daemon", {"FAULT_MAIN": "exit"}, [0, 70])
timeout_case("process/child-ignores-sigterm", "fault_sigterm_ignorer", {}, [124])
timeout_case("process/exit-0-child-holds-the-pipe", "fault_background_child", {}, [0, 70])
timeout_case("process/exit-0-child-in-own-session", "fault_escaped_session", {}, [0, 70])


# --------------------------------------------------------------- cases: signals to tfbisect
def resume_command(text: str, sub: str) -> str | None:
    """The last printed line that is a tfbisect command of `sub` (not `bisect log`)."""
    pattern = re.compile(
        rf"^(?:\$\s*)?(?:\S*python\S*\s+-m\s+tfbisect|\S*tfbisect)\s(?:.*\s)?{sub}\b(?!\s+log\b)"
    )
    for line in reversed(text.splitlines()):
        line = line.strip().strip("`")
        if pattern.match(line):
            return line.removeprefix("$").strip()
    return None


def runnable(line: str, env: dict[str, str]) -> str:
    """Run as printed; only a bare `tfbisect` with no such program on PATH becomes `python -m tfbisect`."""
    if line.startswith("tfbisect ") and shutil.which("tfbisect", path=env.get("PATH")) is None:
        return f"{shlex.quote(sys.executable)} -m {line}"
    return line


def run_dirs_left(ctx: Ctx) -> list[str]:
    return sorted(p.name for p in ctx.tmp.glob("tfbisect-run-*"))


SIGNALS = {"sigterm": (signal.SIGTERM, 143), "sighup": (signal.SIGHUP, 129), "sigint": (signal.SIGINT, 130)}


def interrupt_run_case(signame: str) -> None:
    sig, want = SIGNALS[signame]

    @case(f"interrupt/{signame}-during-run", "serial")
    def check(ctx: Ctx) -> str:
        flag = ctx.dir / "started"
        env = ctx.env({"FAULT_STARTED": str(flag)})
        running = ctx.start(
            "run",
            "--tf",
            TF_NEW,
            "--python",
            PY,
            "--scenario",
            str(scenario("fault_hang")),
            "--timeout",
            "120",
            env=env,
        )
        if not wait_for(flag.exists, 60, running):
            call = ctx.finish(running, 5)
            ctx.problems.append(f"the scenario never started: {last_line(call)}")
            return ""
        time.sleep(0.5)
        sent = time.monotonic()
        running.popen.send_signal(sig)
        call = ctx.finish(running, 40)
        took = time.monotonic() - sent
        ctx.no_traceback(call)
        ctx.rc(call, [want])
        ctx.expect(took < 10, f"took {took:.1f}s to stop after {signame.upper()}")
        ctx.survivors([ctx.marker.encode()])
        left = run_dirs_left(ctx)
        ctx.expect(not left, f"temporary folder(s) left in TMPDIR: {', '.join(left)}")
        ctx.expect(resume_command(call.text, "run") is not None, "the output names no resume command")
        return f"exit {call.rc} {took:.1f}s after {signame.upper()}"


for _signame in SIGNALS:
    interrupt_run_case(_signame)


def interrupted_search(ctx: Ctx, sub: str, sig: signal.Signals = signal.SIGTERM, force: bool = False) -> str:
    """A stop signal while TF 2.21.0 hangs and 2.20.0 is done; then resume with the printed
    command (after `--force`, a resume that forced again would run TF 2.20.0 twice)."""
    stem = "fault_bisect_hang"
    hang, flag, counter = ctx.dir / "hang", ctx.dir / "started", ctx.dir / "counter"
    hang.touch()
    env = ctx.env({"FAULT_HANG_FLAG": str(hang), "FAULT_STARTED": str(flag), "FAULT_COUNTER": str(counter)})
    common = ["--backend", "venv", "--python", PY, "--scenario", str(scenario(stem)), "--timeout", "120"]
    if sub == "bisect":
        # The empty venvs stand for two releases only: nothing to narrow below them.
        args = ["bisect", "--good", TF_OLD, "--bad", TF_NEW, "--no-narrow", *common]
    else:
        args = ["sweep", "--tf", f"{TF_OLD},{TF_NEW}", "--jobs", "1", *common]
    running = ctx.start(*args, *(["--force"] if force else []), env=env)
    if not wait_for(flag.exists, 90, running):
        call = ctx.finish(running, 5)
        ctx.problems.append(f"TF {TF_NEW} never started: {last_line(call)}")
        return ""
    time.sleep(0.5)
    sent = time.monotonic()
    running.popen.send_signal(sig)
    call = ctx.finish(running, 40)
    took = time.monotonic() - sent
    ctx.no_traceback(call)
    ctx.rc(call, [128 + sig])
    ctx.expect(took < 10, f"took {took:.1f}s to stop after {sig.name}")
    ctx.survivors([ctx.marker.encode()])
    left = run_dirs_left(ctx)
    ctx.expect(not left, f"temporary folder(s) left in TMPDIR: {', '.join(left)}")
    if record_of(ctx.reports, stem, TF_OLD) is None:
        ctx.table.count("lost")
        ctx.problems.append(f"the finished TF {TF_OLD} result is not stored")
    if sub == "bisect":
        logs = sorted((ctx.reports / "bisect").glob("*.json"))
        steps = []
        for log in logs:
            with contextlib.suppress(OSError, ValueError):
                steps += [s.get("version") for s in json.loads(log.read_text()).get("steps", [])]
        ctx.expect(bool(logs), "no bisection log under reports/bisect")
        ctx.expect(TF_OLD in steps, f"the bisection log has no step for TF {TF_OLD}")
    line = resume_command(call.text, sub)
    if not ctx.expect(line is not None, "the output names no resume command"):
        return ""
    assert line is not None
    ctx.expect("--force" not in shlex.split(line), f"the resume command carries --force: {line!r}")
    hang.unlink()
    resumed = ctx.shell(runnable(line, env), env)
    ctx.no_traceback(resumed)
    ctx.rc(resumed, [0], f"the resume command {line!r}")
    runs = counter.read_text().split() if counter.exists() else []
    ctx.expect(
        runs.count(TF_OLD) == 1, f"TF {TF_OLD} ran {runs.count(TF_OLD)} times (the stored end ran again)"
    )
    ctx.expect(
        record_of(ctx.reports, stem, TF_NEW) is not None, f"after resuming, no TF {TF_NEW} result is stored"
    )
    if sub == "bisect":
        statuses = []
        for log in sorted((ctx.reports / "bisect").glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                statuses.append(json.loads(log.read_text()).get("status"))
        ctx.expect("found" in statuses, f"the resumed bisection did not find the change (status {statuses})")
    return f"exit {call.rc} {took:.1f}s after {sig.name}; resumed with {clean(line, 80)!r}"


@case("interrupt/sigterm-during-bisect-then-resume", "serial")
def interrupt_bisect(ctx: Ctx) -> str:
    return interrupted_search(ctx, "bisect")


@case("interrupt/sigterm-during-sweep-then-resume", "serial")
def interrupt_sweep(ctx: Ctx) -> str:
    return interrupted_search(ctx, "sweep")


# ------------------------------------------------------- cases: concurrency and reuse
@case("concurrency/same-cell-twice-at-once", "serial")
def concurrency_same_cell(ctx: Ctx) -> str:
    stem = "fault_counter_sleep"
    counter = ctx.dir / "counter"
    env = ctx.env({"FAULT_COUNTER": str(counter), "FAULT_SLEEP": "3"})
    args = ["run", "--tf", TF_NEW, "--python", PY, "--scenario", str(scenario(stem)), "--timeout", "60"]
    first = ctx.start(*args, env=env)
    second = ctx.start(*args, env=env)
    calls = [ctx.finish(first, 90), ctx.finish(second, 90)]
    for call in calls:
        ctx.no_traceback(call)
        ctx.rc(call, [0])
    runs = len(counter.read_text().split()) if counter.exists() else 0
    ctx.expect(runs == 1, f"the scenario ran {runs} times")
    ctx.expect(
        any(re.search(r"(?i)reus", c.text) for c in calls), "neither run says it reused the other's result"
    )
    record = record_of(ctx.reports, stem)
    log = Path(str((record or {}).get("extra", {}).get("log", "")))
    if ctx.expect(log.is_file(), "the stored record names no log file that exists"):
        ran = log.read_text(errors="replace").count("fault-scenario-ran")
        ctx.expect(ran == 1, f"the run's log holds the scenario's output {ran} times (overwritten or mixed)")
    return f"ran once; exits {calls[0].rc} and {calls[1].rc}"


@case("reuse/timeout-then-longer-timeout", "serial")
def reuse_after_timeout(ctx: Ctx) -> str:
    stem = "fault_counter_sleep"
    counter = ctx.dir / "counter"
    env = {"FAULT_COUNTER": str(counter), "FAULT_SLEEP": "5"}
    short = ctx.run(scenario(stem), env=env, timeout=2, wall=60)
    ctx.rc(short, [124], "--timeout 2")
    longer = ctx.run(scenario(stem), env=env, timeout=30, wall=60)
    ctx.rc(longer, [0], "then --timeout 30")
    runs = len(counter.read_text().split()) if counter.exists() else 0
    ctx.expect(runs == 2, f"after the longer timeout the scenario ran {runs} times in all (expected 2)")
    third = ctx.run(scenario(stem), env=env, timeout=30, wall=60)
    ctx.rc(third, [0], "a third time")
    runs_after = len(counter.read_text().split()) if counter.exists() else 0
    ctx.expect(runs_after == runs, "the third run ran the scenario again instead of reusing the verdict")
    ctx.expect(
        re.search(r"(?i)reus", third.text) is not None, "the third run does not say it reused the result"
    )
    for call in (short, longer, third):
        ctx.no_traceback(call)
    return "timeout, then a verdict, then reused"


# --------------------------------------------------------------- cases: the GitHub token
Respond = Callable[[dict[str, str]], tuple[int, dict[str, str], bytes]]


@contextlib.contextmanager
def serve(respond: Respond) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback HTTP server; yields its URL and the headers of every request it got."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            headers = dict(self.headers.items())
            seen.append(headers)
            status, extra, body = respond(headers)
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def comment(url: str = "https://github.com/o/r/issues/7#issuecomment-42") -> bytes:
    return json.dumps({"id": 42, "html_url": url, "body": "summary"}).encode()


def post(ctx: Ctx, api: str, *, token: bool = True) -> Call:
    env = {"GITHUB_TOKEN": ctx.table.token} if token else {}
    return ctx.tfb(
        "report",
        "--scenario",
        str(scenario("fault_ok")),
        "--out",
        str(ctx.out),
        "--post",
        "o/r#7",
        "--api-url",
        api,
        env=env,
        wall=60,
    )


def github_case(name: str, respond: Respond, want: Sequence[int]) -> None:
    @case(name)
    def check(ctx: Ctx) -> str:
        with serve(respond) as (url, seen):
            call = post(ctx, url)
        ctx.no_traceback(call)
        ctx.rc(call, want)
        ctx.expect(bool(seen), "the server got no request")
        ctx.secrets_in(ctx.dir)
        return f"exit {call.rc}: {last_line(call)}"


github_case("github/answers-500", lambda h: (500, {}, b'{"message": "Server Error"}'), [11])
github_case(
    "github/echoes-headers-in-a-500",
    lambda h: (500, {}, json.dumps({"message": "you sent " + json.dumps(h)}).encode()),
    [11],
)
github_case(
    "github/201-echoes-the-token-in-html-url",
    lambda h: (201, {}, comment("https://github.com/o/r/issues/7#c?" + h.get("Authorization", ""))),
    [11],
)
github_case("github/answers-200-not-201", lambda h: (200, {}, comment()), [11])
github_case("github/201-not-json", lambda h: (201, {}, b"<html>this is not a comment</html>"), [11])
github_case("github/201-without-a-comment-object", lambda h: (201, {}, b"[]"), [11])
github_case("github/proper-201", lambda h: (201, {}, comment()), [0])


@case("github/302-to-another-server")
def github_redirect(ctx: Ctx) -> str:
    with (
        serve(lambda h: (201, {}, comment())) as (elsewhere, seen_elsewhere),
        serve(lambda h: (302, {"Location": elsewhere + "/stolen"}, b"")) as (url, _),
    ):
        call = post(ctx, url)
    ctx.no_traceback(call)
    ctx.rc(call, [11])
    told = [
        h
        for h in seen_elsewhere
        if any(ctx.table.token in v or k.lower() == "authorization" for k, v in h.items())
    ]
    if told:
        ctx.table.leak("server:redirect-target")
    ctx.expect(not told, "the redirect target got the Authorization header")
    ctx.secrets_in(ctx.dir)
    return f"exit {call.rc}; the other server got {len(seen_elsewhere)} request(s), none with the token"


@case("github/no-token")
def github_no_token(ctx: Ctx) -> str:
    with serve(lambda h: (201, {}, comment())) as (url, seen):
        call = post(ctx, url, token=False)
    ctx.no_traceback(call)
    ctx.expect(call.rc not in (0, None), f"exit {call.rc} without a token")
    ctx.expect(not seen, "a request was sent without a token")
    ctx.expect(
        re.search(r"(?i)(not\s+(been\s+)?|nothing\s+(was\s+)?)posted", call.text) is not None,
        "the message does not say nothing was posted",
    )
    return f"exit {call.rc}: {last_line(call)}"


# ------------------------------------------------------------------------ cases: bad input
def outside(ctx: Ctx) -> set[Path]:
    """What exists in the case's folder outside its reports and its TMPDIR."""
    return {
        p for p in ctx.dir.rglob("*") if ctx.reports not in (p, *p.parents) and ctx.tmp not in (p, *p.parents)
    }


def refused(ctx: Ctx, call: Call) -> bool:
    """Exit 2, or another failure with the two-part message; never a traceback."""
    ctx.no_traceback(call)
    if call.hung:
        return False
    ok = call.rc == 2 or (call.rc not in (0, *RUN_CODES) and "What to do" in call.text)
    return ctx.expect(ok, f"exit {call.rc}, expected 2 (or a two-part message): {last_line(call)}")


def bad_input_case(name: str, args: Sequence[str]) -> None:
    @case(name)
    def check(ctx: Ctx) -> str:
        before = outside(ctx)
        call = ctx.tfb(*args, wall=60)
        refused(ctx, call)
        stored = list((ctx.reports / "results").rglob("*.json"))
        ctx.expect(not stored, f"it ran anyway: {len(stored)} result(s) stored")
        new = outside(ctx) - before
        ctx.expect(not new, f"wrote outside the reports folder: {sorted(p.name for p in new)[:3]}")
        return f"exit {call.rc}: {last_line(call)}"


OK = str(scenario("fault_ok"))
_SEARCH = ["--backend", "venv", "--python", PY, "--scenario", OK, "--timeout", "30"]
_RUN = ["run", "--tf", TF_NEW, "--python", PY, "--scenario", OK]
bad_input_case("input/bisect-jobs-0", ["bisect", "--good", TF_OLD, "--bad", TF_NEW, *_SEARCH, "--jobs", "0"])
bad_input_case("input/sweep-jobs-0", ["sweep", "--tf", f"{TF_OLD},{TF_NEW}", *_SEARCH, "--jobs", "0"])
bad_input_case("input/timeout-0", [*_RUN, "--timeout", "0"])
bad_input_case("input/timeout-minus-1", [*_RUN, "--timeout", "-1"])
bad_input_case("input/timeout-nan", [*_RUN, "--timeout", "nan"])
bad_input_case("input/python-3.99", ["run", "--tf", TF_NEW, "--python", "3.99", "--scenario", OK])
bad_input_case("input/tf-path-traversal", ["run", "--tf", "../../../x", "--python", PY, "--scenario", OK])


def probe_case(name: str, probe: str, escape: Path | None) -> None:
    @case(name)
    def check(ctx: Ctx) -> str:
        before = outside(ctx)
        call = ctx.tfb("bisect", "--good", TF_OLD, "--bad", TF_NEW, *_SEARCH, "--probe", probe, wall=120)
        ctx.no_traceback(call)
        folder = ctx.reports / "bisect"
        direct = sorted(folder.glob("*.json"))
        nested = [p for p in folder.rglob("*.json") if p.parent != folder]
        ctx.expect(bool(direct) or call.rc == 2, "no bisection log directly in reports/bisect")
        ctx.expect(
            not nested,
            f"a log landed in a sub-folder: {nested[0].relative_to(ctx.reports) if nested else ''}",
        )
        new = outside(ctx) - before
        ctx.expect(not new, f"wrote outside the reports folder: {sorted(str(p) for p in new)[:2]}")
        if escape is not None:
            hits = sorted(escape.parent.glob(escape.name + "*"))
            ctx.expect(not hits, f"wrote outside the reports folder: {hits[0] if hits else ''}")
            for hit in hits:
                with contextlib.suppress(OSError):
                    hit.unlink()
        if direct:
            log = ctx.tfb("bisect", "log")
            ctx.no_traceback(log)
            ctx.rc(log, [0], "bisect log")
        return f"bisect exit {call.rc}; the log is {direct[0].name if direct else 'refused'}"


probe_case("input/probe-path-traversal", "../../etc/x", None)
# Enough `..` to reach `/` from anywhere, then a name only the fault table uses.
probe_case(
    "input/probe-escapes-to-root",
    "../" * 24 + "tmp/tfbisect-fault-probe-escape",
    Path("/tmp/tfbisect-fault-probe-escape"),
)


def scenario_name_case(name: str, filename: str) -> None:
    @case(name)
    def check(ctx: Ctx) -> str:
        folder = ctx.dir / "scenarios"
        folder.mkdir()
        path = folder / filename
        shutil.copyfile(scenario("fault_ok"), path)
        shutil.copyfile(SCENARIOS / "_valid.py", folder / "_valid.py")  # what fault_ok imports
        before = outside(ctx)
        call = ctx.tfb(
            "run", "--tf", TF_NEW, "--python", PY, "--scenario", str(path), "--timeout", "30", wall=60
        )
        ctx.no_traceback(call)
        ctx.no_controls(call, "run")
        if call.rc == 0:
            stored = list((ctx.reports / "results").rglob("*.json"))
            ctx.expect(bool(stored), "exit 0 but no stored result")
            weird = [p for p in stored if p.relative_to(ctx.reports / "results").parts[0] in (".", "..", "")]
            ctx.expect(not weird, "the result is stored outside reports/results")
            tops = {p.name for p in ctx.reports.iterdir() if not p.name.startswith(".")}
            tops -= {"results", "logs", "bisect"}
            ctx.expect(not tops, f"it wrote {sorted(tops)} at the top of the reports folder")
        else:
            refused(ctx, call)
        for pwned in (ROOT / "PWNED", ctx.dir / "PWNED", ctx.dir / "scenarios" / "PWNED", ROOT / "PWNED2"):
            ctx.expect(not pwned.exists(), f"the file name ran a shell command ({pwned.name} exists)")
            with contextlib.suppress(OSError):
                pwned.unlink()
        new = outside(ctx) - before
        ctx.expect(not new, f"wrote outside the reports folder: {sorted(p.name for p in new)[:3]}")
        return f"exit {call.rc}: {last_line(call)}"


scenario_name_case("input/scenario-named-dots", "...py")
scenario_name_case("input/scenario-name-with-shell", "a b $(touch PWNED) `touch PWNED2`.py")
scenario_name_case("input/scenario-name-with-escapes", "esc\x1b[2J\x1b]0;pwned\x07name.py")


# ------------------------------------------------------------- cases: a failing machine
MACHINE_EXIT = 15  # ExitCode.MACHINE: never a verdict, never a skip


@contextlib.contextmanager
def mounted(target: Path, *commands: list[str]) -> Iterator[Path]:
    """`target` mounted by `commands` (root only: a Skip elsewhere), unmounted on every way out."""
    if os.geteuid() != 0:
        raise Skip("mounting a tmpfs or a read-only bind mount needs root")
    target.mkdir(parents=True, exist_ok=True)
    done = 0
    try:
        for command in commands:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise Skip(f"cannot mount here: {clean(result.stderr, 120)}")
            done += 1
        yield target
    finally:
        if done:
            subprocess.run(["umount", "-l", str(target)], check=False)


def expect_machine_fault(ctx: Ctx, call: Call, reports: Path, words: Sequence[str]) -> None:
    """Exit 15 with a message that names the place and what to do, the resume command, no
    traceback, and nothing stored for the version."""
    ctx.no_traceback(call)
    ctx.rc(call, [MACHINE_EXIT])
    for word in (*words, "What to do", "Resume with"):
        ctx.expect(word in call.err, f"the message does not say {word!r}: {last_line(call)}")
    stored = list((reports / "results").rglob("*.json")) if (reports / "results").is_dir() else []
    ctx.expect(not stored, f"a machine fault stored {len(stored)} record(s) (a verdict or a skip)")


def tmpfs(folder: Path) -> list[str]:
    return ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)]


@case("machine/full-reports-run", "serial")
def machine_full_run(ctx: Ctx) -> str:
    reports = ctx.dir / "small"
    with mounted(reports, tmpfs(reports)):
        call = ctx.run(scenario("fault_loud"), reports=reports, timeout=300, wall=150)
        expect_machine_fault(ctx, call, reports, [str(reports / "logs"), "No space left on device"])
        ctx.expect(call.seconds < 100, f"took {call.seconds:.0f}s (the run's timeout is 300s)")
    return f"exit {call.rc} in {call.seconds:.1f}s, nothing stored"


@case("machine/read-only-reports-run", "serial")
def machine_read_only_run(ctx: Ctx) -> str:
    source, reports = ctx.dir / "rw", ctx.dir / "ro"
    source.mkdir()
    bind = ["mount", "--bind", str(source), str(reports)]
    with mounted(reports, bind, ["mount", "-o", "remount,ro,bind", str(reports)]):
        call = ctx.tfb(
            "run", "--tf", TF_NEW, "--python", PY, "--scenario", str(scenario("fault_ok")), reports=reports
        )
        expect_machine_fault(ctx, call, reports, [str(reports), "Read-only file system"])
    return f"exit {call.rc}, nothing stored"


@case("machine/full-reports-bisect", "serial")
def machine_full_bisect(ctx: Ctx) -> str:
    reports = ctx.dir / "small"
    with mounted(reports, tmpfs(reports)):
        args = ["bisect", "--good", TF_OLD, "--bad", TF_NEW, "--python", PY, "--backend", "venv"]
        args += ["--scenario", str(scenario("fault_loud")), "--timeout", "300", "--no-narrow"]
        call = ctx.tfb(*args, "--prefetch", "0", reports=reports, wall=150)
        expect_machine_fault(ctx, call, reports, ["No space left on device", "tfbisect bisect"])
        resume = call.err.split("Resume with")[-1]
        ctx.expect("--force" not in resume, "the resume command carries --force")
        ctx.expect(call.seconds < 100, f"took {call.seconds:.0f}s: the search did not stop at the fault")
    return f"stopped with exit {call.rc} in {call.seconds:.1f}s and a resume command"


def scenario_processes(stem: str, marker: str) -> list[int]:
    """Live processes running the scenario `stem` itself (not its children) of one case."""
    found = []
    for pid, _ in scan_processes([marker.encode()]):
        with contextlib.suppress(OSError):
            if f"{stem}.py".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


@case("machine/kill-9-of-the-driver-venv", "serial")
def machine_kill_driver(ctx: Ctx) -> str:
    """The driver killed with SIGKILL (an OOM-killed CI job): the scenario dies with it at once,
    and the next command kills what the scenario started and removes the run's temporary folder."""
    args = [
        "run",
        "--tf",
        TF_NEW,
        "--python",
        PY,
        "--scenario",
        str(scenario("fault_hang")),
        "--timeout",
        "300",
    ]
    running = ctx.start(*args)
    if not wait_for(lambda: bool(scenario_processes("fault_hang", ctx.marker)), 120, running):
        ctx.problems.append(f"the scenario never started: {last_line(ctx.finish(running, 5))}")
        return ""
    running.popen.send_signal(signal.SIGKILL)
    ctx.finish(running, 10)
    gone = wait_for(lambda: not scenario_processes("fault_hang", ctx.marker), 5)
    ctx.expect(gone, "the scenario outlived its killed driver by 5s")
    ctx.no_traceback(ctx.tfb("versions"))
    ctx.expect(
        wait_for(lambda: not scan_processes([ctx.marker.encode()]), 5),
        "the next command left the killed driver's processes running",
    )
    left = [p.name for p in ctx.tmp.glob("tfbisect-run-*")]
    ctx.expect(not left, f"the killed driver's temporary folder(s) stayed: {left}")
    return "the scenario died with its driver; the next command reaped the rest"


# ----------------------------------------------------- cases: logs, text and resuming
def bisection(ctx: Ctx, path: Path, *extra: str, env: dict[str, str] | None = None) -> Call:
    """A whole bisection of TF 2.20.0..2.21.0 (the empty venvs: nothing to narrow below them)."""
    args = ["bisect", "--good", TF_OLD, "--bad", TF_NEW, "--no-narrow", "--backend", "venv"]
    args += ["--python", PY, "--scenario", str(path), "--timeout", "60"]
    return ctx.tfb(*args, *extra, env=env, wall=180)


def bisect_logs(reports: Path) -> list[Path]:
    folder = reports / "bisect"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def refusal(ctx: Ctx, call: Call, codes: Sequence[int], what: str) -> None:
    """A refusal in two parts with one of `codes` (the README's table), never a traceback."""
    ctx.no_traceback(call)
    if ctx.rc(call, codes, what):
        ctx.expect("What to do" in call.err, f"{what}: not a two-part message: {last_line(call)}")


def found_log(ctx: Ctx) -> Path | None:
    """The log of a real bisection of this case (`fault_bisect_hang` without its hang): found."""
    call = bisection(ctx, scenario("fault_bisect_hang"))
    ctx.no_traceback(call)
    ctx.rc(call, [0], "bisect")
    logs = bisect_logs(ctx.reports)
    ctx.expect(len(logs) == 1, f"{len(logs)} bisection logs, expected 1")
    return logs[0] if logs else None


def read_out(ctx: Ctx, name: str) -> str:
    path = ctx.out / name
    return path.read_text(errors="replace") if ctx.expect(path.is_file(), f"report wrote no {name}") else ""


def refused_log(ctx: Ctx, forged: Path) -> str:
    """`bisect log` and `narrow` on a damaged log: exit 6 or 14, two parts, no false story."""
    log = ctx.tfb("bisect", "log", str(forged), limit_memory=True)
    refusal(ctx, log, [6], "bisect log")
    ctx.expect(forged.name in log.err, "bisect log does not name the damaged file")
    narrow = ctx.tfb("narrow", str(forged), wall=120)
    refusal(ctx, narrow, [6, 14], "narrow")
    for call, what in ((log, "bisect log"), (narrow, "narrow")):
        for word in ("interrupted", "catalogue"):
            ctx.expect(word not in call.err, f"{what}'s refusal speaks of {word!r}: {last_line(call)}")
    return f"bisect log exit {log.rc}, narrow exit {narrow.rc}"


def damaged_log_case(name: str, damage: Callable[[dict[str, Any]], Any], clipped: bool = False) -> None:
    @case(name)
    def check(ctx: Ctx) -> str:
        good = found_log(ctx)
        if good is None:
            return ""
        data = json.loads(good.read_text(encoding="utf-8"))
        # Named to sort after the real one: the newest log of the scenario is the damaged one.
        forged = good.parent / ("29991231-235959-000000-" + good.name.split("-", 3)[-1])
        forged.write_text(json.dumps(damage(data)), encoding="utf-8")
        if clipped:
            log = ctx.tfb("bisect", "log", str(forged), limit_memory=True)
            ctx.no_traceback(log)
            ctx.rc(log, [0], "bisect log")
            ctx.expect(len(log.raw) < 100_000, f"bisect log printed {len(log.raw) >> 10} KiB (not clipped)")
            detail = f"bisect log exit {log.rc} ({len(log.raw)} bytes)"
        else:
            detail = refused_log(ctx, forged)
        report = ctx.tfb(
            "report",
            "--scenario",
            str(scenario("fault_bisect_hang")),
            "--out",
            str(ctx.out),
            limit_memory=True,
        )
        ctx.no_traceback(report)
        ctx.rc(report, [0], "report")
        html, markdown = read_out(ctx, "report.html"), read_out(ctx, "summary.md")
        ctx.expect(
            f"changed between {TF_OLD} and {TF_NEW}" in html, "report.html lost the readable bisection"
        )
        if clipped:
            ctx.expect(len(html) < REPORT_MAX, f"report.html is {len(html) >> 20} MiB (not clipped)")
            ctx.expect(len(markdown) < 65536, f"summary.md is {len(markdown) >> 10} KiB (not clipped)")
        else:
            ctx.expect(forged.name in html, "report.html does not list the damaged log as unreadable")
        ctx.expect(good.exists() and forged.exists(), "a log was removed")
        return f"{detail}; report exit {report.rc}, the good log still rendered"


def first_step(data: dict[str, Any], **field: Any) -> dict[str, Any]:
    return {**data, "steps": [{**data["steps"][0], **field}, *data["steps"][1:]]}


damaged_log_case("logs/forged-newer-version", lambda d: {**d, "log_version": 99})
damaged_log_case("logs/mistyped-field", lambda d: first_step(d, seconds="fast"))
damaged_log_case("logs/last-old-outside-range", lambda d: {**d, "last_old": "../../etc"})
damaged_log_case("logs/20mb-command", lambda d: {**d, "command": "tfbisect bisect " + "x" * 20_000_000}, True)


@case("logs/two-bisections-same-second", "serial")
def logs_same_second(ctx: Ctx) -> str:
    """Two bisections of one scenario started together: two logs, both whole."""
    args = ["bisect", "--good", TF_OLD, "--bad", TF_NEW, "--no-narrow", "--backend", "venv", "--python", PY]
    args += ["--scenario", str(scenario("fault_bisect_hang")), "--timeout", "60"]
    both = [ctx.start(*args), ctx.start(*args)]
    calls = [ctx.finish(running, 180) for running in both]
    for call in calls:
        ctx.no_traceback(call)
        ctx.rc(call, [0], "bisect")
    logs = bisect_logs(ctx.reports)
    ctx.expect(len(logs) == 2, f"{len(logs)} bisection log(s) for two bisections: {[p.name for p in logs]}")
    for log in logs:
        status = None
        with contextlib.suppress(OSError, ValueError):
            status = json.loads(log.read_text(encoding="utf-8")).get("status")
        ctx.expect(status == "found", f"{log.name}: status {status!r}")
    same = len({p.name[:15] for p in logs}) == 1
    return f"{len(logs)} logs ({'the same second' if same else 'seconds apart'}): " + ", ".join(
        p.name[:22] for p in logs
    )


# What a scenario controls and a reader must not be fooled by: bidirectional and zero-width
# controls, a newline that would forge a console line, and GitHub's autolink forms.
INVISIBLE = "\u202e\u2066\u200b"
AUTOLINKS = ("GH-7", "www.evil.example", "owner/repo@1234567", "someone@evil.example")
FORGED_LINE = "forged-console-line"
HOSTILE_TEXT = f"look{INVISIBLE}here {' '.join(AUTOLINKS)}\n{FORGED_LINE} round 9 good"
# Written into the case's folder at run time, so that the repository holds no raw control.
HOSTILE_SCENARIO = """'''Hostile free text: {doc}'''

import json
import sys

sys.path.insert(0, {folder!r})

from _valid import EXIT, document, output_path

TEXT = {text!r}


def main():
    outcome = "reproduced" if "tf2.21.0" in sys.prefix else "not_reproduced"
    doc = document(__file__, outcome, summary=TEXT)
    doc["probes"][0]["summary"] = TEXT
    doc["probes"][0]["kind"] = TEXT
    output_path().write_text(json.dumps(doc), encoding="utf-8")
    print(TEXT, flush=True)
    sys.exit(EXIT[outcome])


if __name__ == "__main__":
    main()
"""


def invisible_in(text: str) -> list[str]:
    """Bidirectional, zero-width and other format characters, line separators, C0/C1 controls."""
    return sorted(
        {
            f"U+{ord(c):04X}"
            for c in text
            if unicodedata.category(c) in ("Cf", "Zl", "Zp", "Cc") and c not in "\n\t\r"
        }
    )


@case("text/bidi-zero-width-and-autolinks")
def text_hostile(ctx: Ctx) -> str:
    folder = ctx.dir / "scenarios"
    folder.mkdir()
    path = folder / "fault_hostile_text.py"
    doc = HOSTILE_TEXT.replace("\n", " ")
    path.write_text(
        HOSTILE_SCENARIO.format(doc=doc, folder=str(SCENARIOS), text=HOSTILE_TEXT), encoding="utf-8"
    )
    # The terms are the user's free text, shown in the summary's prose (not only in code).
    old, new = (
        f"fine{INVISIBLE} {AUTOLINKS[0]} {AUTOLINKS[1]}",
        f"broken {AUTOLINKS[2]} {AUTOLINKS[3]}\n{FORGED_LINE}",
    )
    call = bisection(ctx, path, "--term-old", old, "--term-new", new)
    ctx.no_traceback(call)
    ctx.rc(call, [0], "bisect")
    log = ctx.tfb("bisect", "log")
    ctx.rc(log, [0], "bisect log")
    report = ctx.tfb("report", "--scenario", str(path), "--out", str(ctx.out))
    ctx.rc(report, [0], "report")
    views = {"bisect": call.text, "bisect log": log.text, "report": report.text}
    views.update({name: read_out(ctx, name) for name in ("report.html", "summary.md")})
    for view, shown in views.items():
        found = invisible_in(shown)
        ctx.expect(not found, f"{view}: raw {' '.join(found)}")
        ctx.expect("\\u202e" in shown or view == "report", f"{view} does not show the bidi control escaped")
        # A console line forged by a newline (HTML and Markdown escape their text their own way).
        forged = [line for line in shown.splitlines() if line.lstrip().startswith(FORGED_LINE)]
        ctx.expect(view.endswith((".html", ".md")) or not forged, f"{view}: a newline forged a line")
    # GitHub links nothing in code; in the prose, every autolink form must be defused.
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"(?ms)^```.*?^```", "", views["summary.md"]))
    for link in AUTOLINKS:
        ctx.expect(link not in prose, f"summary.md: {link!r} is a live GitHub reference")
        ctx.expect(link in prose.replace("<!-- -->", ""), f"summary.md does not show {link!r} (the terms)")
    return "terminal, report.html and summary.md: escaped, one line each, no live reference"


@case("resume/sigint-of-bisect-force-resumes-without-force", "serial")
def resume_no_force(ctx: Ctx) -> str:
    return interrupted_search(ctx, "bisect", sig=signal.SIGINT, force=True)


@case("trace/hostile-kept")
def trace_hostile(ctx: Ctx) -> str:
    raise Skip(
        "a trace needs TensorFlow in the environment (the probe tracer wraps TF's API) and the table's "
        "venvs are empty: tests/test_narrowing.py refuses a hostile trace before it is kept, and --force re-traces"
    )


# ------------------------------------------------------------------------ cases: Docker
def docker_run(ctx: Ctx, stem: str, *, timeout: float = 60, reports: Path | None = None, **kw: Any) -> Call:
    if ctx.table.docker_broken:
        raise RuntimeError(f"the Docker image does not build: {ctx.table.docker_broken}")
    call = ctx.run(scenario(stem), timeout=timeout, backend="docker", reports=reports, **kw)
    record = record_of(reports or ctx.reports, stem) or {}
    image = str(record.get("extra", {}).get("image") or "")
    if image:
        ctx.table.image_tags.add(image)
    if call.rc == 125 and record.get("infrastructure"):
        ctx.table.docker_broken = clean(failure_text(record), 200)
        raise RuntimeError(f"the Docker image does not build: {ctx.table.docker_broken}")
    return call


def sandbox(ctx: Ctx) -> dict[str, Any]:
    """The sandbox scenario's metrics (the first docker case builds the image: minutes)."""
    call = docker_run(ctx, "docker_sandbox", reports=ctx.table.docker_reports, wall=1500)
    ctx.no_traceback(call)
    ctx.rc(call, [0])
    record = record_of(ctx.table.docker_reports, "docker_sandbox") or {}
    probes = (record.get("document") or {}).get("probes") or [{}]
    metrics = probes[0].get("metrics") or {}
    return dict(metrics)


@case("docker/scenario-is-not-pid-1", "docker")
def docker_pid(ctx: Ctx) -> str:
    metrics = sandbox(ctx)
    pid = metrics.get("pid")
    ctx.expect(isinstance(pid, int) and pid != 1, f"the scenario ran as pid {pid} (no init in the container)")
    return f"the scenario ran as pid {pid}"


@case("docker/network-is-none", "docker")
def docker_network(ctx: Ctx) -> str:
    metrics = sandbox(ctx)
    for what in ("connect", "resolve"):
        ctx.expect(str(metrics.get(what, "")).startswith("failed"), f"{what}: {metrics.get(what)}")
    return (
        f"connect {clean(str(metrics.get('connect')), 60)}; resolve {clean(str(metrics.get('resolve')), 60)}"
    )


@case("docker/root-is-read-only", "docker")
def docker_read_only(ctx: Ctx) -> str:
    metrics = sandbox(ctx)
    ctx.expect(metrics.get("root_read_only") is True, "the root file system is mounted read-write")
    ctx.expect(not metrics.get("writable"), f"the scenario wrote to {metrics.get('writable')}")
    return "/ is mounted read-only; nothing outside the tmpfs folders is writable"


@case("docker/timeout-removes-the-container", "docker")
def docker_timeout(ctx: Ctx) -> str:
    call = docker_run(ctx, "docker_hang", timeout=3, wall=90)
    ctx.no_traceback(call)
    ctx.rc(call, [124])
    ctx.expect(call.seconds <= 3 + 10, f"returned after {call.seconds:.1f}s (timeout 3s)")
    left = containers_mounting([ctx.dir])
    ctx.expect(not left, f"container(s) left right after the run: {left}")
    return f"timeout after {call.seconds:.1f}s, container removed"


@case("docker/out-of-memory", "docker")
def docker_oom(ctx: Ctx) -> str:
    call = docker_run(ctx, "docker_oom", env={"TFBISECT_MEMORY": "128m"}, wall=120)
    return expect_error(
        ctx,
        call,
        "docker_oom",
        ("128m", "128 MiB", "128MiB", "134217728"),
        reports=ctx.reports,
        also=("out of memory",),
    )


@case("docker/sigsegv", "docker")
def docker_sigsegv(ctx: Ctx) -> str:
    call = docker_run(ctx, "docker_sigsegv", wall=120)
    return expect_error(ctx, call, "docker_sigsegv", ("SIGSEGV",), reports=ctx.reports)


@case("docker/exit-125-is-the-scenarios-not-dockers", "docker")
def docker_exit_125(ctx: Ctx) -> str:
    call = docker_run(ctx, "docker_exit_125", wall=120)
    ctx.no_traceback(call)
    record = record_of(ctx.reports, "docker_exit_125") or {}
    ctx.expect(
        not record.get("infrastructure"),
        "the scenario's exit 125 was taken for a container that never started",
    )
    ctx.expect(
        record.get("outcome") == "error", f"outcome {record.get('outcome')} (as on the venv backend: error)"
    )
    ctx.rc(call, [70])
    return "exit 125 without a document is the scenario's error, as on the venv backend"


@case("docker/result-symlink-to-a-host-secret", "docker")
def docker_symlink(ctx: Ctx) -> str:
    DOCKER_SECRET_PATH.write_text(valid_document(scenario("docker_result_symlink"), ctx.table.secret))
    try:
        call = docker_run(ctx, "docker_result_symlink", wall=120)
    finally:
        DOCKER_SECRET_PATH.unlink(missing_ok=True)
    detail = expect_error(
        ctx, call, "docker_result_symlink", ("symlink", "symbolic link"), reports=ctx.reports
    )
    ctx.secrets_in(ctx.reports)
    return detail


@case("docker/kill-9-of-the-driver-container-ends-by-its-deadline", "docker")
def docker_kill_driver(ctx: Ctx) -> str:
    """The driver killed with SIGKILL: the container still ends by its own deadline (the
    watchdog inside: --timeout plus 60 s) and the next tfbisect on the engine removes it."""
    if ctx.table.docker_broken:
        raise RuntimeError(f"the Docker image does not build: {ctx.table.docker_broken}")
    args = ["run", "--tf", TF_NEW, "--python", PY, "--backend", "docker"]
    running = ctx.start(*args, "--scenario", str(scenario("docker_hang")), "--timeout", "5")
    if not wait_for(lambda: bool(containers_mounting([ctx.dir])), 300, running):
        ctx.problems.append(f"no container started: {last_line(ctx.finish(running, 5))}")
        return ""
    running.popen.send_signal(signal.SIGKILL)
    ctx.finish(running, 10)

    def ended() -> bool:
        for name in containers_mounting([ctx.dir]):
            if docker("inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true":
                return False
        return True

    ctx.expect(wait_for(ended, 5 + 60 + 30), "the container ran past its deadline without its driver")
    ctx.tfb(*args, "--scenario", str(scenario("fault_ok")), "--force", wall=300)
    left = containers_mounting([ctx.dir])
    ctx.expect(not left, f"the next tfbisect left the ended container(s): {left}")
    return "the container ended by its deadline; the next command removed it"


@case("docker/sigterm-removes-the-container", "docker")
def docker_sigterm(ctx: Ctx) -> str:
    if ctx.table.docker_broken:
        raise RuntimeError(f"the Docker image does not build: {ctx.table.docker_broken}")
    args = ["run", "--tf", TF_NEW, "--python", PY, "--backend", "docker"]
    running = ctx.start(*args, "--scenario", str(scenario("docker_hang")), "--timeout", "120")

    def scenario_started() -> bool:
        for name in containers_mounting([ctx.dir]):
            if "fault-scenario-started" in docker("logs", name, timeout=30).stdout:
                return True
        return False

    if not wait_for(scenario_started, 300, running):
        call = ctx.finish(running, 5)
        ctx.problems.append(f"the container never started the scenario: {last_line(call)}")
        return ""
    sent = time.monotonic()
    running.popen.send_signal(signal.SIGTERM)
    call = ctx.finish(running, 40)
    took = time.monotonic() - sent
    ctx.no_traceback(call)
    ctx.rc(call, [143])
    ctx.expect(took < 10, f"took {took:.1f}s to stop after SIGTERM")
    left = containers_mounting([ctx.dir])
    ctx.expect(not left, f"container(s) left: {left}")
    return f"exit {call.rc} {took:.1f}s after SIGTERM, no container left"


FAULT_WHEEL = "tfbisect_fault_wheel-1.0-py3-none-any.whl"


def fault_wheel(folder: Path) -> str:
    """A small pure-Python wheel made here (nothing is fetched from an index); its sha256."""
    info = "tfbisect_fault_wheel-1.0.dist-info"
    files = {
        "tfbisect_fault_wheel/__init__.py": b"VALUE = 1\n",
        "tfbisect_fault_wheel/padding.txt": secrets.token_hex(64 * 1024).encode(),
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: tfbisect-fault-wheel\nVersion: 1.0\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: fault-table\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    path = folder / FAULT_WHEEL
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@case("cache/wheel-cut-short", "docker")
def cache_wheel_cut_short(ctx: Ctx) -> str:
    """A wheel in the wheel cache cut short (a full disk during a fetch): the next build that
    needs it finds it damaged, fetches it again and judges the version: never a skip.  (The venv
    backend installs through uv's own cache; the wheel cache is the Docker backend's.)"""
    if ctx.table.docker_broken:
        raise RuntimeError(f"the Docker image does not build: {ctx.table.docker_broken}")
    stem = "docker_sandbox"  # a valid document, no venv-only import
    links, locks = ctx.dir / "index", ctx.dir / "locks"
    links.mkdir()
    locks.mkdir()
    sha = fault_wheel(links)
    pinned = f"tfbisect-fault-wheel==1.0 \\\n    --hash=sha256:{sha}\n"
    for version in (TF_OLD, TF_NEW):
        # Both flavours: a CPU image of TF 2.14+ installs from its CUDA lock.
        for flavour in ("cpu", "cuda"):
            header = LOCK_TEXT.format(version=version, python=PY, flavour=flavour)
            (locks / f"tf{version}-py{PY}-{flavour}.txt").write_text(header + pinned)
    # The host's `pip wheel` fills the wheel cache from this folder, as from an index.
    env = {"TFBISECT_LOCKS": str(locks), "PIP_FIND_LINKS": str(links), "PIP_NO_INDEX": "1"}
    calls = []
    kept = ctx.table.cache / "wheels" / f"py{PY}" / FAULT_WHEEL
    for version in (TF_NEW, TF_OLD):
        args = ["run", "--tf", version, "--python", PY, "--backend", "docker", "--timeout", "60"]
        calls.append(ctx.tfb(*args, "--scenario", str(scenario(stem)), env=env, wall=900))
        record = record_of(ctx.reports, stem, version) or {}
        ctx.table.image_tags.add(str(record.get("extra", {}).get("image") or ""))
        if version == TF_NEW and ctx.expect(kept.is_file(), "the wheel was not kept in the wheel cache"):
            with open(kept, "r+b") as handle:  # cut short, as by ENOSPC
                handle.truncate(kept.stat().st_size // 2)
    for call, version in zip(calls, (TF_NEW, TF_OLD), strict=True):
        ctx.no_traceback(call)
        ctx.rc(call, [0], f"TF {version}")
        outcome = (record_of(ctx.reports, stem, version) or {}).get("outcome")
        ctx.expect(outcome == "not_reproduced", f"TF {version} stored as {outcome!r}, not a verdict")
    said = calls[-1].text
    ctx.expect("not a complete wheel" in said, f"the damaged wheel was not named: {last_line(calls[-1])}")
    whole = kept.is_file() and hashlib.sha256(kept.read_bytes()).hexdigest() == sha
    ctx.expect(whole, "the wheel cache does not hold the whole wheel again")
    return "the cut wheel was found, fetched again, and the version judged (no skip)"


# ---------------------------------------------------------------------------------- main
def select(only: str | None, use_docker: bool) -> list[Case]:
    chosen = [c for c in CASES if (only is None or only in c.name) and (use_docker or c.phase != "docker")]
    if any(c.phase not in ("setup", "docker") for c in chosen):
        chosen = [c for c in CASES if c.phase == "setup"] + [c for c in chosen if c.phase != "setup"]
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", metavar="SUBSTRING", help="only the cases whose name contains this")
    parser.add_argument("--no-docker", action="store_true", help="leave out the docker/ cases")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="cases at once where that is safe (2)")
    args = parser.parse_args(argv)
    chosen = select(args.only, not args.no_docker)
    if not chosen:
        print(f"faults: no case matches {args.only!r}", file=sys.stderr)
        return 2
    wants_docker = any(c.phase == "docker" for c in chosen)
    if wants_docker and not docker_available():
        print("faults: no Docker engine answers; the docker/ cases will fail", file=sys.stderr)
    table = Table(max(1, args.jobs), wants_docker and docker_available())
    if wants_docker and table.docker:
        table.images_before = images()
        table.containers_before = set(docker("ps", "-a", "--format", "{{.ID}}").stdout.split())
    results: list[Result] = []
    printed = threading.Lock()

    def emit(result: Result) -> None:
        with printed:
            results.append(result)
            print(f"{result.status:<4}  {result.name}  {result.detail} ({result.seconds:.1f}s)", flush=True)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    began = time.monotonic()
    interrupted = False
    try:
        for phase in PHASES:
            batch = [c for c in chosen if c.phase == phase]
            if not batch:
                continue
            if phase == "docker" and not table.docker:
                for spec in batch:
                    emit(Result(spec.name, "FAIL", "no Docker engine answers", 0.0))
                continue
            workers = table.jobs if phase in ("parallel", "store") else 1
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(run_case, table, spec) for spec in batch]
                for future in futures:
                    emit(future.result())
        table.sweep_leftovers()
    except KeyboardInterrupt:
        interrupted = True
        table.stopping = True
        table.kill_active()
        print("faults: interrupted; cleaning up", file=sys.stderr)
    finally:
        try:
            table.cleanup()
        except Exception as exc:
            print(f"faults: cleanup raised {type(exc).__name__}: {exc}", file=sys.stderr)
    counted = [r for r in results if r.status != "SKIP"]
    passed = sum(1 for r in counted if r.status == "PASS")
    counts = table.counts
    print(
        f"faults: cases {len(counted)}, passed {passed}, containers leaked {counts['containers']}, "
        f"processes leaked {counts['processes']}, temporary folders leaked {counts['tmp']}, results lost {counts['lost']}, secrets leaked {len(table.leaks)}",
        flush=True,
    )
    print(f"faults: took {time.monotonic() - began:.0f}s", file=sys.stderr)
    if interrupted:
        return 130
    clean_run = passed == len(counted) and not any(counts.values()) and not table.leaks
    return 0 if clean_run else 1


if __name__ == "__main__":
    sys.exit(main())
