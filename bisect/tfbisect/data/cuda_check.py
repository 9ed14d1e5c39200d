"""TensorFlow's own check of its CUDA libraries, run as a step of every CUDA image build.

TF opens its CUDA libraries lazily, when it first uses a GPU, so on a machine without one
`import tensorflow` proves nothing.  But TF carries the function it uses to check them all:
`DsoLoader::TryDlopenCUDALibraries()` (in `tsl::internal` from TF 2.12, `stream_executor::
internal` before), which opens cudart, cuBLAS(Lt), cuFFT, cuRAND, cuSOLVER, cuSPARSE and cuDNN
by the exact sonames this build of TF wants, through its own search path, and logs each one.
This script calls it, reads TF's log lines and the process's memory map, and fails the build
when any library TF tried does not open.  Only the GPU and its driver (libcuda.so.1, which
comes from the host) may be absent.

It writes what it saw to --output (the image keeps it; tfbisect puts it in every record):
the libraries TF opened, from which file and which wheel, TF's build info, and the GPUs seen.

Runs inside the image under test: standard library and TensorFlow only, Python 3.6+.
"""

import argparse
import ctypes
import glob
import json
import os
import re
import sys
import tempfile

LOADER_SYMBOLS = (
    "_ZN3tsl8internal9DsoLoader22TryDlopenCUDALibrariesEv",  # TF 2.12+
    "_ZN15stream_executor8internal9DsoLoader22TryDlopenCUDALibrariesEv",  # TF 2.5-2.11
)
OPENED = re.compile(r"Successfully opened dynamic library (\S+)")
FAILED = re.compile(r"Could not (?:load|open) dynamic library '([^']+)'(?:; dlerror: ([^;\n]*))?")
RTLD_NOLOAD = getattr(os, "RTLD_NOLOAD", 4)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--expect-cuda", default="", help="the CUDA version TF must report (a prefix)")
    args = parser.parse_args()
    # TF's loader logs at INFO (or VLOG 1 from 2.9); the image's default hides both.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    os.environ["TF_CPP_VMODULE"] = "dso_loader=1"
    import tensorflow as tf

    report = {
        "schema": 1,
        "tensorflow": tf.__version__,
        "build_info": build_info(tf),
        "loader": None,
        "status_ok": False,
        "libraries": [],
        "failed": [],
        "gpus": [],
        "driver": driver_version(),
    }
    problems = ask_loader(tf, report)
    report["gpus"] = gpus(tf)
    cuda = str(report["build_info"].get("cuda_version") or "")
    if not report["build_info"].get("is_cuda_build"):
        problems.append("this TensorFlow wheel was built without CUDA")
    if args.expect_cuda and not cuda.startswith(args.expect_cuda):
        problems.append("TF was built for CUDA %s, expected %s" % (cuda or "?", args.expect_cuda))
    report["problems"] = problems
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as out:
        json.dump(report, out, indent=1, sort_keys=True)
    say_what_opened(tf, report, cuda)
    if problems:
        print("TF loader check FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


def ask_loader(tf, report):
    """Call TF's own loader check and put what it did in `report` (loader, status_ok, libraries,
    failed); the problems it shows."""
    symbol = find_loader(tf)
    if symbol is None:
        return ["this TensorFlow has no DsoLoader::TryDlopenCUDALibraries to ask"]
    name, function = symbol
    report["loader"] = name
    status, log = captured_stderr(lambda: call_status(function))
    report["status_ok"] = status in (0, 1)  # tsl::Status: null state; absl::Status: inlined OK
    report["libraries"] = opened_libraries(log)
    for soname, error in FAILED.findall(log):
        report["failed"].append({"soname": soname, "error": (error or "").strip()[:300]})
    problems = []
    if report["failed"]:
        problems.append(
            "TF could not open "
            + ", ".join(f["soname"] + " (" + (f["error"] or "?") + ")" for f in report["failed"])
        )
    elif not report["status_ok"]:
        problems.append("TF's loader check failed without naming a library:\n" + log[-2000:])
    if not report["libraries"] and not report["failed"]:
        problems.append("TF's loader logged no library at all:\n" + log[-2000:])
    return problems


def opened_libraries(log):
    """The libraries TF's log says it opened: the file mapped for each, and the wheel that file
    came from."""
    paths = mapped_libraries()
    owners = wheel_owners()
    found = []
    for soname in OPENED.findall(log):
        path = next((p for p in paths if os.path.basename(p) == soname), None)
        owner = owners.get(os.path.realpath(path)) if path else None
        found.append(
            {
                "soname": soname,
                "path": path,
                "wheel": owner[0].replace("_", "-").lower() if owner else None,
                "version": owner[1] if owner else None,
            }
        )
    return found


def say_what_opened(tf, report, cuda):
    """One line for the build's log: TF's CUDA, what it opened, the GPUs it saw."""
    opened = ", ".join(
        lib["soname"] + (" " + lib["version"] if lib["version"] else "") for lib in report["libraries"]
    )
    print(
        "TF loader check: TF %s (CUDA %s, cuDNN %s) opened %d CUDA libraries: %s; GPUs: %s"
        % (
            tf.__version__,
            cuda or "?",
            report["build_info"].get("cudnn_version") or "?",
            len(report["libraries"]),
            opened or "none",
            ", ".join(g["name"] for g in report["gpus"]) or "none (no GPU or driver while building)",
        )
    )


def build_info(tf):
    try:
        info = dict(tf.sysconfig.get_build_info())
    except Exception:  # TF before 2.3 has no build info
        return {"is_cuda_build": bool(tf.test.is_built_with_cuda())}
    keep = ("cuda_version", "cudnn_version", "cuda_compute_capabilities", "is_cuda_build")
    return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in info.items() if k in keep}


