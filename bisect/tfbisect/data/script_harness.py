"""Run a plain repro script as a tfbisect scenario: the script asserts or exits, this writes the document.

A reporter's repro is a script that asserts, raises or exits; tfbisect needs a result document
(``result.schema.json``).  This file sits between the two: tfbisect copies it into an
environment (a venv or an image, Python 3.6 to 3.13; standard library only, no syntax newer
than 3.6) and runs it where it would run a scenario:

    python script_harness.py --script REPRO.py --output result.json [--probe script]
        [--bad-if-raises TYPE[:REGEX]]... [--dependency PROJECT]... [--name NAME] [--quiet]
        [--exit-zero]

The script's ending decides, as ``git bisect run`` reads a command's exit status:

  * it ends normally, or exits 0: not reproduced (good), exit 0;
  * an uncaught ``AssertionError``, or ``sys.exit(N)`` with N from 1 to 127 other than 125
    (``sys.exit("text")`` is Python's exit 1): reproduced (bad), exit 1;
  * ``sys.exit(125)``: cannot be tested here (skip), exit 125;
  * any other uncaught exception, or an exit status outside 0..127: an error, never bad (an
    API that an old release lacks is a failing end, not the bug).  The document says which
    exception (its verdict is a skip) and this exits EXIT_ERROR, which the driver records as
    ``error`` named by the exception's last traceback line.  ``--bad-if-raises TYPE[:REGEX]``
    (repeatable) makes an exception the bug: its class or a base class is named TYPE (the part
    after the last dot counts, so ``tf.errors.InvalidArgumentError`` works) and, when REGEX is
    given, ``re.search(REGEX, str(exception))`` finds it.

The whole script is one probe, ``script`` (kind ``script``): ``--probe script`` runs it and an
unknown ``--probe`` name exits 125 at once with a skip document, as every scenario does.
TensorFlow is imported here before the probe tracer's window (``__tfbisect_trace__``) opens,
so a traced run sees the script's own work only.  The script runs as ``__main__`` (runpy) with
``sys.argv == [its path]`` and its folder first on ``sys.path``, as ``python REPRO.py`` would.

Besides the schema's fields, the document has a ``script`` object: the script's file name,
sha256 (also the scenario's sha256: the script is what a result is about), size and text
(bounded), how it ended (status, the exception with the last frames of its traceback, file
and line), the installed version of each dependency its PEP 723 block declares (``--dependency``),
and the tails of what it printed through ``sys.stdout``/``sys.stderr`` (output that
C code writes straight to the file descriptors is in the run's log only).
"""

# No `from __future__ import annotations`, f-strings with `=`, or walrus: Python 3.6.
import argparse
import builtins
import hashlib
import json
import os
import platform
import re
import runpy
import sys
import time
import traceback

SCHEMA_VERSION = 1
HARNESS_VERSION = 1
PROBE = "script"
EXIT_GOOD = 0
EXIT_BAD = 1
EXIT_SKIP = 125
# Neither 0, 1 nor 125: the driver records the run as an error (core/record.classify), named
# by the exception line this prints last.
EXIT_ERROR = 3
TRACE_WINDOW = "__tfbisect_trace__"
# Bounds on what the document carries: the driver keeps strings of 4 KiB (core/limits.py),
# so nothing here is cut a second time.
TEXT_MAX = 4000
TAIL_MAX = 2000
MESSAGE_MAX = 500
TRACEBACK_MAX = 2000
FRAMES_MAX = 8


def _now():
    return time.perf_counter()


def clip(text, limit):
    """At most `limit` characters, the cut said in the text."""
    if len(text) <= limit:
        return text
    return text[:limit] + " ... [{} characters cut]".format(len(text) - limit)


class Tail(object):
    """A stream that passes everything on and keeps the last TAIL_MAX characters written."""

    def __init__(self, stream):
        self._stream = stream
        self._tail = ""
        self.written = 0

    def write(self, text):
        if not isinstance(text, str):
            text = str(text)
        self.written += len(text)
        self._tail = (self._tail + text)[-TAIL_MAX:]
        if self._stream is not None:
            return self._stream.write(text)
        return len(text)

    def tail(self):
        return self._tail

    def flush(self):
        if self._stream is not None:
            self._stream.flush()

    def __getattr__(self, name):  # fileno, isatty, encoding, buffer ...: the real stream's
        return getattr(self._stream, name)


