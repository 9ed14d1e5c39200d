"""Run a probe script with line tracing limited to some installed packages; write the lines that ran.

This is the measuring half of "the changed code the probe ran": tfbisect copies this file into
an environment (a venv or an image, Python 3.7 to 3.13) and runs it there as

    python probe_tracer.py --packages tensorflow,keras,tf_keras --output trace.json -- SCRIPT [ARGS...]

so it imports the standard library only and uses no syntax newer than Python 3.7 (the postponed
annotations below keep the modern annotations from ever being evaluated there).

Only code whose file lies under one of the packages' installed folders is traced, so the cost
stays near that of the untraced probe: on 3.12+ with `sys.monitoring` (a code object outside
the folders is disabled at its first start and never reported again; one inside gets local LINE
events, each line disabled once it has been counted), before 3.12 with `sys.settrace` (the global
function returns no local tracer for frames outside the folders).

The traced script may narrow what counts to the probe itself: it may call the builtin
`__tfbisect_trace__(True)` / `__tfbisect_trace__(False)` to open and close the window.  Once it
has called it, only lines run while the window was open count; if it never does, the whole run
counts.  The script runs as `__main__`; its exit status becomes this script's, and the document is
written (atomically) whatever the script did, raising included:

    {"schema": 1, "python": "3.x.y", "exit_code": int,
     "packages": {name: {"root": folder, "version": distribution version or null}},
     "files": {"keras/src/losses.py": {"lines": [sorted line numbers],
                                       "functions": [[qualified name, first line], ...]}},
     "files_left_out": int}
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import importlib.util
import json
import os
import runpy
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

SCHEMA = 1
WINDOW_BUILTIN = "__tfbisect_trace__"
MAX_FILES = 20000  # a trace of a real TF step has a few hundred; the cap bounds a hostile script
WRITE_FAILED = 125  # the exit status when the document itself could not be written


class Roots:
    """Which traced file belongs to which package, as the document names it ("keras/src/x.py")."""

    def __init__(self, roots: dict[str, str]) -> None:
        prefixes = []
        for name, root in roots.items():
            for form in {os.path.abspath(root), os.path.realpath(root)}:
                prefixes.append((form.rstrip(os.sep) + os.sep, name))
        # The longest folder first: a package installed inside another one is its own.
        self.prefixes = sorted(prefixes, key=lambda item: -len(item[0]))
        self.cache: dict[str, str | None] = {}

    def key(self, filename: str) -> str | None:
        """The document's name for a code object's file, or None when it is not traced."""
        try:
            return self.cache[filename]
        except KeyError:
            pass
        found = None
        if filename.endswith(".py") and not filename.startswith("<"):
            absolute = os.path.abspath(filename)
            for path in (absolute, os.path.realpath(absolute)):
                found = self._match(path)
                if found is not None:
                    break
        self.cache[filename] = found
        return found

    def _match(self, path: str) -> str | None:
        for prefix, name in self.prefixes:
            if path.startswith(prefix):
                return name + "/" + path[len(prefix) :].replace(os.sep, "/")
        return None


class Recorder:
    """The lines counted so far, per code object, and the state of the window."""

    def __init__(self) -> None:
        self.lines: dict[Any, set[int]] = {}
        self.counting = True  # until the script first uses the window, everything counts
        self.window_used = False
        self.on_window: list[Any] = []  # called after each change of the window

    def add(self, code: Any, line: int) -> None:
        found = self.lines.get(code)
        if found is None:
            found = self.lines[code] = set()
        found.add(line)

    def window(self, open_: bool) -> None:
        if not self.window_used:
            self.window_used = True
            self.lines.clear()  # what ran before the script first narrowed the window is not the probe
        self.counting = bool(open_)
        for hook in self.on_window:
            hook()


def package_roots(names: list[str]) -> dict[str, str]:
    """Each package's installed folder, found without importing it; packages not found are left out.

    A plain module (not a package) is left out too: its folder is site-packages itself."""
    roots = {}
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            continue
        if spec is None or spec.submodule_search_locations is None:
            continue
        if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
            roots[name] = str(Path(spec.origin).parent)
        else:
            locations = list(spec.submodule_search_locations)
            if locations:
                roots[name] = locations[0]
    return roots


def distribution_version(name: str) -> str | None:
    """The installed version of the distribution that provides the package, when it is known."""
    try:
        import importlib.metadata as metadata
    except ImportError:  # 3.7 has no importlib.metadata: its traces report no versions
        return None

    candidates: list[str] = []
    finder = getattr(metadata, "packages_distributions", None)  # 3.10+
    if finder is not None:
        with contextlib.suppress(Exception):  # a broken distribution's metadata must not lose the trace
            candidates.extend(finder().get(name, []))
    candidates.extend([name, name.replace("_", "-")])
    for candidate in candidates:
        try:
            return metadata.version(candidate)
        except Exception:
            continue
    return None


def start_monitoring(roots: Roots, recorder: Recorder) -> Any:
    """Line events for code under the roots only, with `sys.monitoring` (3.12+); returns the stop."""
    if sys.version_info < (3, 12):
        raise RuntimeError("sys.monitoring is Python 3.12+")
    monitoring = sys.monitoring
    events = monitoring.events
    disable = monitoring.DISABLE
    tool = None
    for candidate in (3, 4, monitoring.COVERAGE_ID, monitoring.PROFILER_ID, 5, 0):
        try:
            monitoring.use_tool_id(candidate, "tfbisect probe tracer")
        except ValueError:  # taken, e.g. by coverage.py measuring the tests themselves
            continue
        tool = candidate
        break
    if tool is None:
        raise RuntimeError("every sys.monitoring tool id is in use")
    watched: set[Any] = set()

    def on_start(code: Any, offset: int) -> Any:
        if code not in watched:
            if roots.key(code.co_filename) is None:
                return disable  # this code object never reports again (until a window change)
            watched.add(code)
            monitoring.set_local_events(tool, code, events.LINE)
        return disable

    def on_line(code: Any, line: int) -> Any:
        if recorder.counting:
            recorder.add(code, line)
        # Counted (or not wanted now): the line stays quiet until the window changes.
        return disable

    monitoring.register_callback(tool, events.PY_START, on_start)
    monitoring.register_callback(tool, events.LINE, on_line)
    monitoring.set_events(tool, events.PY_START)
    # A window change must see lines again that were disabled after being counted (or skipped).
    recorder.on_window.append(monitoring.restart_events)

    def stop() -> None:
        monitoring.set_events(tool, 0)
        for code in watched:
            monitoring.set_local_events(tool, code, 0)
        monitoring.register_callback(tool, events.PY_START, None)
        monitoring.register_callback(tool, events.LINE, None)
        monitoring.free_tool_id(tool)

    return stop


def start_settrace(roots: Roots, recorder: Recorder) -> Any:
    """Line events for code under the roots only, with `sys.settrace` (before 3.12); returns the stop."""

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and recorder.counting:
            recorder.add(frame.f_code, frame.f_lineno)
        return local

    def global_(frame: Any, event: str, arg: Any) -> Any:
        if roots.key(frame.f_code.co_filename) is None:
            return None  # no local tracing in this frame: it costs one call per call, not per line
        return local

    threading.settrace(global_)
    sys.settrace(global_)

    def stop() -> None:
        sys.settrace(None)
        threading.settrace(None)

    return stop


def exit_code_of(code: Any) -> int:
    """What the interpreter would exit with for `SystemExit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_script(script: str, args: list[str]) -> int:
    """Run the script as `__main__`, as `python SCRIPT ARGS` would; its exit status."""
    sys.argv = [script, *args]
    if sys.path and sys.path[0] == str(Path(__file__).resolve().parent):
        sys.path[0] = str(Path(script).parent)  # in place of this file's folder, as for `python SCRIPT`
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        return exit_code_of(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        return 130  # as a shell reports a run stopped by Ctrl-C
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def document(
    roots: Roots, recorder: Recorder, packages: dict[str, dict[str, Any]], exit_code: int
) -> dict[str, Any]:
    files: dict[str, dict[str, set[Any]]] = {}
    for code, lines in recorder.lines.items():
        key = roots.key(code.co_filename)
        if key is None or not lines:
            continue
        entry = files.setdefault(key, {"lines": set(), "functions": set()})
        entry["lines"].update(line for line in lines if isinstance(line, int) and line > 0)
        name = getattr(code, "co_qualname", code.co_name)  # co_qualname is 3.11+
        entry["functions"].add((name, code.co_firstlineno))
    names = sorted(files)
    kept = names[:MAX_FILES]
    return {
        "schema": SCHEMA,
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        "exit_code": exit_code,
        "packages": packages,
        "files": {
            name: {
                "lines": sorted(files[name]["lines"]),
                "functions": [
                    [function, first]
                    for function, first in sorted(files[name]["functions"], key=lambda f: (f[1], f[0]))
                ],
            }
            for name in kept
        },
        "files_left_out": len(names) - len(kept),
    }


def write_atomically(path: Path, content: dict[str, Any]) -> None:
    """Write, then rename into place: a reader never sees half a document."""
    fd, temporary = tempfile.mkstemp(prefix=".probe-trace-", suffix=".json", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(content, stream, sort_keys=True)
            stream.write("\n")
        Path(temporary).chmod(0o644)
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise


def parse_arguments(argv: list[str]) -> tuple[argparse.Namespace, str, list[str]]:
    parser = argparse.ArgumentParser(
        prog="probe_tracer.py",
        usage="%(prog)s --packages NAME[,NAME...] --output FILE -- SCRIPT [ARGS...]",
        description="Run SCRIPT with line tracing limited to the named installed packages.",
    )
    parser.add_argument("--packages", required=True, help="comma-separated top-level package names")
    parser.add_argument("--output", required=True, help="where the JSON document goes")
    if "--" not in argv:
        parser.error("the script to run follows `--`")
    split = argv.index("--")
    options = parser.parse_args(argv[:split])
    rest = argv[split + 1 :]
    if not rest:
        parser.error("the script to run follows `--`")
    return options, rest[0], rest[1:]


def main(argv: list[str] | None = None) -> int:
    options, script, args = parse_arguments(sys.argv[1:] if argv is None else argv)
    output = Path.cwd() / options.output  # before the script can change the folder
    script = str(Path.cwd() / script)
    names = [name.strip() for name in options.packages.split(",") if name.strip()]
    found = package_roots(names)
    packages = {name: {"root": root, "version": distribution_version(name)} for name, root in found.items()}
    roots = Roots(found)
    recorder = Recorder()
    setattr(builtins, WINDOW_BUILTIN, recorder.window)
    # Everything this file needs is imported and resolved before tracing starts.
    stop = (
        start_monitoring(roots, recorder) if sys.version_info >= (3, 12) else start_settrace(roots, recorder)
    )
    try:
        exit_code = run_script(script, args)
    finally:
        stop()
        sys.stdout.flush()
        sys.stderr.flush()
    try:
        write_atomically(output, document(roots, recorder, packages, exit_code))
    except (OSError, TypeError, ValueError) as exc:
        print(f"probe_tracer: cannot write {output}: {exc}", file=sys.stderr)
        return WRITE_FAILED
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
