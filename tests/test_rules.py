"""One place for each rule: grep tests that keep it so, as test_errors keeps the exit-code table.

Each rule names the files allowed to hold what it forbids; every other host module of the
package (data/ runs inside TF environments on Python 3.6 and cannot import the package, so
it is outside these rules) must be free of it.  Each rule is also shown to fire on a planted
line, so that a pattern which can no longer match cannot pass for a kept rule.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tfbisect.core import jsonread

from conftest import ROOT

PACKAGE = ROOT / "bisect" / "tfbisect"


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    allowed: frozenset[str]  # modules or folders ("envs/"), relative to bisect/tfbisect: its one place
    planted: str  # a line that breaks the rule
    innocent: str  # a line close to it that does not

    def breaches(self, relative: str, text: str) -> list[str]:
        if any(
            relative == place or (place.endswith("/") and relative.startswith(place))
            for place in self.allowed
        ):
            return []
        return [
            f"{relative}:{n}: {line.strip()}"
            for n, line in enumerate(text.splitlines(), 1)
            if not line.lstrip().startswith("#") and self.pattern.search(line)
        ]


def host_modules() -> list[tuple[str, str]]:
    """(path relative to bisect/tfbisect, text) of every module that runs in tfbisect itself."""
    return [
        (path.relative_to(PACKAGE).as_posix(), path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "data"
    ]


RULES = [
    Rule(
        "one clip: text is cut only by core/textsafe.clip",
        re.compile(
            r"^def\s+_?(clip|cut|truncate|shorten|ellipsize)(_\w+)?\s*\("
            r"|\[\s*:[^\]\n]*\]\s*\+\s*f?[\"'][^\"'\n]*(…|\.\.\.)"
        ),
        frozenset({"core/textsafe.py"}),
        planted='    return text if len(text) <= limit else text[: limit - 1] + "…"',
        innocent='    return clip(text, limit, mark="…")',
    ),
    Rule(
        "one bounded JSON reader: JSON from outside is read by core/jsonread only",
        re.compile(r"\bjson\.loads?\(|\bJSONDecoder\b"),
        frozenset({"core/jsonread.py"}),
        planted="        document = json.loads(path.read_text())",
        innocent="        document = jsonread.read(path, max_bytes=KEPT_MAX_BYTES)",
    ),
    Rule(
        "UTC timestamps from core/fsio: now_iso, stamp, fine_stamp, iso_z",
        re.compile(
            r"\.(now|utcnow|today)\(|\bstrftime\(|\btime\.(localtime|gmtime|ctime|asctime|strftime)\b"
        ),
        frozenset({"core/fsio.py"}),
        planted="    aside = f\"{name}.corrupt-{time.strftime('%Y%m%d%H%M%S')}\"",
        innocent='    aside = f"{name}.corrupt-{stamp()}"',
    ),
    Rule(
        "atomic writes only through core/fsio: no temporary file renamed into place elsewhere",
        re.compile(
            r"\bos\.(replace|rename)\(|\bmkstemp\(|\bNamedTemporaryFile\b|\.tmp\b[\"']"
            r"|\btmp\w*\)?\.(replace|rename)\("
        ),
        # scaffold.py holds the text of a new scenario, which runs inside TF environments and
        # cannot import the package: it writes its own result the atomic way.
        frozenset({"core/fsio.py", "core/scaffold.py"}),
        planted='    os.replace(str(path) + ".tmp", path)',
        innocent="    write_text_atomic(path, text)",
    ),
    Rule(
        "no switch on a backend's name outside envs/: ask envs/registry",
        re.compile(
            r"[=!]=\s*[\"'](venv|docker|swarm|given)[\"']|[\"'](venv|docker|swarm|given)[\"']\s*[=!]="
            r"|\bin\s*[(\[{]\s*[\"'](venv|docker|swarm|given)[\"']|\bcase\s+[\"'](venv|docker|swarm|given)[\"']"
        ),
        frozenset({"envs/"}),
        planted='    if spec.backend == "swarm":',
        innocent="    if options.interpreter is not None and env.backend != registry.SINGLE:",
    ),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name.split(":")[0])
def test_each_rule_has_its_one_place(rule: Rule) -> None:
    found = [breach for relative, text in host_modules() for breach in rule.breaches(relative, text)]
    assert found == [], f"{rule.name}; found elsewhere:\n" + "\n".join(found)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name.split(":")[0])
def test_each_rule_fires_on_a_planted_breach(rule: Rule) -> None:
    assert rule.breaches("planted.py", f"x = 1\n{rule.planted}\n") == [
        f"planted.py:2: {rule.planted.strip()}"
    ]
    assert rule.breaches("planted.py", rule.innocent) == []
    assert all(rule.breaches(allowed, rule.planted) == [] for allowed in rule.allowed)


def test_the_one_json_reader_is_as_strict_as_the_result_reader_was(tmp_path: Path) -> None:
    for hostile in ("[NaN]", '{"x": -Infinity}', "1e400", "1" * 31, "[" * 100_000):
        with pytest.raises((ValueError, RecursionError)):
            jsonread.loads(hostile)
    assert jsonread.loads(b'{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
    assert jsonread.loads("[NaN, 1]", constants_as_null=True) == [None, 1]
    with pytest.raises(UnicodeDecodeError):
        jsonread.loads(b'"\xff"')
    path = tmp_path / "big.json"
    path.write_text("[" + "0, " * 100 + "0]")
    with pytest.raises(jsonread.TooLarge, match="over the cap of 100"):
        jsonread.read(path, max_bytes=100)
    assert len(jsonread.read(path, max_bytes=None)) == 101


FUNCTION_MAX_LINES = 80
CLASS_MAX_LINES = 250


def oversized(relative: str, text: str) -> list[str]:
    """Functions over 80 lines and classes over 250 (decorators and docstrings included)."""
    found = []
    for node in ast.walk(ast.parse(text)):
        is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        if is_function or isinstance(node, ast.ClassDef):
            assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines = (node.end_lineno or node.lineno) - first + 1
            if lines > (FUNCTION_MAX_LINES if is_function else CLASS_MAX_LINES):
                found.append(f"{relative}:{first}: {node.name} has {lines} lines")
    return found


def test_no_function_over_80_lines_and_no_class_over_250() -> None:
    """The whole package, data/ included: a room with one job fits a screen or two."""
    found = [
        breach
        for path in sorted(PACKAGE.rglob("*.py"))
        for breach in oversized(path.relative_to(PACKAGE).as_posix(), path.read_text(encoding="utf-8"))
    ]
    assert found == []


@pytest.mark.parametrize(
    ("lines", "kind", "breaks"),
    [(80, "def", False), (81, "def", True), (250, "class", False), (251, "class", True)],
)
def test_the_size_rule_fires_on_a_planted_breach(lines: int, kind: str, breaks: bool) -> None:
    body = "".join(f"    x{n} = {n}\n" for n in range(lines - 1))
    planted = f"def f():\n{body}" if kind == "def" else f"class C:\n{body}"
    nested = "class Outer:\n" + "".join(f"    {line}\n" for line in planted.splitlines())
    expected = [f"x.py:1: {'f' if kind == 'def' else 'C'} has {lines} lines"] if breaks else []
    assert oversized("x.py", planted) == expected
    if kind == "def" and breaks:  # a method is measured as a function too
        assert oversized("x.py", nested) == [f"x.py:2: f has {lines} lines"]
