"""The SNPE backend on a real Snapdragon board: skipped unless one is attached and the SDK is installed.

Run on a host with a board: ``SNPE_ROOT=/opt/snpe FACENAS_TEST_DATASET=/data/faces pytest -m device``.
It has not run yet: no board has been attached to any machine this project has run on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from facenas.domain import Budget, EvalSpace
from facenas.snp.adb import Adb
from facenas.snp.boards import BoardPool
from facenas.snp.profiler import ProfilePlan
from facenas.snp.sdk import SnpeSdk
from facenas.space import HgnetSearchSpace, ParamRange, SearchSpaceParams

pytestmark = pytest.mark.device


def _attached_boards() -> list[str]:
    if shutil.which("adb") is None:
        return []
    try:
        out = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip().endswith("device")]


@pytest.fixture(scope="module")
def board_env() -> tuple[Path, Path]:
    root, data = os.environ.get("SNPE_ROOT"), os.environ.get("FACENAS_TEST_DATASET")
    if not root or not data:
        pytest.skip("needs SNPE_ROOT (the SNPE 2.x SDK) and FACENAS_TEST_DATASET (a dataset directory)")
    if "fakes" in (shutil.which("adb") or ""):
        pytest.skip("adb on PATH is the test double, not a real adb")
    if not _attached_boards():
        pytest.skip("no Snapdragon board attached (adb devices lists none)")
    return Path(root), Path(data)


def test_quantized_latency_on_the_board(board_env: tuple[Path, Path]) -> None:
    from facenas.workers.snpe import SnpeBackend

    root, data = board_env
    pool = BoardPool(Adb())
    assert pool.discover(), pool.no_board_message()
    backend = SnpeBackend(SnpeSdk(root), pool, data, ProfilePlan())
    space = EvalSpace(img_size=(256, 256))
    arch = HgnetSearchSpace(SearchSpaceParams(), seed=0).sample_valid(ParamRange(1e5, 5e6))
    result = backend.evaluate(arch, "SNP Quantized Latency (s)", space, Budget(), lambda: None)
    assert 0 < result.value < 10
    assert result.details["emulated"] is False and result.details["device"]["soc"] == pool.soc