def find_loader(tf):
    """TF's loader check, from whichever of TF's shared objects exports it."""
    root = os.path.dirname(tf.__file__)
    candidates = sorted(glob.glob(os.path.join(root, "libtensorflow_framework.so*")))
    candidates += sorted(glob.glob(os.path.join(root, "python", "_pywrap_tensorflow_internal.so")))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path, mode=RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        for name in LOADER_SYMBOLS:
            try:
                function = getattr(lib, name)
            except AttributeError:
                continue
            return name, function
    return None


def call_status(function):
    """Call `Status f()`: a Status has a destructor, so the Itanium ABI returns it through a
    hidden pointer to memory the caller provides.  Both Status kinds are one word."""
    function.argtypes = [ctypes.c_void_p]
    function.restype = ctypes.c_void_p
    slot = ctypes.create_string_buffer(64)
    function(ctypes.addressof(slot))
    return ctypes.c_uint64.from_buffer(slot).value


def captured_stderr(call):
    """Run `call` with file descriptor 2 (where TF's C++ logging writes) sent to a file."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            result = call()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        log = sink.read(4 << 20).decode("utf-8", "replace")
    return result, log


def mapped_libraries():
    with open("/proc/self/maps") as maps:
        return sorted({line.split()[-1] for line in maps if "/" in line and ".so" in line})


def wheel_owners():
    """Every file a wheel installed, by real path: (distribution, version) from *.dist-info/RECORD."""
    owners = {}
    for site in sys.path:
        for info in glob.glob(os.path.join(site, "*.dist-info")):
            stem = os.path.basename(info)[: -len(".dist-info")]
            name, _, version = stem.partition("-")
            try:
                with open(os.path.join(info, "RECORD")) as record:
                    for row in record:
                        relative = row.split(",", 1)[0]
                        if ".so" in relative:
                            owners[os.path.realpath(os.path.join(site, relative))] = (name, version)
            except OSError:
                continue
    return owners


def gpus(tf):
    config = getattr(tf.config, "list_physical_devices", None) or tf.config.experimental.list_physical_devices
    found = []
    for device in config("GPU"):
        entry = {"name": device.name}
        try:
            details = tf.config.experimental.get_device_details(device)
            entry["name"] = details.get("device_name", device.name)
            capability = details.get("compute_capability")
            if capability:
                entry["compute_capability"] = "%d.%d" % tuple(capability)
        except Exception:  # before TF 2.3
            pass
        found.append(entry)
    return found


def driver_version():
    try:
        with open("/proc/driver/nvidia/version") as version:
            return version.readline().strip()[:200] or None
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
