"""A scripted scenario whose verdict depends on which build of TF it runs on (the narrowing's tests).

A nightly (`2.23.0.devYYYYMMDD`) counts as changed from its build date `NIGHTLY_FROM` on; any
other build (a release, a release candidate) from `RELEASE_FROM` on.  The probes do real work
in TensorFlow (a softmax cross-entropy gradient, a plain sum) inside the tracer's window, so a
traced run sees TF's Python; the verdict itself comes from the build's own version string.

Contract (as scenarios/gradient_mismatch.py): one JSON document to --output; exit 0 = not
reproduced, 1 = reproduced, 125 = cannot test here; `--probe NAME` runs only that probe.
"""
import argparse
import builtins
import hashlib
import json
import os
import platform
import re
import sys
import time

NIGHTLY_FROM = "20261018"
RELEASE_FROM = "2.16.0rc0"
PROBES = ("changed", "unchanged")


def window(open_):
    hook = getattr(builtins, "__tfbisect_trace__", None)
    if hook is not None:
        hook(open_)


def release_key(version):
    """2.16.0rc0 -> (2, 16, 0, -1, 0); 2.16.1 -> (2, 16, 1, 0, 0): enough of PEP 440 for TF's tags."""
    found = re.match(r"^(\d+)\.(\d+)\.(\d+)(?:rc(\d+))?", version)
    major, minor, micro, rc = found.groups()
    return (int(major), int(minor), int(micro), -1 if rc is not None else 0, int(rc or 0))


def changed(version):
    nightly = re.search(r"[.-]?dev(\d{8})", version)  # tf.__version__ says 2.23.0-dev20261017
    if nightly:
        return nightly.group(1) >= NIGHTLY_FROM
    return release_key(version) >= release_key(RELEASE_FROM)


def probe(tf, name, is_changed):
    start = time.perf_counter()
    window(True)
    try:
        if name == "changed":
            logits = tf.constant([[2.0, 1.0, 0.1]])
            with tf.GradientTape() as tape:
                tape.watch(logits)
                loss = tf.nn.softmax_cross_entropy_with_logits(labels=[[1.0, 0.0, 0.0]], logits=logits)
            value = float(tf.reduce_sum(tape.gradient(loss, logits)).numpy())
            outcome = "mismatch" if is_changed else "match"
        else:
            value = float(tf.reduce_sum(tf.constant([1.0, 2.0])).numpy())
            outcome = "match"
    finally:
        window(False)
    return {
        "name": name,
        "kind": "marker",
        "outcome": outcome,
        "summary": "{}: {} (value {:.3g})".format(name, outcome, value),
        "metrics": {"value": value},
        "duration_s": time.perf_counter() - start,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="result.json")
    parser.add_argument("--probe", action="append", default=[])
    args = parser.parse_args()
    unknown = [name for name in args.probe if name not in PROBES]
    if unknown:
        print("unknown probe {}; the probes are {}".format(", ".join(unknown), ", ".join(PROBES)))
        return 125
    started = time.perf_counter()
    import tensorflow as tf

    version = tf.__version__
    is_changed = changed(version)
    probes = [probe(tf, name, is_changed) for name in (args.probe or PROBES)]
    wrong = [p for p in probes if p["outcome"] == "mismatch"]
    with open(os.path.abspath(__file__), "rb") as handle:
        sha = hashlib.sha256(handle.read()).hexdigest()
    document = {
        "schema_version": 1,
        "scenario": {"name": "published_after", "sha256": sha},
        "environment": {
            "python": platform.python_version(),
            "tensorflow": version,
            "git_version": getattr(tf.version, "GIT_VERSION", None),
        },
        "probes": probes,
        "verdict": {
            "outcome": "reproduced" if wrong else "not_reproduced",
            "summary": "{} is {} the change".format(version, "after" if is_changed else "before"),
            "disagreements": [
                {"probe": p["name"], "max_abs_error": 1.0, "max_relative_error": 1.0} for p in wrong
            ],
        },
        "timings": {"total_s": time.perf_counter() - started},
    }
    with open(args.output + ".tmp", "w") as handle:
        json.dump(document, handle)
    os.replace(args.output + ".tmp", args.output)
    print("verdict: " + document["verdict"]["summary"])
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
