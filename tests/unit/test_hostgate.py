"""Tests of facenas.hostgate: measurements never overlap training steps, across processes and threads."""

from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from facenas import hostgate
from facenas.errors import InvalidInput
from facenas.hostgate import ENV, NullGate, QuietGate, QuietWindow, quiet_gate
from tests.timing import scaled

Interval = tuple[int, int]
SPAWN = mp.get_context("spawn")
PATIENCE_S = 120.0  # the longest any wait below may take before the test fails (never reached when green)


def _busy(seconds: float) -> None:
    """Burn CPU for ``seconds`` (a stand-in for a training step or a timed run)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _overlaps(a: Interval, b: Interval) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (an observable event) until true; fail after PATIENCE_S."""
    deadline = time.monotonic() + scaled(PATIENCE_S)
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def _measurement_requested(gate: QuietGate) -> bool:
    """Whether a measurement holds the turnstile (peeks with a shared non-blocking try)."""
    fd = os.open(gate.turnstile_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# ---------------------------------------------------------------------------------------------- actors
# Module-level so that spawned processes can import them; each writes its intervals as JSON.


def _train(lock: str, out: str, progress: Any, stop: Any, step_s: float) -> None:
    """A training-like process: short busy steps, yield_point() between them, until ``stop``."""
    steps: list[Interval] = []
    with QuietGate(lock).working() as worker:
        while not stop.is_set():
            worker.yield_point()
            t0 = time.monotonic_ns()
            _busy(step_s)
            steps.append((t0, time.monotonic_ns()))
            progress.value = len(steps)
    Path(out).write_text(json.dumps(steps))


def _measure(lock: str, out: str, go: Any, count: int, hold_s: float) -> None:
    """A measuring process: ``count`` windows through measuring(), each ``hold_s`` of busy work."""
    go.wait()
    windows: list[tuple[int, int, bool]] = []
    for _ in range(count):
        with QuietGate(lock).measuring(max_wait_s=PATIENCE_S) as window:
            t0 = time.monotonic_ns()
            _busy(hold_s)
            windows.append((t0, time.monotonic_ns(), window.quiet))
    Path(out).write_text(json.dumps(windows))


def _join(procs: list[Any]) -> None:
    for p in procs:
        p.join(PATIENCE_S)
        assert p.exitcode == 0, f"{p.name} exit code {p.exitcode}"


@pytest.fixture()
def lock(tmp_path: Path) -> str:
    return str(tmp_path / "quiet.lock")


# ---------------------------------------------------------------------------------------------- processes


@pytest.mark.slow
def test_measurements_never_overlap_training_steps(lock: str, tmp_path: Path) -> None:
    stop, go = SPAWN.Event(), SPAWN.Event()
    progress = [SPAWN.Value("i", 0) for _ in range(2)]
    trainers = [
        SPAWN.Process(target=_train, args=(lock, str(tmp_path / f"t{i}.json"), progress[i], stop, 0.005))
        for i in range(2)
    ]
    measurers = [
        SPAWN.Process(target=_measure, args=(lock, str(tmp_path / f"m{i}.json"), go, 4, 0.02))
        for i in range(2)
    ]
    for p in trainers + measurers:
        p.start()
    try:
        _wait_until(lambda: min(v.value for v in progress) >= 3, "training to start")
        go.set()
        _join(measurers)
        after = [v.value for v in progress]
        _wait_until(lambda: all(v.value >= a + 3 for v, a in zip(progress, after, strict=True)), "training")
    finally:
        stop.set()
        _join(trainers)
    windows = [w for i in range(2) for w in json.loads((tmp_path / f"m{i}.json").read_text())]
    steps = [tuple(s) for i in range(2) for s in json.loads((tmp_path / f"t{i}.json").read_text())]
    assert len(windows) == 8 and all(quiet for _, _, quiet in windows)
    for w in windows:
        assert not [s for s in steps if _overlaps(s, (w[0], w[1]))], (
            "a training step overlapped a measurement"
        )
    for a in windows:  # measurements are serialised too
        assert not [b for b in windows if b is not a and _overlaps((a[0], a[1]), (b[0], b[1]))]
    last_end = max(w[1] for w in windows)
    assert len([s for s in steps if s[0] > last_end]) >= 6, "training did not resume after the measurements"


# ---------------------------------------------------------------------------------------------- threads


def test_threads_of_one_process_are_separate_holders(lock: str) -> None:
    gate = QuietGate(lock)
    steps: list[Interval] = []
    windows: list[Interval] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def train() -> None:
        try:
            with gate.working() as worker:
                while not stop.is_set():
                    worker.yield_point()
                    t0 = time.monotonic_ns()
                    _busy(0.002)
                    steps.append((t0, time.monotonic_ns()))
        except BaseException as exc:
            errors.append(exc)

    def measure() -> None:
        try:
            _wait_until(lambda: len(steps) >= 3, "training to start")
            for _ in range(5):
                with gate.measuring(max_wait_s=PATIENCE_S) as window:
                    assert window.quiet and window.gated
                    t0 = time.monotonic_ns()
                    _busy(0.01)
                    windows.append((t0, time.monotonic_ns()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=train) for _ in range(2)] + [threading.Thread(target=measure)]
    for t in threads:
        t.start()
    threads[-1].join(PATIENCE_S)
    count = len(steps)
    _wait_until(lambda: len(steps) > count + 3, "training to resume")
    stop.set()
    for t in threads:
        t.join(PATIENCE_S)
        assert not t.is_alive(), "deadlock"
    assert not errors, errors
    assert len(windows) == 5
    assert not [(s, w) for s in list(steps) for w in windows if _overlaps(s, w)]


def test_new_training_waits_while_a_measurement_is_requested(lock: str) -> None:
    """Writer preference: once a measurement waits for a running step, new steps may not start."""
    gate = QuietGate(lock)
    release_step, entered = threading.Event(), threading.Event()
    order: list[str] = []

    def long_step() -> None:
        with gate.working():
            entered.set()
            release_step.wait(PATIENCE_S)
            order.append("step ends")

    def measure() -> None:
        with gate.measuring(max_wait_s=PATIENCE_S) as window:
            order.append(f"measure quiet={window.quiet}")

    def late_trainer() -> None:
        with gate.working():
            order.append("late trainer enters")

    first = threading.Thread(target=long_step)
    first.start()
    entered.wait(PATIENCE_S)
    meas = threading.Thread(target=measure)
    meas.start()
    _wait_until(lambda: _measurement_requested(gate), "the measurement request")
    late = threading.Thread(target=late_trainer)
    late.start()
    release_step.set()
    for t in (first, meas, late):
        t.join(PATIENCE_S)
        assert not t.is_alive()
    assert order == ["step ends", "measure quiet=True", "late trainer enters"]


def test_measuring_in_the_training_thread_does_not_deadlock(lock: str) -> None:
    gate = QuietGate(lock)
    with gate.working() as worker:
        with gate.measuring(max_wait_s=PATIENCE_S) as window:
            assert window.quiet
        assert worker.yield_point() == 0.0
    with gate.measuring(max_wait_s=PATIENCE_S) as window:  # everything was released
        assert window.quiet


# ---------------------------------------------------------------------------------------------- max_wait_s


def _hold_without_yielding(lock: str, holding: Any, release: Any) -> None:
    with QuietGate(lock).working():
        holding.set()
        release.wait(PATIENCE_S)


def test_max_wait_proceeds_without_quiet(lock: str) -> None:
    holding, release = SPAWN.Event(), SPAWN.Event()
    proc = SPAWN.Process(target=_hold_without_yielding, args=(lock, holding, release))
    proc.start()
    try:
        assert holding.wait(PATIENCE_S)
        before = _sample("facenas_quiet_gate_not_quiet_total")
        start = time.monotonic()
        with QuietGate(lock).measuring(max_wait_s=0.2) as window:
            assert not window.quiet and window.gated
            assert 0.2 <= window.waited_s <= time.monotonic() - start
        assert _sample("facenas_quiet_gate_not_quiet_total") == before + 1
    finally:
        release.set()
        _join([proc])
    with QuietGate(lock).measuring(max_wait_s=PATIENCE_S) as window:  # the holder's exit freed the gate
        assert window.quiet


def test_a_dead_holder_frees_the_gate(lock: str) -> None:
    holding, release = SPAWN.Event(), SPAWN.Event()
    proc = SPAWN.Process(target=_hold_without_yielding, args=(lock, holding, release))
    proc.start()
    assert holding.wait(PATIENCE_S)
    proc.kill()
    proc.join(PATIENCE_S)
    with QuietGate(lock).measuring(max_wait_s=PATIENCE_S) as window:
        assert window.quiet


def _sample(name: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name)
    return 0.0 if value is None else value


def test_waits_are_observed(lock: str) -> None:
    gate = QuietGate(lock)
    count = "facenas_quiet_gate_measurement_wait_seconds_count"
    before = _sample(count)
    with gate.measuring():
        pass
    assert _sample(count) == before + 1


def test_bad_max_wait(lock: str) -> None:
    for gate in (QuietGate(lock), NullGate()):
        with pytest.raises(InvalidInput, match="max_wait_s"), gate.measuring(max_wait_s=-1):
            pass


# ---------------------------------------------------------------------------------------------- quiet_gate


@pytest.fixture()
def no_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.delenv(ENV, raising=False)
    yield monkeypatch


def test_no_env_gives_the_no_op_gate(no_env: pytest.MonkeyPatch) -> None:
    gate = quiet_gate()
    assert isinstance(gate, NullGate)
    with gate.working() as worker, gate.measuring(max_wait_s=0) as window:
        assert worker.yield_point() == 0.0
        assert window == QuietWindow(quiet=True, waited_s=0.0, gated=False)
        assert window.to_dict() == {"quiet": True, "waited_s": 0.0, "gated": False}


def test_env_gives_one_gate_per_path(no_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "quiet.lock"
    no_env.setenv(ENV, str(path))
    gate = quiet_gate()
    assert isinstance(gate, QuietGate) and gate is quiet_gate() and gate.path == path
    assert path.is_file() and gate.turnstile_path.is_file()
    no_env.setenv(ENV, str(tmp_path / "other.lock"))
    assert quiet_gate() is not gate


def test_unusable_lock_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InvalidInput, match="quiet gate lock file"):
        QuietGate(blocker / "quiet.lock")


def test_module_metrics_are_named() -> None:
    names = {hostgate.TRAINING_WAIT._name, hostgate.MEASUREMENT_WAIT._name, hostgate.NOT_QUIET._name}
    assert all(n.startswith("facenas_quiet_gate_") for n in names)
