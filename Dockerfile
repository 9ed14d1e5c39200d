# One parametrized image for every TF version, Python and flavour (see bisect/tfbisect/backend_docker.py).
#
#   base  the Python of BASE, a venv at /opt/venv and an unprivileged user
#   cpu   + the lock's packages (TF and everything it needs, NVIDIA libraries excepted)
#   cuda  + the NVIDIA libraries as pip wheels, in a layer of their own, checked at build time
#
# Packages come from the host's wheel cache over loopback (`docker build --network host`,
# WHEELS_URL): nothing reaches the index from inside, no proxy certificate is needed, and no
# wheel file is ever copied into a layer.  LOCK_SHA names the lock, so the layer cache can
# tell one lock's layer from another's.  Works with the classic builder: no BuildKit syntax.
ARG BASE=python:3.11-slim

FROM ${BASE} AS base
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2
RUN (getent passwd tfbisect >/dev/null || useradd --create-home --uid 10001 --user-group tfbisect) \
 && python3 -m venv /opt/venv

FROM base AS cpu
ARG WHEELS_URL
ARG PYTHON
ARG LOCK_SHA
# The module whose import proves the install (tensorflow; empty for a lock that installs nothing).
ARG CHECK_IMPORT=tensorflow
RUN echo "lock ${LOCK_SHA}" \
 && pip install --no-cache-dir --no-index --no-deps --find-links "${WHEELS_URL}/py${PYTHON}/" \
        -r "${WHEELS_URL}/req/${LOCK_SHA}-cpu.txt" \
 && if [ -n "${CHECK_IMPORT}" ]; then python -c "import ${CHECK_IMPORT} as m; print(m.__name__, m.__version__)"; fi
USER tfbisect
WORKDIR /home/tfbisect

FROM cpu AS cuda
ARG WHEELS_URL
ARG PYTHON
ARG LOCK_SHA
ARG EXPECT_CUDA=""
USER root
RUN echo "nvidia ${LOCK_SHA}" \
 && pip install --no-cache-dir --no-index --no-deps --find-links "${WHEELS_URL}/py${PYTHON}/" \
        -r "${WHEELS_URL}/req/${LOCK_SHA}-nvidia.txt" \
 && python -c "import glob, site; open('/etc/ld.so.conf.d/nvidia-pip.conf', 'w').write('\n'.join(sorted(glob.glob(site.getsitepackages()[0] + '/nvidia/*/lib'))) + '\n')" \
 && ldconfig \
 && python -c "$(printf '%s\n' \
      'import ctypes, glob, site, sys, tensorflow as tf' \
      'libs = sorted(glob.glob(site.getsitepackages()[0] + "/nvidia/*/lib/lib*.so*"))' \
      'assert libs, "no NVIDIA libraries installed"' \
      'names = ("libcudart", "libcublas.", "libcudnn.", "libcufft", "libcusparse", "libcusolver")' \
      'loaded = [ctypes.CDLL(p) and p for p in libs if any(n in p for n in names)]' \
      'info = tf.sysconfig.get_build_info()' \
      'cuda = str(info.get("cuda_version", ""))' \
      'print("CUDA build info:", cuda, "cuDNN:", info.get("cudnn_version"), "loaded:", len(loaded))' \
      'expect = sys.argv[1]' \
      'assert loaded, "no CUDA library could be loaded"' \
      'assert not expect or cuda.startswith(expect), "TF was built for CUDA %s, expected %s" % (cuda, expect)')" \
      "${EXPECT_CUDA}"
USER tfbisect