class BadIfRaises(object):
    """One `--bad-if-raises TYPE[:REGEX]`: which exception is the bug."""

    def __init__(self, text):
        name, _, pattern = text.partition(":")
        self.text = text
        self.name = name.strip().rsplit(".", 1)[-1]
        if not self.name:
            raise argparse.ArgumentTypeError("TYPE[:REGEX] needs an exception class name before the colon")
        try:
            self.pattern = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise argparse.ArgumentTypeError(
                "the regular expression {!r} is invalid: {}".format(pattern, exc)
            ) from None

    def matches(self, exc):
        if not any(cls.__name__ == self.name for cls in type(exc).__mro__):
            return False
        return self.pattern is None or self.pattern.search(str(exc)) is not None


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read())
    return digest.hexdigest()


def script_text(path):
    """The script's text, bounded, and its size in bytes."""
    with open(path, "rb") as handle:
        data = handle.read()
    text = data.decode("utf-8", "replace")
    return {"text": clip(text, TEXT_MAX), "text_truncated": len(text) > TEXT_MAX, "bytes": len(data)}


def script_frames(tb, script):
    """The traceback from the script's own first frame on: the harness and runpy are noise."""
    found = tb
    while found is not None and os.path.abspath(found.tb_frame.f_code.co_filename) != script:
        found = found.tb_next
    return found if found is not None else tb


