"""The docker engine and the images `make images` built: without either every test here fails, saying why
(never a skip). Timings the tests record are printed at the end of the run."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

VERSION = "0.1.0"
IMAGES = ("store", "searcher", "trainer", "latency_cpu", "latency_snp")
#: what took how long (seconds), printed in the terminal summary
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def docker() -> Iterator[str]:
    """The docker CLI, once the engine answers and every image of `make images` is there."""
    path = shutil.which("docker")
    if path is None:
        pytest.fail(
            "no docker command: the images tests need a docker engine (make docker-engine installs and "
            "starts one)",
            pytrace=False,
        )
    info = subprocess.run(
        [path, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=60
    )
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["no answer"])[-1]
        pytest.fail(
            f"the docker engine does not answer: {last} (make docker-engine starts it)", pytrace=False
        )
    missing = [
        image
        for image in IMAGES
        if subprocess.run(
            [path, "image", "inspect", f"facenas/{image}:{VERSION}"], capture_output=True, timeout=60
        ).returncode
    ]
    if missing:
        pytest.fail(f"images not built: {', '.join(missing)} (make images builds them)", pytrace=False)
    yield path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("images-test timings")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{what}: {seconds:.0f} s")
