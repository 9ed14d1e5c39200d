"""What a CUDA cell's record says about where it ran and what TF's loader opened, in every view
(pure logic over records; the real images are in test_docker.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tfbisect.core.errors import LockError
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.record import Failure, RunRecord, ran_on
from tfbisect.core.schema import problems
from tfbisect.core.spec import EnvSpec, Flavour
from tfbisect.envs.backend_venv import VenvBackend
from tfbisect.report import findings, show
from tfbisect.report.reportdata import environment_rows

CHECK = {
    "tensorflow": "2.12.1",
    "build_info": {
        "cuda_version": "11.8",
        "cudnn_version": "8",
        "cuda_compute_capabilities": ["sm_70", "compute_80"],
    },
    "status_ok": True,
    "libraries": [
        {"soname": "libcudart.so.11.0", "version": "11.8.89", "wheel": "nvidia-cuda-runtime-cu11"},
        {"soname": "libcudnn.so.8", "version": "8.6.0.163", "wheel": "nvidia-cudnn-cu11"},
    ],
    "failed": [],
    "problems": [],
}


def cuda_record(document: dict[str, Any] | None, **extra: object) -> RunRecord:
    spec = EnvSpec("2.12.1", "3.11", Flavour.CUDA, backend="docker")
    return RunRecord(
        spec=spec,
        scenario="gradient_mismatch",
        scenario_sha256="0" * 64,
        outcome=Outcome.REPRODUCED if document else Outcome.SKIP,
        exit_code=1,
        document=document,
        failure=None if document else Failure("EnvironmentBuildError", "the loader check failed"),
        log_tail="",
        command="docker run …",
        started_at="2026-11-29T00:00:00+00:00",
        duration_s=1.0,
        extra={"image": "tfbisect:tf2.12.1-py3.11-cuda-abc", **extra} if document else dict(extra),
    )


def with_gpu(document: dict[str, Any]) -> dict[str, Any]:
    gpu = copy.deepcopy(document)
    gpu["environment"]["gpus"] = [{"name": "NVIDIA H200", "compute_capability": "9.0"}]
    gpu["environment"]["nvidia_driver"] = "550.54.15"
    return gpu


def test_where_a_cuda_cell_ran_is_said_from_what_tf_saw(tf22_document: dict[str, Any]) -> None:
    on_cpu = copy.deepcopy(tf22_document)
    on_cpu["environment"]["gpus"] = []
    assert ran_on(on_cpu) == "CPU (no GPU visible)"
    assert ran_on(with_gpu(tf22_document)) == "GPU: NVIDIA H200 (compute 9.0); driver 550.54.15"
    # What a scenario reports is bounded and stays one line, however many GPUs and names it claims.
    hostile = copy.deepcopy(tf22_document)
    hostile["environment"]["gpus"] = [{"name": "x\n[fake] line " * 50, "compute_capability": "9.0"}] * 1000
    hostile["environment"]["nvidia_driver"] = "d" * 4000
    said = ran_on(hostile)
    assert "\n" not in said and len(said) < 400 and "characters cut by tfbisect" in said
    assert problems(with_gpu(tf22_document)) == [], "the schema knows gpus and nvidia_driver"
    # A scenario that only lists devices: a GPU device still counts.
    listed = copy.deepcopy(tf22_document)
    listed["environment"].pop("gpus", None)
    listed["environment"]["devices"] = [{"name": "/physical_device:GPU:0", "type": "GPU"}]
    assert ran_on(listed) == "GPU: /physical_device:GPU:0"
    assert ran_on(None).startswith("unknown")
    assert cuda_record(on_cpu).ran_on == "CPU (no GPU visible)"
    cpu_cell = EnvSpec("2.12.1", "3.11", Flavour.CPU, backend="docker")
    assert RunRecord.from_dict({**cuda_record(on_cpu).to_dict(), "spec": cpu_cell.to_dict()}).ran_on is None


def test_the_loader_check_is_one_line_in_the_terminal_and_a_row_in_the_report(
    tf22_document: dict[str, Any],
) -> None:
    record = cuda_record(tf22_document, cuda_check=CHECK, ran_on="CPU (no GPU visible)")
    line = findings.cuda_libraries(record)
    assert line == (
        "2 opened by TF's loader: libcudart.so.11.0 11.8.89, libcudnn.so.8 8.6.0.163; "
        "TF built for CUDA 11.8, cuDNN 8 (sm_70 compute_80)"
    )
    text = show.record_text(record)
    assert "  ran on         CPU (no GPU visible)" in text and f"  CUDA libraries {line}" in text
    rows = dict(environment_rows(record))
    assert rows["ran on"] == "CPU (no GPU visible)" and rows["CUDA libraries"] == line
    failed = cuda_record(tf22_document, cuda_check={**CHECK, "problems": ["TF could not open libcudnn.so.8"]})
    assert str(findings.cuda_libraries(failed)).startswith("check FAILED: TF could not open libcudnn.so.8;")
    assert findings.cuda_libraries(cuda_record(tf22_document)) is None, "no check: nothing claimed"


def test_gpu_check_prints_one_line_per_image(tf22_document: dict[str, Any]) -> None:
    record = cuda_record(with_gpu(tf22_document), cuda_check=CHECK)
    assert show.gpu_check_line(record) == (
        "TF 2.12.1 py3.11  tfbisect:tf2.12.1-py3.11-cuda-abc  2 opened by TF's loader  "
        f"ran on GPU: NVIDIA H200 (compute 9.0); driver 550.54.15  {show.MARK[Outcome.REPRODUCED]}"
    )
    unbuilt = cuda_record(None)
    assert show.gpu_check_line(unbuilt) == "TF 2.12.1 py3.11  no image: the loader check failed"


def test_a_venv_refuses_cuda_before_2_14_and_says_where_it_works() -> None:
    venv = VenvBackend(Path("/nonexistent-cache"), Progress(quiet=True), {})
    with pytest.raises(LockError) as refused:
        venv.lock_spec(EnvSpec("2.12.1", "3.11", Flavour.CUDA))
    assert "one shared NVIDIA layer" in refused.value.what and "--backend docker" in refused.value.todo
    assert venv.lock_spec(EnvSpec("2.21.0", "3.11", Flavour.CUDA)).flavour is Flavour.CUDA