def exception_info(exc, script=None):
    """Type, one-paragraph message, traceback tail and the last frames (file, line, function)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    tb = script_frames(exc.__traceback__, script) if script else exc.__traceback__
    frames = traceback.extract_tb(tb)[-FRAMES_MAX:]
    cls = type(exc)
    return {
        "type": cls.__name__,
        "qualified_type": "{}.{}".format(cls.__module__, getattr(cls, "__qualname__", cls.__name__)),
        "message": clip(" ".join(lines[:3]), MESSAGE_MAX),
        "traceback_tail": "".join(traceback.format_exception(cls, exc, tb))[-TRACEBACK_MAX:],
        "frames": [
            {"file": clip(str(f[0]), 300), "line": f[1], "function": clip(str(f[2]), 200)} for f in frames
        ],
    }


def where(info):
    """ " at repro.py:12" for the innermost frame of the script or any file, else ""."""
    if not info.get("frames"):
        return ""
    frame = info["frames"][-1]
    return " at {}:{}".format(os.path.basename(frame["file"]), frame["line"])


def run_script(script):
    """Run the script as `__main__`; how it ended: ("returned", None) / ("exit", code) / ("raised", exc)."""
    sys.argv = [script]
    harness_folder = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == harness_folder:
        sys.path[0] = os.path.dirname(script)  # in place of this file's folder, as for `python SCRIPT`
    else:
        sys.path.insert(0, os.path.dirname(script))
    window = getattr(builtins, TRACE_WINDOW, None)
    if window is not None:
        window(True)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        return "exit", exc.code
    except BaseException as exc:  # KeyboardInterrupt included: the script did not answer
        return "raised", exc
    finally:
        if window is not None:
            window(False)
    return "returned", None


def judge(how, value, bad_if_raises, script=None):
    """(verdict outcome or "error", probe outcome, summary, status, exception info or None)."""
    if how == "returned":
        return "not_reproduced", "match", "not reproduced: the script ran to its end", 0, None
    if how == "exit":
        if value is None or value is False or value == 0:
            return "not_reproduced", "match", "not reproduced: the script exited 0", 0, None
        if not isinstance(value, int):  # sys.exit("text"): Python prints it and exits 1
            text = clip(str(value), MESSAGE_MAX)
            return "reproduced", "mismatch", "reproduced: the script exited 1 ({})".format(text), 1, None
        if value == EXIT_SKIP:
            return "skip", "error", "skip: the script exited 125 (cannot be tested here)", value, None
        if 1 <= value <= 127:
            return "reproduced", "mismatch", "reproduced: the script exited {}".format(value), value, None
        summary = "error: the script exited {}, which is no verdict (0 good, 1-127 but 125 bad, 125 skip)"
        return "error", "error", summary.format(value), value, None
    info = exception_info(value, script)
    described = "{}: {}".format(info["type"], info["message"] or "(no message)")
    if isinstance(value, AssertionError):
        return "reproduced", "mismatch", "reproduced: " + described + where(info), 1, info
    for rule in bad_if_raises:
        if rule.matches(value):
            summary = "reproduced: {}{} (the bug, by --bad-if-raises {})".format(
                described, where(info), rule.text
            )
            return "reproduced", "mismatch", summary, 1, info
    summary = "error: {}{}; not the bug (--bad-if-raises {} would make it one)".format(
        described, where(info), info["type"]
    )
    return "error", "error", summary, 1, info


def base_environment():
    return {"python": platform.python_version(), "python_implementation": platform.python_implementation()}


def tf_environment(tf, environment):
    """What TensorFlow says about itself, as far as it answers (each part may fail on its own)."""
    environment["tensorflow"] = str(getattr(tf, "__version__", "unknown"))
    environment["git_version"] = getattr(getattr(tf, "version", None), "GIT_VERSION", None)
    numpy = sys.modules.get("numpy")
    if numpy is not None and hasattr(numpy, "__version__"):
        environment["numpy"] = str(numpy.__version__)
    try:
        info = tf.sysconfig.get_build_info()
        environment["cuda"] = info.get("cuda_version")
        environment["cudnn"] = info.get("cudnn_version")
        environment["is_cuda_build"] = bool(info.get("is_cuda_build", False))
    except Exception:
        pass
    keras = keras_environment()
    if keras is not None:
        environment["keras"] = keras
    try:
        lister = (
            getattr(tf.config, "list_physical_devices", None) or tf.config.experimental.list_physical_devices
        )
        environment["devices"] = [{"name": str(d.name), "type": str(d.device_type)} for d in lister()]
        environment["gpus"] = [{"name": str(d.name), "compute_capability": None} for d in lister("GPU")]
    except Exception:
        pass
    return environment


def keras_environment():
    """The Keras the script ran with, as the scenarios report it, without importing one the
    script did not (tf.keras is lazy: touching it would import Keras into a script that never
    used it): the loaded module first, else the installed distribution's version."""
    module = None
    for name in ("tf_keras", "keras", "tensorflow.python.keras"):
        if name in sys.modules:
            module = sys.modules[name]
            break
    version = getattr(module, "__version__", None) if module is not None else None
    if version is None:
        try:
            from importlib import metadata  # Python 3.8+

            version = metadata.version("keras")
        except Exception:
            return None
    name = getattr(module, "__name__", "") if module is not None else ""
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1" or name.startswith("tf_keras"):
        flavour = "tf-keras"
    elif str(version).startswith("3"):
        flavour = "keras3"
    else:
        flavour = "keras2-bundled"
    return {"version": str(version), "flavour": flavour, "module": name}


def dependency_versions(names):
    """Each declared dependency's installed version, None where it is not installed or this
    Python (before 3.8) has no importlib.metadata; read from the distributions' metadata,
    without importing them."""
    try:
        from importlib import metadata  # Python 3.8+
    except ImportError:
        return dict((name, None) for name in names)
    found = {}
    for name in names:
        try:
            found[name] = str(metadata.version(name))
        except Exception:
            found[name] = None
    return found


