"""Tests of contention detection in measure_onnx_latency and of ensure_stable (fake CPU clocks)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from facenas.errors import MeasurementError, UnstableMeasurement
from facenas.latency import (
    LatencyProtocol,
    LatencyResult,
    contention,
    ensure_stable,
    host_info,
    measure_onnx_latency,
)
from facenas.latency import cpu as cpu_mod
from facenas.latency.contention import RoundUsage, Usage, contention_reasons, procs_running

PROTOCOL = LatencyProtocol(
    warmup_runs=1, warmup_min_seconds=0.0, rounds=3, runs_per_round=3, min_round_seconds=0.0, max_attempts=3
)
FLAT = [1000] * 9  # one attempt of PROTOCOL with every run at 1 us: cv 0


@pytest.fixture(scope="module")
def model() -> bytes:
    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [numpy_helper.from_array(weight, "w")],
    )
    return bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


class _SampleClock:
    """A perf_counter_ns stand-in for the samples: every run takes the next duration (ns)."""

    def __init__(self, durations: list[int]) -> None:
        self._durations = iter(durations)
        self._t = 0
        self._ending = False

    def __call__(self) -> int:
        if self._ending:
            self._t += next(self._durations)
        self._ending = not self._ending
        return self._t


class _HostClocks:
    """Fake wall and thread-CPU clocks: every wall read advances 1 ms; during attempt k the CPU clock
    reads ``shares[k]`` of the last wall reading (a round reads each clock twice)."""

    def __init__(self, shares: list[float], rounds: int) -> None:
        self._shares = shares
        self._rounds = rounds
        self._reads = 0
        self._wall = 0

    def wall(self) -> int:
        self._wall += 1_000_000
        self._reads += 1
        return self._wall

    def cpu(self) -> int:
        attempt = min((self._reads - 1) // (2 * self._rounds), len(self._shares) - 1)
        return int(self._wall * self._shares[attempt])


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Flat samples (cv 0) and a known run queue, so that only the CPU share decides."""
    monkeypatch.setattr(cpu_mod, "_now_ns", _SampleClock(FLAT * 3))
    monkeypatch.setattr(contention, "procs_running", lambda: 3)
    yield monkeypatch


def _with_share(fake: pytest.MonkeyPatch, *shares: float) -> None:
    clocks = _HostClocks(list(shares), PROTOCOL.rounds)
    fake.setattr(contention, "_wall_ns", clocks.wall)
    fake.setattr(contention, "_thread_cpu_ns", clocks.cpu)


def test_contended_attempts_are_remeasured_then_refused(model: bytes, fake: pytest.MonkeyPatch) -> None:
    _with_share(fake, 0.5)
    r = measure_onnx_latency(model, protocol=PROTOCOL)
    assert r.attempts == 3 and r.cv == 0.0  # a low cv alone does not end the measurement
    assert r.contended and not r.stable
    assert r.cpu_fraction == pytest.approx(0.5)
    assert all(f == pytest.approx(0.5) for f in r.attempt_cpu_fractions + r.round_cpu_fractions)
    assert r.neighbours == (2, 2, 2)
    cpus = host_info().usable_cpus
    assert r.unstable_reasons == (
        f"cpu_fraction 0.50 < 0.90; 2.0 other runnable tasks on {cpus} usable CPUs",
    )
    with pytest.raises(UnstableMeasurement, match=r"^host busy: cpu_fraction 0\.50 < 0\.90") as info:
        ensure_stable(r)
    assert info.value.reasons == list(r.unstable_reasons)
    assert isinstance(info.value, MeasurementError)


def test_an_uncontended_attempt_is_kept(model: bytes, fake: pytest.MonkeyPatch) -> None:
    _with_share(fake, 0.4, 1.0)
    r = measure_onnx_latency(model, protocol=PROTOCOL)
    assert r.attempts == 2 and r.attempt_cpu_fractions[0] == pytest.approx(0.4)
    assert r.cpu_fraction == 1.0 and not r.contended
    assert r.stable and r.unstable_reasons == ()
    assert ensure_stable(r) is r


def test_all_contended_keeps_the_least_contended(model: bytes, fake: pytest.MonkeyPatch) -> None:
    _with_share(fake, 0.3, 0.7, 0.5)
    r = measure_onnx_latency(model, protocol=PROTOCOL)
    assert r.attempts == 3 and r.cpu_fraction == pytest.approx(0.7) and r.contended


