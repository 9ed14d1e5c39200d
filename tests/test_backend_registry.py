"""A backend is one module plus one registry line: a toy backend, defined here and registered
through `envs.registry` alone, runs a real scenario through the real `Runner` and the real
`tfbisect run`, and the stored record names it.  Also: the registry's own rules (auto, capacity,
where traced runs go, names) and the import-linter contract that keeps backends out of the
command line, the searches and the reports.
"""

from __future__ import annotations

import sys
import textwrap
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tfbisect.cli import main
from tfbisect.core import catalogue
from tfbisect.core.catalogue import Release
from tfbisect.core.errors import BackendUnavailableError, UsageError
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.scenario import Scenario, find
from tfbisect.core.spec import EnvSpec, Flavour, LockSpec
from tfbisect.core.store import ResultStore
from tfbisect.envs import registry
from tfbisect.envs.environments import Context, Ended, Launch, Options, Registration, Traced, option
from tfbisect.envs.locks import Lock
from tfbisect.platform.process import Finished
from tfbisect.runs.runner import Runner, Settings

from conftest import DATA

ROOT = Path(__file__).resolve().parents[1]
TF = "2.21.0"  # it has a committed lock for Python 3.11, the driver's Python


@dataclass(frozen=True)
class ToyConfig:
    label: str  # what the toy writes into each record it makes (from --base-image, say)


class ToyBackend:
    """Runs the scenario with the driver's own interpreter in the run's folder: no environment is
    built, so the test runs in a second."""

    name = "toy"

    def __init__(self, config: ToyConfig, context: Context) -> None:
        self.config = config
        self.prepared: list[str] = []

    def python_for(self, release: Release, pinned: str | None) -> str:
        return f"{sys.version_info.major}.{sys.version_info.minor}"

    def lock_spec(self, spec: EnvSpec) -> LockSpec:
        return spec.lock_spec()

    def prepare(self, spec: EnvSpec, lock: Lock, log_dir: Path) -> Path:
        self.prepared.append(spec.key)
        return Path(sys.executable)

    @contextmanager
    def launch(
        self, spec: EnvSpec, scenario: Scenario, prepared: Path, outdir: Path, traced: Traced | None = None
    ) -> Iterator[Launch]:
        argv = [str(prepared), str(scenario.path), "--output", str(outdir / "result.json")]
        yield Launch(argv=argv, env={}, extra={"toy": self.config.label}, shown=" ".join(argv))

    def ended(self, launch: Launch, finished: Finished, has_result: bool) -> Ended:
        return Ended(exit_code=finished.exit_code)

    def source_places(self, spec: EnvSpec, prepared: Path, lock: Lock) -> list[Path]:
        return []


def _configure(options: Options) -> ToyConfig:
    return ToyConfig(str(option(options, "base_image") or "plain"))


def _check(config: ToyConfig, progress: Progress) -> None:
    if config.label == "broken":
        raise BackendUnavailableError("The toy is broken.", "use another --base-image.")


TOY = Registration(
    name=ToyBackend.name,
    configure=_configure,
    make=ToyBackend,
    describe=lambda fallback: "the toy backend (the driver's own Python)",
    check=_check,
    capacity=lambda backend, flavour: 3,
    traced_by="venv",
)


@pytest.fixture
def toy() -> Iterator[Registration[ToyConfig, ToyBackend]]:
    registry.register(TOY)
    try:
        yield TOY
    finally:
        registry.unregister(TOY.name)


