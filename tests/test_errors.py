"""Exit codes live in one place, are unique, and the README documents every one of them."""

from __future__ import annotations

import re

from tfbisect.core import errors
from tfbisect.core.errors import ExitCode, TfbisectError
from tfbisect.core.interrupt import Interrupted
from tfbisect.core.outcome import Outcome

from conftest import ROOT


def _subclasses(cls: type[TfbisectError]) -> list[type[TfbisectError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_error_class_uses_a_code_of_the_table() -> None:
    classes = _subclasses(TfbisectError)
    assert {c.__name__ for c in classes} >= {
        "DockerError",
        "PostError",
        "UsageError",
        "BackendUnavailableError",
    }
    for cls in classes:
        assert isinstance(cls.exit_code, ExitCode), cls
    codes = [c.exit_code for c in classes if c.__module__ == errors.__name__]
    assert len(codes) == len(set(codes)), "two error classes share an exit code"


def test_run_exit_codes_and_signals_are_in_the_table() -> None:
    for outcome in Outcome:
        assert ExitCode[outcome.name] >= 0
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        assert Interrupted(sig).exit_code == ExitCode[sig.name]


def test_the_readme_documents_every_code() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| code | meaning |") :].split("\n\n")[0]
    documented = {
        int(n)
        for n in re.findall(r"\b(\d+)\b", "\n".join(line.split("|")[1] for line in table.splitlines()[2:]))
    }
    assert documented == {int(code) for code in ExitCode}
