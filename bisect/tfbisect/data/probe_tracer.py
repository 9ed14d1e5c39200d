"""Run a probe script with line tracing limited to some installed packages; write the lines that ran.

This is the measuring half of "the changed code the probe ran": tfbisect copies this file into
an environment (a venv or an image, Python 3.7 to 3.13) and runs it there as

    python probe_tracer.py --packages tensorflow,keras,tf_keras [--window-only] --output trace.json \
        -- SCRIPT [ARGS...]

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
counts.  With `--window-only` nothing is traced at all until the script first opens the window,
and nothing while it is closed, so importing TensorFlow and building the data cost nothing; a
script that never opens it gets an empty trace.  Frames already running when the window first
opens are not traced (the probe's own frame, which is not package code anyway); the calls they
make are, and so are threads: all of them with `sys.monitoring`, those started while the window
is open with `sys.settrace`.

Besides which lines ran, it records when and how deep, for the ranking's tie-breaks: each
line's first-execution order (a number that grows through the whole run, so lines of different
files compare) and the call depth, below the probe's own frame, of the call that first ran the
line's code object (the probe's frame: the one that opened the window, out of a context manager's
generator; without a window, the script's; measured once per code object, at its first line, so
it costs one walk up the stack per code object; a frame of another thread has none).

The script runs as `__main__`; its exit status becomes this script's, and the document is
written (atomically) whatever the script did, raising included:

    {"schema": 2, "python": "3.x.y", "exit_code": int,
     "packages": {name: {"root": folder, "version": distribution version or null}},
     "files": {"keras/src/losses.py": {"lines": [sorted line numbers],
                                       "first": [each line's first-execution order],
                                       "depth": [each line's call depth, or null],
                                       "functions": [[qualified name, first line], ...]}},
     "files_left_out": int,
     "imported": {distribution name (PEP 503 form): version},
     "imported_known": bool,
     "window": {"only": bool, "opened": int}}

`imported` names the installed distributions whose modules were imported when the script ended
(what the probe's answer may depend on besides the traced packages); `imported_known` is false
where it cannot be told (Python 3.7 has no `importlib.metadata`) and `imported` is then empty.
`window.opened` counts how often the script opened the window.  Schema 1 (before order and depth
were recorded) is schema 2 without "first" and "depth".
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import importlib.util
import json
import os
import re
import runpy
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

SCHEMA = 2
WINDOW_BUILTIN = "__tfbisect_trace__"
MAX_FILES = 20000  # a trace of a real TF step has a few hundred; the cap bounds a hostile script
WRITE_FAILED = 125  # the exit status when the document itself could not be written
MAX_IMPORTED = 2000  # a TF environment has ~50 distributions; the cap bounds a strange one
MAX_NAME = 100  # distribution names and versions are clipped to this many characters
MAX_DEPTH = 100000  # a deeper stack is not walked to its end (a recursion limit raised high)
CO_GENERATOR_LIKE = 0x20 | 0x80 | 0x200  # CO_GENERATOR, CO_COROUTINE, CO_ASYNC_GENERATOR


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
    """The lines counted so far, per code object, with their first-execution order and the call
    depth of their code object, and the state of the window."""

    def __init__(self, window_only: bool = False) -> None:
        # code -> {line: first-execution order}; dicts keep insertion order, so the numbers are
        # the order in which lines first ran, at the cost of a counter.
        self.lines: dict[Any, dict[int, int]] = {}
        self.depths: dict[Any, int | None] = {}  # code -> call depth of its first run below the base
        self.counter = 0
        self.window_only = window_only
        # Until the script first uses the window everything counts, unless only the window does.
        self.counting = not window_only
        self.window_used = False
        self.opened = 0
        self.on_window: list[Any] = []  # called after each change of the window
        self.base: Any = None  # the frame depths count from (the probe's, or the script's runner's)
        self.base_height = 0  # how many frames lie below it, itself included
        self.base_thread = threading.get_ident()

    def add(self, code: Any, line: int, frame: Any = None) -> None:
        found = self.lines.get(code)
        if found is None:
            found = self.lines[code] = {}
            # Once per code object: `frame` is the running one (sys.monitoring's callbacks get no
            # frame: theirs is two up, above `add` and the callback).
            self.depths[code] = self.depth(frame if frame is not None else sys._getframe(2))
        if line not in found:
            found[line] = self.counter
            self.counter += 1

    def set_base(self, frame: Any) -> None:
        """Count depths from `frame`: the first one up that is no generator (a context manager's
        generator that opened the window) nor contextlib's own, i.e. the probe's."""
        while frame is not None and (
            frame.f_code.co_flags & CO_GENERATOR_LIKE or frame.f_code.co_filename.endswith("contextlib.py")
        ):
            frame = frame.f_back
        if frame is None:
            return
        self.base, self.base_height, self.base_thread = frame, self.height(frame), threading.get_ident()

    def height(self, frame: Any) -> int:
        count = 0
        while frame is not None and count < MAX_DEPTH:
            frame = frame.f_back
            count += 1
        return count

    def depth(self, frame: Any) -> int | None:
        """How many calls below the base the frame runs (1: called by the base's own code); None
        in another thread, or below no base (the base's frame ended and its stack was replaced)."""
        if self.base is None or threading.get_ident() != self.base_thread:
            return None
        found = self.height(frame) - self.base_height
        return found if found > 0 else None

    def window(self, open_: bool) -> None:
        if not self.window_used:
            self.window_used = True
            self.lines.clear()  # what ran before the script first narrowed the window is not the probe
            self.depths.clear()
        self.counting = bool(open_)
        if self.counting:
            self.opened += 1
            self.set_base(sys._getframe(1))
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
    with contextlib.suppress(Exception):  # 3.10+; one malformed RECORD anywhere makes it raise
        candidates.extend(metadata.packages_distributions().get(name, []))
    if not candidates:
        # What packages_distributions does, one distribution at a time: the package `tensorflow`
        # comes from the distribution `tensorflow-cpu`, which no guess from its name finds.
        with contextlib.suppress(Exception):
            for dist in metadata.distributions():
                with contextlib.suppress(Exception):  # a broken distribution costs its own answer only
                    if name in module_names(dist)[0]:
                        candidates.append(str(dist.metadata["Name"]))
    candidates.extend([name, name.replace("_", "-")])
    for candidate in candidates:
        try:
            return metadata.version(candidate)
        except Exception:
            continue
    return None


class Monitoring:
    """Line events for code under the roots only, with `sys.monitoring` (3.12+).

    `resume` turns the events on, `pause` off (nothing is reported, not even a code object's
    start), `stop` hands the tool id back."""

    def __init__(self, roots: Roots, recorder: Recorder) -> None:
        if sys.version_info < (3, 12):
            raise RuntimeError("sys.monitoring is Python 3.12+")
        monitoring = sys.monitoring
        self.monitoring = monitoring
        self.events = monitoring.events
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
        self.tool = tool
        self.watched: set[Any] = set()
        events = self.events

        def on_start(code: Any, offset: int) -> Any:
            if code not in self.watched:
                if roots.key(code.co_filename) is None:
                    return disable  # this code object never reports again (until a window change)
                self.watched.add(code)
                monitoring.set_local_events(tool, code, events.LINE)
            return disable

        def on_line(code: Any, line: int) -> Any:
            if recorder.counting:
                recorder.add(code, line)
            # Counted (or not wanted now): the line stays quiet until the window changes.
            return disable

        monitoring.register_callback(tool, events.PY_START, on_start)
        monitoring.register_callback(tool, events.LINE, on_line)

    def resume(self) -> None:
        self.monitoring.set_events(self.tool, self.events.PY_START)
        for code in list(self.watched):  # a copy: another thread may be adding to it
            self.monitoring.set_local_events(self.tool, code, self.events.LINE)
        self.restart()

    def restart(self) -> None:
        # A window change must see lines again that were disabled after being counted (or skipped).
        self.monitoring.restart_events()

    def pause(self) -> None:
        self.monitoring.set_events(self.tool, 0)
        for code in list(self.watched):
            self.monitoring.set_local_events(self.tool, code, 0)

    def stop(self) -> None:
        self.pause()
        self.monitoring.register_callback(self.tool, self.events.PY_START, None)
        self.monitoring.register_callback(self.tool, self.events.LINE, None)
        self.monitoring.free_tool_id(self.tool)


class Settrace:
    """Line events for code under the roots only, with `sys.settrace` (before 3.12).

    `resume` sets the trace function for this thread and for threads started from now on;
    `pause` removes it from this thread and from threads started from now on."""

    def __init__(self, roots: Roots, recorder: Recorder) -> None:
        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "line" and recorder.counting:
                recorder.add(frame.f_code, frame.f_lineno, frame)
            return local

        def global_(frame: Any, event: str, arg: Any) -> Any:
            if recorder.window_only and not recorder.counting:
                return None  # a thread started in the window, running on after it closed
            if roots.key(frame.f_code.co_filename) is None:
                return None  # no local tracing in this frame: it costs one call per call, not per line
            return local

        self.global_ = global_

    def resume(self) -> None:
        threading.settrace(self.global_)
        sys.settrace(self.global_)

    def restart(self) -> None:
        pass  # every line of a traced frame reports, counted or not: nothing to turn back on

    def pause(self) -> None:
        sys.settrace(None)
        threading.settrace(None)

    def stop(self) -> None:
        self.pause()


def exit_code_of(code: Any) -> int:
    """What the interpreter would exit with for `SystemExit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_script(script: str, args: list[str], recorder: Recorder) -> int:
    """Run the script as `__main__`, as `python SCRIPT ARGS` would; its exit status."""
    sys.argv = [script, *args]
    recorder.set_base(sys._getframe())  # without a window, depths count from here
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


def canonical(name: str) -> str:
    """A distribution's name as PEP 503 compares names (and as locks write them)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def module_names(dist: Any) -> tuple[set[str], bool]:
    """The modules a distribution installs, as `sys.modules` would name them, and whether they
    come from its RECORD (exact: one and two levels, so that a namespace package like `google`
    tells protobuf's `google.protobuf` from google-auth's `google.auth`) or top_level.txt."""
    names: set[str] = set()
    record = dist.read_text("RECORD")
    for row in (record or "").splitlines():
        path = row.rsplit(",", 2)[0].strip('"')  # path,hash,size; only the path may hold a comma
        parts = path.split("/")
        first = parts[0]
        if (
            not first
            or first in ("..", "__pycache__")
            or first.endswith((".dist-info", ".egg-info", ".data"))
        ):
            continue
        if len(parts) == 1:
            if first.endswith((".py", ".so", ".pyd")):
                names.add(first.split(".", 1)[0])  # a top-level module: mod.py, mod.cpython-38-….so
            continue
        names.add(first)
        if len(parts) >= 3:
            names.add(first + "." + parts[1])
        elif parts[1].endswith(".py"):
            names.add(first + "." + parts[1][:-3])
    if names:
        return names, True
    top_level = dist.read_text("top_level.txt") or ""
    return {line.strip().replace("/", ".") for line in top_level.splitlines() if line.strip()}, False


def imported_distributions(modules: dict[str, Any]) -> tuple[dict[str, str], bool]:
    """The installed distributions with a module in `modules`: {name: version}, and whether
    that could be told at all (not on 3.7, which has no importlib.metadata)."""
    try:
        import importlib.metadata as metadata
    except ImportError:
        return {}, False
    try:
        distributions = list(metadata.distributions())
    except Exception:  # an unreadable site-packages must not lose the trace
        return {}, False
    found: dict[str, str] = {}
    for dist in distributions:
        if len(found) >= MAX_IMPORTED:
            break
        try:
            name = canonical(str(dist.metadata["Name"] or ""))[:MAX_NAME]
            if not name or name in found:
                continue  # the first on the path is the one imported, as for the import system
            names, exact = module_names(dist)
            for module in names:
                loaded = modules.get(module)
                # A namespace package has no file: its own name says nothing about this distribution.
                if loaded is not None and (not exact or getattr(loaded, "__file__", None) is not None):
                    found[name] = str(dist.version)[:MAX_NAME]
                    break
        except Exception:  # one broken distribution's metadata costs its entry only
            continue
    return dict(sorted(found.items())), True


def document(
    roots: Roots,
    recorder: Recorder,
    packages: dict[str, dict[str, Any]],
    exit_code: int,
    imported: tuple[dict[str, str], bool],
) -> dict[str, Any]:
    # path -> line -> (first-execution order, depth): a line in two code objects (a lambda on
    # its function's line) keeps the earliest order and the smallest known depth.
    files: dict[str, dict[int, list[Any]]] = {}
    functions: dict[str, set[Any]] = {}
    for code, lines in recorder.lines.items():
        key = roots.key(code.co_filename)
        if key is None or not lines:
            continue
        entry = files.setdefault(key, {})
        depth = recorder.depths.get(code)
        for line, order in lines.items():
            if not isinstance(line, int) or line <= 0:
                continue
            known = entry.get(line)
            if known is None:
                entry[line] = [order, depth]
                continue
            known[0] = min(known[0], order)
            if depth is not None and (known[1] is None or depth < known[1]):
                known[1] = depth
        name = getattr(code, "co_qualname", code.co_name)  # co_qualname is 3.11+
        functions.setdefault(key, set()).add((name, code.co_firstlineno))
    names = sorted(files)
    kept = names[:MAX_FILES]
    written = {}
    for name in kept:
        lines = sorted(files[name])
        written[name] = {
            "lines": lines,
            "first": [files[name][line][0] for line in lines],
            "depth": [files[name][line][1] for line in lines],
            "functions": [
                [function, first] for function, first in sorted(functions[name], key=lambda f: (f[1], f[0]))
            ],
        }
    return {
        "schema": SCHEMA,
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        "exit_code": exit_code,
        "packages": packages,
        "files": written,
        "files_left_out": len(names) - len(kept),
        "imported": imported[0],
        "imported_known": imported[1],
        "window": {"only": recorder.window_only, "opened": recorder.opened},
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
        usage="%(prog)s --packages NAME[,NAME...] [--window-only] --output FILE -- SCRIPT [ARGS...]",
        description="Run SCRIPT with line tracing limited to the named installed packages.",
    )
    parser.add_argument("--packages", required=True, help="comma-separated top-level package names")
    parser.add_argument("--output", required=True, help="where the JSON document goes")
    parser.add_argument(
        "--window-only",
        action="store_true",
        help="trace nothing until the script opens the window (__tfbisect_trace__(True)) and "
        "nothing while it is closed",
    )
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
    recorder = Recorder(window_only=options.window_only)
    setattr(builtins, WINDOW_BUILTIN, recorder.window)
    # Everything this file needs is imported and resolved before tracing starts.
    tracer = Monitoring(roots, recorder) if sys.version_info >= (3, 12) else Settrace(roots, recorder)
    if options.window_only:
        # The window itself turns the tracing on and off.
        recorder.on_window.append(lambda: tracer.resume() if recorder.counting else tracer.pause())
    else:
        recorder.on_window.append(tracer.restart)
        tracer.resume()
    try:
        exit_code = run_script(script, args, recorder)
    finally:
        tracer.stop()
        sys.stdout.flush()
        sys.stderr.flush()
    imported: tuple[dict[str, str], bool] = ({}, False)
    with contextlib.suppress(Exception):  # what was imported is a side note: it never loses the trace
        imported = imported_distributions(dict(sys.modules))
    try:
        write_atomically(output, document(roots, recorder, packages, exit_code, imported))
    except (OSError, TypeError, ValueError) as exc:
        print(f"probe_tracer: cannot write {output}: {exc}", file=sys.stderr)
        return WRITE_FAILED
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
