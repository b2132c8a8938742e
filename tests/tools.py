"""The tools the suite needs besides Python packages: a missing one fails the test that needs it.

Only missing hardware (a GPU, a Snapdragon board, an AI Hub account) skips a test. PostgreSQL,
Prometheus and kubectl are tools that ``.ci/run`` installs or starts, so their absence is an error
of the machine's set-up, reported as a failure with what to do.
"""

from __future__ import annotations

import os
import shutil

import pytest

PG_URL = os.environ.get("FACENAS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def require_binary(name: str, how: str) -> str:
    """The path of ``name`` on PATH; fails the test, saying how to install it, when there is none."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (needed by this test; {how})", pytrace=False)
    return path


def postgres_unreachable(err: Exception) -> None:
    """Fail the test: PostgreSQL is part of the suite's environment."""
    pytest.fail(
        f"PostgreSQL unreachable at {PG_URL.split('@')[-1]}: {err}. Start it (as .ci/run does: "
        "pg_ctlcluster --skip-systemctl-redirect <version> main start) or set FACENAS_TEST_PG_URL.",
        pytrace=False,
    )
