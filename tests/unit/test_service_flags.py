"""Every service refuses bad flags and FACENAS_* values at start-up: one message listing every problem,
exit status 2 (as argparse), no traceback -- run as the processes a user starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facenas.errors import ConfigError
from facenas.rpc.flags import ServiceParser, env, env_switch, number

ROOT = Path(__file__).resolve().parents[2]

#: service -> (bad flags, bad environment, what the message must name)
CASES: dict[str, tuple[list[str], dict[str, str], list[str]]] = {
    "store": (
        ["--metrics-port", "70000", "--no-such-flag"],
        {"FACENAS_PORT": "abc", "FACENAS_GRACE": "-1"},
        [
            "--port (FACENAS_PORT): 'abc' is not an integer",
            "--metrics-port: '70000' must be in [0, 65535]",
            "--grace (FACENAS_GRACE): '-1' must be >= 0",
            "unrecognized arguments: --no-such-flag",
        ],
    ),
    "searcher": (
        ["--job-heartbeat-s", "5", "--job-silence-s", "2", "--autoscale-trainers", "8:1"],
        {"FACENAS_PORT": "abc", "FACENAS_AUTO_RESUME": "maybe", "FACENAS_LOG_LEVEL": "loud"},
        [
            "--port (FACENAS_PORT): 'abc' is not an integer",
            "--auto-resume (FACENAS_AUTO_RESUME): 'maybe'",
            "--log-level (FACENAS_LOG_LEVEL): 'loud' must be one of",
            "--job-silence-s: 2.0 must exceed --job-heartbeat-s (5.0)",
            "--autoscale-trainers needs --trainer",
            "min (8) <= max (1)",
        ],
    ),
    "trainer": (
        ["--capacity", "0", "--val-fraction", "0.6", "--test-fraction", "0.5"],
        {"FACENAS_PORT": "abc", "FACENAS_PRECISION": "tf32", "FACENAS_MAX_QUEUED_JOBS": "0"},
        [
            "--port (FACENAS_PORT): 'abc' is not an integer",
            "--capacity: '0' must be in [1, 64]",
            "--precision (FACENAS_PRECISION): 'tf32' must be one of auto, fp32, bf16, fp16",
            "--max-queued-jobs (FACENAS_MAX_QUEUED_JOBS): '0' must be >= 1",
            "--dataset-dir (or FACENAS_DATASET_DIR): required",
            "--val-fraction + --test-fraction: 1.1 must be < 1",
        ],
    ),
    "latency_cpu": (
        ["--rounds", "1", "--cv-target", "0.5"],
        {"FACENAS_THREADS": "two", "FACENAS_MAX_CV": "0.2"},
        [
            "--threads (FACENAS_THREADS): 'two' is not an integer",
            "--rounds: '1' must be in [2, 1000]",
            "--max-cv: 0.2 must be >= --cv-target (0.5)",
        ],
    ),
    "latency_snp": (
        ["--backend", "aihub", "--calibration-images", "0"],
        {"FACENAS_RUNTIME": "gpu9", "FACENAS_JOB_RETENTION_S": "nan"},
        [
            "--runtime (FACENAS_RUNTIME): 'gpu9' must be one of",
            "--calibration-images: '0' must be in [1, 10000]",
            "--job-retention-s (FACENAS_JOB_RETENTION_S): 'nan' is not a finite number",
            "--aihub-python: needed by --backend aihub",
            "--dataset-dir (or FACENAS_DATASET_DIR): required",
        ],
    ),
}


@pytest.mark.parametrize("service", sorted(CASES))
@pytest.mark.integration
def test_a_service_lists_every_bad_flag_and_exits_2(service: str) -> None:
    flags, bad_env, expected = CASES[service]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FACENAS_", "SNPE_ROOT"))}
    done = subprocess.run(
        [sys.executable, "-m", f"services.{service}", *flags],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**clean, **bad_env},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"{service}: invalid configuration:\n"), done.stderr
    for problem in expected:
        assert problem in done.stderr, (problem, done.stderr)
    assert f"python -m services.{service} --help" in done.stderr


def _parser() -> ServiceParser:
    p = ServiceParser(prog="t")
    p.add_argument("--port", type=number(int, 0, 65535), default=env("port", 1))
    p.add_argument("--low", type=number(float, 0), default=env("low", 0.5))
    p.add_argument("--high", type=number(float, 0), default=1.0)
    p.add_argument("--mode", choices=("a", "b"), default=env("mode", "a"))
    p.add_argument("--resume", action="store_true", default=env_switch("resume"))
    p.add_check(lambda a: [] if a.low <= a.high else ["--low above --high"], "low", "high")
    return p


def test_environment_values_are_converted_and_checked_like_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    args, problems = _parser().parse([])
    assert problems == [] and (args.port, args.low, args.mode, args.resume) == (1, 0.5, "a", False)
    monkeypatch.setenv("FACENAS_PORT", "8080")
    monkeypatch.setenv("FACENAS_MODE", "b")
    monkeypatch.setenv("FACENAS_RESUME", "yes")
    args, problems = _parser().parse([])
    assert problems == [] and (args.port, args.mode, args.resume) == (8080, "b", True)
    assert type(args.mode) is str  # not the marker of where it came from
    args, problems = _parser().parse(["--port", "9090", "--mode", "a"])  # flags win
    assert problems == [] and (args.port, args.mode) == (9090, "a")


def test_checks_across_flags_run_unless_a_flag_they_read_is_bad(monkeypatch: pytest.MonkeyPatch) -> None:
    _, problems = _parser().parse(["--low", "2"])
    assert problems == ["--low above --high"]
    monkeypatch.setenv("FACENAS_LOW", "much")
    _, problems = _parser().parse([])
    assert problems == ["--low (FACENAS_LOW): 'much' is not a number"]  # the check is skipped


def test_a_usage_error_is_a_config_error_not_an_exit() -> None:
    with pytest.raises(ConfigError, match="--port: expected one argument"):
        _parser().parse(["--port"])