def test_high_cv_alone_is_refused_with_its_own_reason(model: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = _HostClocks([1.0], PROTOCOL.rounds)
    monkeypatch.setattr(contention, "_wall_ns", clocks.wall)
    monkeypatch.setattr(contention, "_thread_cpu_ns", clocks.cpu)
    noisy = [1000] * 3 + [2000] * 3 + [1000] * 3  # round medians 1, 2, 1 us: cv 0.43
    monkeypatch.setattr(cpu_mod, "_now_ns", _SampleClock(noisy * 3))
    r = measure_onnx_latency(model, protocol=PROTOCOL)
    assert r.attempts == 3 and not r.contended and not r.stable
    assert r.unstable_reasons == (f"cv {r.cv:.1%} > max_cv {PROTOCOL.max_cv:.1%}",)
    with pytest.raises(UnstableMeasurement, match=r"^latency would not settle: cv 43\.3% > max_cv"):
        ensure_stable(r)


def test_min_cpu_fraction_zero_disables_the_check(model: bytes, fake: pytest.MonkeyPatch) -> None:
    _with_share(fake, 0.2)
    protocol = LatencyProtocol(**{**PROTOCOL.to_dict(), "min_cpu_fraction": 0.0})  # type: ignore[arg-type]
    r = measure_onnx_latency(model, protocol=protocol)
    assert r.attempts == 1 and not r.contended and r.stable


def test_real_measurement_records_host_facts(model: bytes) -> None:
    r = measure_onnx_latency(model, protocol=PROTOCOL)
    assert 0.0 <= r.cpu_fraction <= 1.0 and len(r.round_cpu_fractions) == len(r.round_medians_s)
    assert len(r.attempt_cpu_fractions) == r.attempts
    if procs_running() is not None:
        assert len(r.neighbours) == len(r.round_medians_s) and all(n >= 0 for n in r.neighbours)
    assert r.load_1min_end is None or r.load_1min_end >= 0
    assert r.stable == (not r.unstable_reasons)
    assert r.contended == (r.cpu_fraction < PROTOCOL.min_cpu_fraction)
    data = json.loads(json.dumps(r.to_dict()))
    assert data["unstable_reasons"] == list(r.unstable_reasons) and data["contended"] == r.contended
    assert data["protocol"]["max_cv"] == PROTOCOL.max_cv
    assert data["protocol"]["min_cpu_fraction"] == PROTOCOL.min_cpu_fraction


def test_the_thread_clock_sees_a_sleep_as_lost_cpu() -> None:
    """The premise of cpu_fraction: time off the CPU does not advance the thread's CPU clock."""
    meter = contention.RoundMeter(threads=1)
    meter.start()
    time.sleep(0.05)
    usage = meter.stop()
    assert usage.wall_ns >= 50_000_000 and usage.cpu_ns < usage.wall_ns / 2


# ---------------------------------------------------------------------------------------------- helpers


def test_usage_aggregates_rounds() -> None:
    usage = Usage.of([RoundUsage(100, 100, 0), RoundUsage(300, 100, 2), RoundUsage(0, 0, None)])
    assert usage.cpu_fraction == 0.5
    assert usage.round_cpu_fractions == (1.0, pytest.approx(1 / 3), 1.0)
    assert usage.neighbours == (0, 2) and usage.mean_neighbours() == 1.0
    assert Usage.of([RoundUsage(10, 12, None)]).cpu_fraction == 1.0  # clock granularity: clipped


def test_reasons_without_run_queue() -> None:
    usage = Usage(0.6, (0.6,), ())
    assert contention_reasons(usage, 0.9, 4) == ["cpu_fraction 0.60 < 0.90"]
    assert contention_reasons(usage, 0.6, 4) == []


def test_procs_running_reads_proc_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 7\nprocs_blocked 0\n")
    monkeypatch.setattr(contention, "_PROC_STAT", stat)
    assert procs_running() == 7
    stat.write_text("cpu  1 2 3\n")
    assert procs_running() is None
    monkeypatch.setattr(contention, "_PROC_STAT", stat.parent / "absent")
    assert procs_running() is None


def test_ensure_stable_message_names_load(model: bytes, fake: pytest.MonkeyPatch) -> None:
    _with_share(fake, 0.5)
    r: LatencyResult = measure_onnx_latency(model, protocol=PROTOCOL)
    with pytest.raises(UnstableMeasurement) as info:
        ensure_stable(r)
    assert "measure again when the host is quiet" in str(info.value) and "3 attempt(s)" in str(info.value)
