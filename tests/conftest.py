"""Shared fixtures, and the per-test timeout stretched with the host's load."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.timing import scaled

FIXTURES = Path(__file__).parent / "fixtures"
SNP_ARCHS = sorted((FIXTURES / "archai" / "snp_target").glob("*.json"))
SMALLEST_SNP = FIXTURES / "archai" / "snp_target" / "4786c03a18be281ad2fed235c86a5fe952fb4b0a.json"


@pytest.fixture(scope="session")
def snp_arch_files() -> list[Path]:
    assert len(SNP_ARCHS) == 18
    return SNP_ARCHS


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated dataset at 64x64, shared by the tests that only read it."""
    from facenas.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 60, size=64, seed=7)
    return root


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """pytest-timeout's limit (pyproject's ``timeout``, or a test's own mark) stretched with the load per
    CPU as each test starts (tests/timing.py): it bounds a hung test, not a slow host."""
    mark = item.get_closest_marker("timeout")
    configured = mark.args[0] if mark and mark.args else item.config.getini("timeout")
    if configured:
        item.add_marker(pytest.mark.timeout(scaled(float(configured))))
    yield
