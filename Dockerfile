# One parametrized image for every TF version, Python and flavour (see bisect/tfbisect/envs/backend_docker.py).
#
#   base    the Python of BASE, a venv at /opt/venv and an unprivileged user; also the runtime
#           image of a CPU release kept in a site volume (envs/docker_sites.py): the volume,
#           filled with the lock's packages by the same installer, is mounted at /opt/venv
#   nvidia  + one CUDA set's NVIDIA libraries as pip wheels, in three layers; built once per set
#           and Python, tagged tfbisect-nvidia:…, shared by every TF version that uses the set
#   cpu     + the lock's packages (TF and everything it needs, NVIDIA libraries excepted)
#   cuda    the cpu stage built with BASE=<the nvidia image>, + TensorFlow's own check that it
#           opens every CUDA library it needs (cuda_check.py, kept in the image)
#
# Packages come from the host's wheel cache over loopback (`docker build --network host`,
# WHEELS_URL): nothing reaches the index from inside, no proxy certificate is needed, and no
# wheel file is ever copied into a layer.  install_wheels.py installs them with the host's own
# uv binary (served beside them, its sha256 UV_SHA checked, deleted before the step ends), or
# with pip where uv cannot run.  LOCK_SHA and NVIDIA_* name the requirement files, so
# the layer cache can tell one lock's layer from another's.  Works with the classic builder (no BuildKit
# syntax), which builds every stage before the target: so a stage a build does not need is a
# no-op there (NVIDIA_* empty), and `base` does nothing on a BASE that already has it.
ARG BASE=python:3.11-slim

FROM ${BASE} AS base
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2
RUN (getent passwd tfbisect >/dev/null || useradd --create-home --uid 10001 --user-group tfbisect) \
 && (test -x /opt/venv/bin/python || python3 -m venv /opt/venv)
COPY install_wheels.py /opt/tfbisect/install_wheels.py

FROM base AS nvidia
ARG WHEELS_URL
ARG PYTHON
ARG UV_SHA=""
# Three layers, most stable first (the CUDA toolkit's libraries; cuDNN; NCCL and the rest).
# Each ARG is declared just before its layer, so the build cache keys a layer only on the
# requirement files below it: two sets that differ in cuDNN or NCCL alone share the toolkit's.
ARG NVIDIA_TOOLKIT=""
RUN if [ -n "${NVIDIA_TOOLKIT}" ]; then python /opt/tfbisect/install_wheels.py \
        "${WHEELS_URL}" "${PYTHON}" "${NVIDIA_TOOLKIT}-nvidia.txt" "${UV_SHA}"; fi
ARG NVIDIA_CUDNN=""
RUN if [ -n "${NVIDIA_CUDNN}" ]; then python /opt/tfbisect/install_wheels.py \
        "${WHEELS_URL}" "${PYTHON}" "${NVIDIA_CUDNN}-nvidia.txt" "${UV_SHA}"; fi
ARG NVIDIA_REST=""
RUN if [ -n "${NVIDIA_REST}" ]; then python /opt/tfbisect/install_wheels.py \
        "${WHEELS_URL}" "${PYTHON}" "${NVIDIA_REST}-nvidia.txt" "${UV_SHA}"; fi \
 && if [ -n "${NVIDIA_TOOLKIT}${NVIDIA_CUDNN}${NVIDIA_REST}" ]; then \
      python -c "import glob, site; open('/etc/ld.so.conf.d/nvidia-pip.conf', 'w').write('\n'.join(sorted(glob.glob(site.getsitepackages()[0] + '/nvidia/*/lib'))) + '\n')" \
      && ldconfig; fi

FROM nvidia AS cpu
ARG WHEELS_URL
ARG PYTHON
ARG UV_SHA=""
ARG LOCK_SHA
# The module whose import proves the install (tensorflow; empty for a lock that installs nothing).
# The check's import also writes the bytecode of every module it loads (uv compiles none, and
# the run's root is read-only): a run's `import tensorflow` reads it instead of compiling.
ARG CHECK_IMPORT=tensorflow
RUN echo "lock ${LOCK_SHA}" \
 && python /opt/tfbisect/install_wheels.py "${WHEELS_URL}" "${PYTHON}" "${LOCK_SHA}-cpu.txt" "${UV_SHA}" \
 && if [ -n "${CHECK_IMPORT}" ]; then PYTHONDONTWRITEBYTECODE= \
      python -c "import ${CHECK_IMPORT} as m; print(m.__name__, m.__version__)"; fi
USER tfbisect
WORKDIR /home/tfbisect

FROM cpu AS cuda
ARG EXPECT_CUDA=""
USER root
COPY cuda_check.py /opt/tfbisect/cuda_check.py
RUN python /opt/tfbisect/cuda_check.py --output /opt/tfbisect/cuda-check.json --expect-cuda "${EXPECT_CUDA}"
USER tfbisect