def answering(folder: Path) -> Scenario:
    """A scenario that answers `reproduced` with a real document (TF 2.21.0's, its own hash)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "answers_toy.py"
    path.write_text(
        textwrap.dedent(
            f"""
            import hashlib, json, sys
            out = sys.argv[sys.argv.index("--output") + 1]
            document = json.load(open({str(DATA / "record-tf2.21.0.json")!r}))["document"]
            document["scenario"]["sha256"] = hashlib.sha256(open(__file__, "rb").read()).hexdigest()
            document["verdict"]["outcome"] = "reproduced"
            json.dump(document, open(out, "w"))
            sys.exit(1)
            """
        )
    )
    return find(str(path))


def test_a_registered_backend_runs_through_the_real_runner_and_is_stored_by_name(
    toy: Registration[ToyConfig, ToyBackend], tmp_path: Path
) -> None:
    settings = Settings(
        tmp_path / "reports", tmp_path / "cache", lock_missing=False, options={"base_image": "x1"}
    )
    runner = Runner(catalogue.load_snapshot(), settings, Progress(quiet=True))
    scenario = answering(tmp_path / "scenarios")
    spec = runner.spec_for(TF, backends=("toy",))
    assert spec.backend == "toy" and spec.key.endswith("-cpu-toy")
    first = runner.run(spec, scenario)
    assert not first.reused and first.record.outcome is Outcome.REPRODUCED
    assert first.record.extra["toy"] == "x1"  # its config came from the options, through the registry
    stored = ResultStore(settings.reports_dir / "results").get(scenario.name, scenario.sha256, spec)
    assert stored is not None and stored.spec.backend == "toy"
    assert "--backend toy" in str(stored.extra["reproduce"])
    again = runner.run(spec, scenario)  # the stored record is found again under its key
    assert again.reused and again.record == stored
    backend = runner.environment("toy")
    assert isinstance(backend, ToyBackend) and backend.prepared == [spec.key]


def test_the_command_line_offers_a_registered_backend_and_checks_it(
    toy: Registration[ToyConfig, ToyBackend], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = answering(tmp_path / "scenarios")
    reports = tmp_path / "reports"
    words = ["--reports", str(reports), "--cache", str(tmp_path / "cache"), "-q", "run", "--tf", "2.21"]
    words += ["--python", "3.11", "--backend", "toy", "--scenario", str(scenario.path)]
    assert main([*words, "--base-image", "broken"]) == BackendUnavailableError.exit_code
    assert "The toy is broken." in capsys.readouterr().err
    assert main(words) == 1  # reproduced: git bisect run's "bad"
    [(path, record)] = list(ResultStore(reports / "results").records())
    assert record.spec.backend == "toy" and path.name == f"{record.spec.key}.json"
    assert record.extra["toy"] == "plain"


def test_the_registry_answers_for_a_registered_backend(toy: Registration[ToyConfig, ToyBackend]) -> None:
    assert "toy" in registry.names() and "given" not in registry.names()
    assert "given" in registry.names(selectable=False)
    assert (
        registry.choose("toy", Progress(quiet=True)).describe() == "the toy backend (the driver's own Python)"
    )
    made = registry.make("toy", {}, Context(Path("/nonexistent"), Progress(quiet=True), {}))
    assert registry.capacity(made, Flavour.CPU) == 3
    assert registry.traced_spec(EnvSpec(TF, "3.11", backend="toy")).backend == "venv"
    with pytest.raises(ValueError, match="already registered"):
        registry.register(TOY)


def test_unknown_and_built_in_names(tmp_path: Path) -> None:
    assert registry.names() == ("venv", "docker", "swarm")
    assert registry.traced_spec(EnvSpec(TF, "3.11", backend="swarm")).backend == "docker"
    assert registry.traced_spec(EnvSpec(TF, "3.11", backend="docker")).backend == "docker"
    assert registry.ranked_after("docker") == ("venv",) and registry.ranked_after("venv") == ()
    with pytest.raises(UsageError, match="no backend named 'podman'"):
        registry.registration("podman")
    with pytest.raises(ValueError, match="built-in"):
        registry.unregister("venv")
    # a venv needs no check; a venv backend has no capacity of its own (--jobs 1)
    registry.check("venv", {}, Progress(quiet=True))
    made = registry.make("venv", {}, Context(tmp_path, Progress(quiet=True), {}))
    assert made.name == "venv" and registry.capacity(made, Flavour.CPU) is None


def test_a_stored_record_keeps_its_key_and_backend() -> None:
    for name in ("venv", "docker", "swarm"):
        spec = EnvSpec.from_dict(
            {
                "tf_version": TF,
                "python": "3.11",
                "flavour": "cpu",
                "keras": "default",
                "backend": name,
                "base": "",
            }
        )
        assert spec.key == f"tf{TF}-py3.11-cpu-{name}" and spec.to_dict()["backend"] == name
    with pytest.raises(ValueError, match="no backend name"):
        EnvSpec.from_dict({"tf_version": TF, "python": "3.11", "backend": "../x"})


def test_the_forbidden_contract_names_every_backend_module() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [forbidden] = [
        c
        for c in contracts
        if "tfbisect.envs.docker_engine" in c.get("forbidden_modules", ())
        and "tfbisect.cli" in c.get("source_modules", ())
    ]
    envs = ROOT / "bisect/tfbisect/envs"
    modules = {
        f"tfbisect.envs.{p.stem}" for pattern in ("backend_*.py", "docker_*.py") for p in envs.glob(pattern)
    }
    assert modules and modules <= set(forbidden["forbidden_modules"])
    above = {"tfbisect.cli", "tfbisect.cli_parser", "tfbisect.commands", "tfbisect.narrow", "tfbisect.search"}
    assert above | {"tfbisect.report"} <= set(forbidden["source_modules"])
