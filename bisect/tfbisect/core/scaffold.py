"""The scenario `tfbisect new NAME` writes: a short frame around the user's repro, as text.

The flagship scenario is 700 lines; a user's bug is 4 to 15.  The frame rendered here is the
least a scenario needs (the result document, `--probe`, the trace window, the exit status) in
under 40 lines before the user's code, with two probes of the same kind: `repro`, where the
user's code goes, and `control`, a check that passes in every release, which the narrowing
traces beside the failing probe.  A probe says its answer the way a plain script does: a
failed `assert` is "reproduced", returning is "not reproduced", any other exception is an
error (never "reproduced").  The rendered file runs on Python 3.6 to 3.13 with the standard
library and TensorFlow only.  Nothing here touches a file: the caller writes the text.
"""

from __future__ import annotations

import io
import re
import string
import tokenize

from tfbisect.core.errors import ScenarioError, UsageError
from tfbisect.core.issuetext import is_marked

# `tfbisect new` keeps the frame above the user's code this short (tests hold it to it).
MAX_LINES_BEFORE_CODE = 40
REPRO_START = "    # ---- your repro goes here"
REPRO_END = "    # ---- end of your repro ----"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,79}")
_FUTURE = re.compile(r"^from\s+__future__\s+import\s+[^\n]*$", re.MULTILINE)

EXAMPLE_REPRO = """\
    import tensorflow as tf

    x = tf.constant([1.0, 2.0])
    assert x.dtype == tf.float32, "expected float32, got %s" % x.dtype
"""
EXAMPLE_CONTROL = """\
    import tensorflow as tf

    assert tf.constant([1.0]).dtype == tf.float32
"""

_TEMPLATE = string.Template(
    r'''${header}"""${name}: ${description}

A tfbisect scenario: `tfbisect new` wrote the frame, the code in repro() is yours.  Run as
`python ${name}.py --output result.json [--probe repro|control]`; exit 0 = not reproduced,
1 = reproduced, 125 = skip (an unknown probe, no TensorFlow), 3 = error.  In a probe a failed
assert means reproduced, returning means not reproduced, any other exception is an error.
`control` must pass in every release: the narrowing traces it beside `repro`.
"""
${future}import argparse, builtins, hashlib, json, os, platform, sys, time, traceback

NAME = "${name}"


def repro():
    """The bug: assert what should hold (the assert fails where the bug is)."""
${repro_start} (between these two lines; it runs inside the trace window) ----
${repro}${repro_end}


def control():
    """The same kind of work, which passes in every release (the narrowing's passing probe)."""
${control}

PROBES = [("repro", repro), ("control", control)]  # kind "check" for both: comparable in a narrowing


def run_probe(name, function):
    window = getattr(builtins, "__tfbisect_trace__", None)  # only there when tfbisect traces the run
    started, error = time.perf_counter(), None
    if window:
        window(True)
    try:
        function()
        outcome, summary = "match", "not reproduced: %s ran to its end" % name
    except AssertionError as exc:
        outcome, summary = "mismatch", "reproduced: AssertionError: %s" % exc
    except Exception as exc:
        error = {"type": type(exc).__name__, "message": str(exc)[:500], "traceback_tail": traceback.format_exc()[-2000:]}
        outcome, summary = "error", "error: %s: %s" % (error["type"], error["message"])
    finally:
        if window:
            window(False)
    probe = {"name": name, "kind": "check", "outcome": outcome, "summary": summary, "metrics": {}}
    probe["duration_s"] = time.perf_counter() - started
    if error:
        probe["error"] = error
    return probe


def judge(probes):
    """The repro probe decides where it ran, else the probes that ran: a mismatch is reproduced."""
    deciding = [p for p in probes if p["name"] == "repro"] or probes
    for outcome, verdict in (("mismatch", "reproduced"), ("error", "error")):
        found = [p for p in deciding if p["outcome"] == outcome]
        if found:
            return verdict, "; ".join("%s: %s" % (p["name"], p["summary"]) for p in found)
    return "not_reproduced", "not reproduced: " + ", ".join(p["name"] for p in deciding) + " passed"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="result.json", help="where the JSON result goes")
    parser.add_argument("--probe", action="append", metavar="NAME", help="run only this probe (repeatable)")
    args = parser.parse_args()
    started, output, names = time.perf_counter(), os.path.abspath(args.output), [n for n, _ in PROBES]
    with open(os.path.abspath(__file__), "rb") as handle:
        sha256 = hashlib.sha256(handle.read()).hexdigest()
    environment = {"python": platform.python_version()}
    document = {"schema_version": 1, "scenario": {"name": NAME, "sha256": sha256}, "environment": environment}
    document.update(probes=[], timings={})
    unknown = [name for name in args.probe or [] if name not in names]
    if unknown:
        verdict, summary = "skip", "no probe named %s; the probes are: %s" % (", ".join(unknown), ", ".join(names))
    else:
        try:
            import tensorflow as tf  # before the probes: the trace window leaves the import out
        except Exception as exc:
            verdict, summary = "skip", "TensorFlow cannot be imported here: %s: %s" % (type(exc).__name__, exc)
        else:
            environment["tensorflow"] = str(tf.__version__)
            environment["git_version"] = getattr(getattr(tf, "version", None), "GIT_VERSION", None)
            document["timings"]["import_s"] = time.perf_counter() - started
            for name, function in PROBES:
                if not args.probe or name in args.probe:
                    document["probes"].append(run_probe(name, function))
            verdict, summary = judge(document["probes"])
    document["verdict"] = {"outcome": "skip" if verdict == "error" else verdict, "summary": summary, "disagreements": []}
    document["timings"]["total_s"] = time.perf_counter() - started
    with open(output + ".tmp", "w") as handle:
        json.dump(document, handle, indent=2, sort_keys=True)
    os.replace(output + ".tmp", output)
    print("verdict: " + summary)
    if verdict == "error":  # tfbisect records an error, named by the last "Type: message" line
        error = [p["error"] for p in document["probes"] if "error" in p][0]
        sys.stderr.write(error["traceback_tail"] + "%(type)s: %(message)s\n" % error)
    return {"not_reproduced": 0, "reproduced": 1, "skip": 125}.get(verdict, 3)


if __name__ == "__main__":
    sys.exit(main())
'''
)