def write_json(path, document):
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, path)


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", required=True, help="the repro script to run")
    parser.add_argument("--output", default="result.json", help="where to write the JSON result")
    parser.add_argument("--name", help="the scenario's name in the document (default: the script's)")
    parser.add_argument(
        "--bad-if-raises",
        action="append",
        default=[],
        type=BadIfRaises,
        metavar="TYPE[:REGEX]",
        help="this uncaught exception is the bug (repeatable)",
    )
    parser.add_argument("--probe", action="append", metavar="NAME", help="run only this probe: " + PROBE)
    parser.add_argument(
        "--dependency",
        action="append",
        default=[],
        metavar="PROJECT",
        help="a package the script declares (PEP 723): its installed version goes into the document",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the verdict")
    parser.add_argument("--exit-zero", action="store_true", help="exit 0 for either verdict (tox)")
    # The scenario contract's other option (the flagship's); a plain script has no epochs.
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def skeleton(args, script):
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(os.path.basename(script))[0])
    sha256 = file_sha256(script)
    harness_sha256 = file_sha256(os.path.abspath(__file__))
    parameters = {
        "harness": HARNESS_VERSION,
        "harness_sha256": harness_sha256,
        "bad_if_raises": [rule.text for rule in args.bad_if_raises],
    }
    if args.probe:
        parameters["probes"] = list(args.probe)
    described = {"name": os.path.basename(script), "sha256": sha256}
    described.update(script_text(script))
    if args.dependency:
        described["dependencies"] = dependency_versions(args.dependency)
    return {
        "schema_version": SCHEMA_VERSION,
        "scenario": {
            "name": name or "script",
            "sha256": sha256,
            "description": "the plain script {}, run by tfbisect's script harness".format(
                os.path.basename(script)
            ),
            "parameters": parameters,
        },
        "environment": base_environment(),
        "probes": [],
        "verdict": None,
        "timings": {},
        "script": described,
    }


def finish(document, args, output, started, verdict, summary):
    document["verdict"] = {"outcome": verdict, "summary": summary, "disagreements": []}
    document["timings"]["total_s"] = _now() - started
    write_json(output, document)
    print("verdict: " + summary)
    sys.stdout.flush()
    code = {"reproduced": EXIT_BAD, "not_reproduced": EXIT_GOOD}.get(verdict, EXIT_SKIP)
    return EXIT_GOOD if args.exit_zero and code == EXIT_BAD else code


def main(argv=None):
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    started = _now()
    output = os.path.abspath(args.output)  # before the script can change the folder
    script = os.path.abspath(args.script)
    document = skeleton(args, script)
    unknown = [name for name in (args.probe or []) if name != PROBE]
    if unknown:
        summary = "no probe named {}; the probes are: {}".format(", ".join(unknown), PROBE)
        print(summary, file=sys.stderr)
        return finish(document, args, output, started, "skip", summary)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except Exception as exc:  # an environment without a working TF cannot answer: skip
        info = exception_info(exc)
        document["timings"]["import_s"] = _now() - started
        summary = "TensorFlow cannot be imported here: {}: {}".format(info["type"], info["message"])
        return finish(document, args, output, started, "skip", summary)
    document["timings"]["import_s"] = _now() - started
    return run_probe(document, args, output, script, started, tf)


def run_probe(document, args, output, script, started, tf):
    """Run the script with its output's tails kept, record how it ended, write the document."""
    out, err = Tail(sys.stdout), Tail(sys.stderr)
    sys.stdout, sys.stderr = out, err
    began = _now()
    try:
        how, value = run_script(script)
    finally:
        sys.stdout, sys.stderr = out._stream, err._stream
        out.flush()
        err.flush()
    duration = _now() - began
    verdict, outcome, summary, status, info = judge(how, value, args.bad_if_raises, script)
    document["environment"] = tf_environment(tf, document["environment"])
    probe = {
        "name": PROBE,
        "kind": "script",
        "outcome": outcome,
        "summary": summary,
        "metrics": {"exit_status": status if isinstance(status, int) else 1},
        "duration_s": duration,
    }
    if outcome == "error":
        probe["error"] = info or {"type": "Exit", "message": summary}
        if info is None and status == EXIT_SKIP:
            probe["error"] = {"type": "Skip", "message": summary}
    document["probes"].append(probe)
    ended = {"how": how, "status": probe["metrics"]["exit_status"]}
    if info is not None:
        ended["exception"] = info
    document["script"].update(
        {
            "ended": ended,
            "stdout_tail": out.tail(),
            "stdout_chars": out.written,
            "stderr_tail": err.tail(),
            "stderr_chars": err.written,
        }
    )
    if verdict != "error":
        return finish(document, args, output, started, verdict, summary)
    if info is not None:  # the driver names the error by the last "Type: message" line of the log
        sys.stderr.write(info["traceback_tail"])
    finish(document, args, output, started, "skip", summary)
    last = "{}: {}".format(info["type"], info["message"]) if info else "ExitStatusError: " + summary
    print(last, file=sys.stderr)
    sys.stderr.flush()
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
