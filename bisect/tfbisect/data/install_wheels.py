"""Install one requirement file into /opt/venv during an image build, from the host's wheel
cache served on loopback (see the Dockerfile and envs/wheelhouse.py).

usage: python install_wheels.py WHEELS_URL PYTHON REQUIREMENTS UV_SHA256

With UV_SHA256, the host's own uv binary (served beside the wheels, `tools/uv-<sha256>`) installs
the wheels: its sha256 must be UV_SHA256 (else the build fails), it never asks an index (only
the loopback cache, `--no-index --no-deps`), and it is deleted before this step ends, so no
layer keeps it.  Every requirement carries the lock's `--hash` (and that of a wheel the host
built from the lock's sdist), and uv or pip installs with `--require-hashes`: a file that is not
the lock's fails the build, whatever served it.  pip installs instead where uv cannot (no UV_SHA256, a venv older than Python
3.8, a base whose C library cannot run the binary).  Runs on the image's Python (3.6+).
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

VENV = "/opt/venv"
VENV_PYTHON = VENV + "/bin/python"


def fetch(url, path):
    with urllib.request.urlopen(url, timeout=120) as answer, open(path, "wb") as out:
        shutil.copyfileobj(answer, out, 1 << 20)


def checked_uv(url, expected, folder):
    """The uv binary at `url`, in `folder`, once its sha256 is the one expected."""
    path = os.path.join(folder, "uv")
    fetch(url, path)
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        sys.exit(
            "tfbisect: the uv binary served has sha256 %s, not %s: refused" % (digest.hexdigest(), expected)
        )
    os.chmod(path, 0o755)
    return path


def runs(binary):
    try:
        return (
            subprocess.call([binary, "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0
        )
    except OSError:
        return False


def main(wheels_url, python, requirements, uv_sha):
    links = "%s/py%s/" % (wheels_url, python)
    # In the venv's own file system (a site volume is one of its own, apart from /tmp): uv's
    # cache there lets it hard-link each unpacked file into the venv instead of copying it.
    folder = tempfile.mkdtemp(prefix=".tfbisect-install-", dir=VENV if os.path.isdir(VENV) else None)
    try:
        local = os.path.join(folder, "requirements.txt")
        fetch("%s/req/%s" % (wheels_url, requirements), local)
        if uv_sha and sys.version_info >= (3, 8):
            uv = checked_uv("%s/tools/uv-%s" % (wheels_url, uv_sha), uv_sha, folder)
            if runs(uv):
                print("tfbisect: installing with uv (sha256 %s)" % uv_sha, flush=True)
                env = dict(os.environ, UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never")
                command = [
                    uv,
                    "pip",
                    "install",
                    "--python",
                    VENV_PYTHON,
                    "--no-index",
                    "--no-deps",
                    "--require-hashes",
                ]
                command += ["--cache-dir", os.path.join(folder, "cache"), "--find-links", links, "-r", local]
                return subprocess.call(command, env=env)
            print("tfbisect: uv cannot run on this base; installing with pip", flush=True)
        command = [
            VENV_PYTHON,
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--no-index",
            "--no-deps",
            "--require-hashes",
        ]
        return subprocess.call([*command, "--find-links", links, "-r", local])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