def check_name(name: str) -> str:
    """The scenario's name as given, when it can be a module's name (and so a file's)."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"{name[:80]!r} cannot name a scenario: it becomes a file name and a Python module name.",
            "use letters, digits and underscores, starting with a letter (e.g. keras_dtype_change).",
        )
    return name


def render(name: str, description: str = "what goes wrong (one line)", repro: str | None = None) -> str:
    """The scenario text: the example repro, or `repro` (a function body, indented 4 spaces)."""
    return _render(check_name(name), description, repro if repro is not None else EXAMPLE_REPRO, "", "")


def from_script(code: str, name: str, description: str | None = None) -> str:
    """A plain script's code wrapped into the frame's `repro` probe.

    Its `from __future__` imports move to the top of the file (where Python wants them), and
    a stranger's-code mark (`issuetext.is_marked`) moves with them: the scenario stays marked.
    The lines of a multi-line string are left as they are, so their text does not change.
    ScenarioError when the wrapped code does not compile (e.g. `from m import *`, which a
    function cannot hold): run that script as it is with `--script` instead."""
    check_name(name)
    header = "".join(line + "\n" for line in code.splitlines() if is_marked(line))
    body = "\n".join(line for line in code.splitlines() if not is_marked(line))
    future = "".join(match.group(0) + "\n" for match in _FUTURE.finditer(body))
    body = _FUTURE.sub("", body)
    text = _render(
        name, description or "a plain script's repro", _indent(body) or "    pass\n", header, future
    )
    try:
        compile(text, f"{name}.py", "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ScenarioError(
            f"The script's code cannot be wrapped into a scenario: line {exc.lineno} of the result: {exc.msg}.",
            "run the script as it is (`--script FILE.py`), which needs no wrapping.",
        ) from exc
    return text


def lines_before_code(text: str) -> int:
    """How many lines of a rendered scenario come before the user's code (the first line after
    the `your repro goes here` comment)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith(REPRO_START):
            return number
    raise ValueError("not a scenario rendered by tfbisect.core.scaffold")


def _render(name: str, description: str, repro: str, header: str, future: str) -> str:
    return _TEMPLATE.substitute(
        header=header,
        future=future,
        name=name,
        description=" ".join(description.split()).replace('"""', "'''")[:200],
        repro_start=REPRO_START,
        repro=repro if repro.endswith("\n") else repro + "\n",
        repro_end=REPRO_END,
        control=EXAMPLE_CONTROL.rstrip("\n"),
    )


def _indent(code: str) -> str:
    """`code` indented by 4 spaces, but for lines that continue a multi-line string."""
    lines = code.strip("\n").splitlines()
    inside: set[int] = set()  # 1-based numbers of lines that start inside a string
    fstring_start, fstring_end = getattr(tokenize, "FSTRING_START", -1), getattr(tokenize, "FSTRING_END", -1)
    opened: list[int] = []  # the lines where the f-strings still open begin (3.12+ tokenizes them)
    try:
        for token in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline):
            if token.type == fstring_start:
                opened.append(token.start[0])
                continue
            first = opened.pop() if token.type == fstring_end and opened else token.start[0]
            if token.type in (tokenize.STRING, fstring_end) and token.end[0] > first:
                inside.update(range(first + 1, token.end[0] + 1))
    except (tokenize.TokenError, IndentationError, SyntaxError) as exc:
        raise ScenarioError(
            f"The script's code cannot be read as Python: {exc}.",
            "fix the code (a paste from an issue may have lost its indentation), then try again.",
        ) from exc
    return "".join(
        (line if number in inside or not line.strip() else "    " + line) + "\n"
        for number, line in enumerate(lines, start=1)
    )
