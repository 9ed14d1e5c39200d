"""The map from every TF release in the catalogue to where its CUDA image gets its libraries
(pure logic: no engine, no index), and the committed lock of the CUDA 11 set."""

from __future__ import annotations

import pytest

from tfbisect.core import catalogue
from tfbisect.core.cudasets import CU11, TESTED, CudaSource, cuda_plan
from tfbisect.core.versions import minor_line
from tfbisect.envs import locks
from tfbisect.envs.wheelhouse import pins

RELEASES = [r.version for r in catalogue.load_snapshot().releases(pre=True)]


@pytest.mark.parametrize("version", RELEASES)
def test_every_release_has_a_set_a_base_image_or_a_reason(version: str) -> None:
    plan = cuda_plan(version)
    minor = int(minor_line(version).split(".")[1])
    # TF's table has every line up to 2.21; a newer line is tested by the image build alone.
    assert plan.tested == TESTED.get(minor_line(version)) and (plan.tested is not None or minor > 21)
    if minor >= 14:
        assert plan.source is CudaSource.AND_CUDA and plan.cuda_set is None and plan.buildable_from_index
        assert plan.describe().startswith("yes: tensorflow[and-cuda] (CUDA ")
    elif minor >= 5:
        assert plan.source is CudaSource.WHEEL_SET and plan.cuda_set is CU11 and plan.buildable_from_index
        # The set's CUDA and cuDNN are at least what the line was built with (same major).
        assert plan.tested is not None
        assert CU11.cuda.split(".")[0] == plan.tested.cuda.split(".")[0]
        assert tuple(map(int, CU11.cudnn.split("."))) >= tuple(map(int, plan.tested.cudnn.split(".")))
        assert (
            plan.describe()
            == f"yes: cu11.8-cudnn8.6 wheels (TF built for CUDA {plan.tested.cuda}, cuDNN {plan.tested.cudnn})"
        )
    else:
        assert plan.source is CudaSource.BASE_IMAGE and not plan.buildable_from_index
        assert plan.base_image is not None and plan.base_image.startswith("nvidia/cuda:")
        assert plan.tested is not None and plan.base_image.startswith(f"nvidia/cuda:{plan.tested.cuda}")
        assert "come in no wheel" in plan.needs
        assert plan.describe().startswith(f"no wheels: --base-image with CUDA {plan.tested.cuda}, cuDNN ")
    assert (plan.project == "tensorflow-gpu") == (minor == 0), "only TF 2.0 had a separate GPU project"


def test_the_catalogue_reaches_every_kind() -> None:
    kinds = {cuda_plan(v).source for v in RELEASES}
    assert kinds == {CudaSource.AND_CUDA, CudaSource.WHEEL_SET, CudaSource.BASE_IMAGE}


def test_a_line_tfbisect_does_not_know_has_a_reason() -> None:
    plan = cuda_plan("1.15.5")
    assert plan.source is None and "knows no CUDA libraries for TF 1.15" in plan.needs


def test_the_cu11_lock_pins_exactly_the_set_with_hashes() -> None:
    lock = locks.set_lock(CU11)  # committed: no index needed
    found = {p.name: p for p in pins(lock.read_text())}
    assert {f"{p.name}=={p.version}" for p in found.values()} == set(CU11.requirements)
    assert all(p.hashes and p.is_nvidia for p in found.values())
    carried = {wheel for _, wheel in CU11.sonames}
    assert carried <= set(found), "every soname TF 2.5-2.13 opens comes from a pinned wheel"
    assert f"# exclude-newer: {CU11.exclude_newer}" in lock.read_text()
