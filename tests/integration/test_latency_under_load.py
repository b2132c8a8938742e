"""The issue's test: under CPU-burning neighbours a CPU latency is within 10 % of the quiet host's, or
refused; through the quiet gate, a measurement next to a training process matches the quiet host.

Real processes on (at most) two CPUs: this thread is confined to them and the neighbours it starts
inherit that. Every wait is on an event (a neighbour's "ready" or "resumed" line, a run queue with
nobody else on it); the tolerance is the issue's 10 %. On a VM the quiet host itself can drift by
more than that from one measurement to the next (docs/latency-contention.md), so the gated and quiet
figures are compared as the fastest of several, interleaved. A host that other work keeps busy for
minutes cannot give the quiet reference: the test is then skipped, saying so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.neighbours import neighbours
from facenas.errors import UnstableMeasurement
from facenas.hostgate import ENV, Gate, QuietGate, quiet_gate
from facenas.latency import LatencyResult, ensure_stable, measure_onnx_latency
from facenas.latency.contention import procs_running
from facenas.pipeline import arch_to_onnx
from facenas.space import HgnetSearchSpace, SearchSpaceParams
from tests.conftest import SMALLEST_SNP

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOLERANCE = 0.10  # the bound
TRIES = 5  # measurements tried for one stable figure, as a searcher re-measures a refused one
PAIRS = 6  # quiet and gated measurements, interleaved
EXTRA = 12  # measurements added to the side whose fastest figure is more than TOLERANCE behind the other's
QUIET_SAMPLES = 20  # run-queue samples in a row, 50 ms apart, with nobody else runnable near our CPUs
QUIET_PATIENCE_S = 300.0
DISTURB_TRIES = 3  # ungated measurements next to training, until one shows it lost CPU to the training


@pytest.fixture(scope="module")
def model() -> bytes:
    params = SearchSpaceParams(img_size=(64, 64))
    return arch_to_onnx(HgnetSearchSpace(params).load(SMALLEST_SNP), params).model_bytes


@pytest.fixture()
def cpus() -> Iterator[list[int]]:
    """Confine this thread (and the processes it starts) to at most two CPUs."""
    before = os.sched_getaffinity(0)
    chosen = sorted(before)[:2]
    os.sched_setaffinity(0, chosen)
    try:
        yield chosen
    finally:
        os.sched_setaffinity(0, before)


def _wait_for_quiet_host(cpus: list[int]) -> None:
    """Wait until, for QUIET_SAMPLES samples in a row, no other task could be runnable on our CPUs (all
    others fit on the host's remaining CPUs); skip the test past QUIET_PATIENCE_S."""
    spare = (os.cpu_count() or 1) - len(cpus)
    deadline = time.monotonic() + QUIET_PATIENCE_S
    calm, seen = 0, []
    while calm < QUIET_SAMPLES:
        running = procs_running()
        if running is None:
            return  # no run queue to watch (not Linux): measure as is
        others = running - 1
        calm = calm + 1 if others <= spare else 0
        seen = [*seen[-9:], others]
        if time.monotonic() > deadline:
            pytest.skip(f"host busy for {QUIET_PATIENCE_S:.0f} s (other runnable tasks, last: {seen})")
        time.sleep(0.05)


def _stable(measure: Callable[[], LatencyResult], what: str, cpus: list[int]) -> LatencyResult:
    """The first stable result of up to TRIES measurements, each once the host is quiet; fails the test
    with every refusal if none."""
    refusals = []
    for _ in range(TRIES):
        _wait_for_quiet_host(cpus)
        try:
            return ensure_stable(measure())
        except UnstableMeasurement as exc:
            refusals.append(str(exc))
    pytest.fail(f"no stable {what} measurement in {TRIES} tries: {refusals}")


def _disturbed(result: LatencyResult) -> bool:
    """Whether any attempt of a measurement lost CPU to a neighbour (the protocol's retries may still
    have found an undisturbed window for the attempt it kept)."""
    floor = result.protocol.min_cpu_fraction
    return result.contended or any(f < floor for f in result.attempt_cpu_fractions)


def _assert_training_disturbs(model: bytes) -> None:
    """Fail unless ungated measurements next to the training neighbour lose CPU to it: up to
    DISTURB_TRIES, as one measurement may be lucky enough never to share a core with a training step."""
    seen = []
    for _ in range(DISTURB_TRIES):
        result = measure_onnx_latency(model)
        if _disturbed(result):
            return
        seen.append(result.attempt_cpu_fractions)
    pytest.fail(f"training did not disturb {DISTURB_TRIES} ungated measurements: cpu fractions {seen}")


def _behind(medians: dict[str, list[float]]) -> str | None:
    """The kind ("quiet" or "gated") whose fastest figure is more than TOLERANCE slower than the other's;
    None when they agree within it."""
    gated, quiet = min(medians["gated"]), min(medians["quiet"])
    if gated > quiet * (1 + TOLERANCE):
        return "gated"
    if gated < quiet * (1 - TOLERANCE):
        return "quiet"
    return None


def _within(value: float, reference: float) -> bool:
    return abs(value / reference - 1) <= TOLERANCE


def test_spinning_neighbours_on_every_core_are_detected_and_refused(model: bytes, cpus: list[int]) -> None:
    quiet = _stable(lambda: measure_onnx_latency(model), "quiet", cpus).median_s
    with neighbours("spin", len(cpus), cpus=cpus):  # one busy loop pinned to each of our CPUs
        loaded = [measure_onnx_latency(model) for _ in range(2)]
    for r in loaded:
        assert r.contended, f"neighbours on every core, yet no contention seen: {r.to_dict()}"
        assert all(n >= len(cpus) for n in r.neighbours), r.neighbours
        refused = not r.stable
        if refused:
            with pytest.raises(UnstableMeasurement, match=r"^host busy: cpu_fraction"):
                ensure_stable(r)
        assert _within(r.median_s, quiet) or refused, (r.median_s, quiet)


def test_gated_measurement_next_to_training_matches_the_quiet_host(
    model: bytes, cpus: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quiet and gated measurements, interleaved: the fastest gated one is no more than 10 % slower than
    the fastest quiet one. (The host's own drift only ever slows a measurement down, by up to 1.7x on
    our VM, so the fastest of several stable measurements is the undisturbed figure; a gate that let
    training run would slow, or get refused, every gated one. Either side can drift: seen in CI, 2.49 ms
    gated against 3.24 ms quiet; seen here, 4.02 ms quiet once among five of 4.9-6.4 ms, against 4.75-5.34
    ms gated. While the fastest figures of the two sides differ by more than the tolerance, the slower
    side is measured again, up to EXTRA times, so that it can show the undisturbed figure too; a gate
    that let training run cannot: its measurements stay slow or get refused.)"""
    monkeypatch.setenv(ENV, str(tmp_path / "quiet.lock"))
    gate = quiet_gate()
    assert isinstance(gate, QuietGate)
    with neighbours("train", 1) as (trainer,):  # inherits ENV: trains through working()/yield_point()
        _assert_training_disturbs(model)
        trainer.send_signal(signal.SIGSTOP)  # the trainer runs only while a gated measurement is taken
        measure = {
            "quiet": lambda: measure_onnx_latency(model),
            "gated": lambda: _gated(model, gate, trainer),
        }
        medians: dict[str, list[float]] = {"quiet": [], "gated": []}
        for pair in range(PAIRS):
            for kind in ("quiet", "gated") if pair % 2 == 0 else ("gated", "quiet"):
                medians[kind].append(_stable(measure[kind], kind, cpus).median_s)
        for _ in range(EXTRA):  # one side drifted: let it show the undisturbed figure too
            behind = _behind(medians)
            if behind is None:
                break
            medians[behind].append(_stable(measure[behind], behind, cpus).median_s)
    gated, quiet = min(medians["gated"]), min(medians["quiet"])
    assert gated <= quiet * (1 + TOLERANCE), f"the gate let training slow a measurement: {medians}"


def _gated(model: bytes, gate: Gate, trainer: subprocess.Popen[str]) -> LatencyResult:
    """Continue the (stopped) trainer, measure through the gate, see training resume, stop it again."""
    assert trainer.stdout is not None
    trainer.send_signal(signal.SIGCONT)
    with gate.measuring(max_wait_s=60) as window:
        result = measure_onnx_latency(model)
    assert window.quiet and window.gated
    assert trainer.stdout.readline().strip() == "resumed"  # it waited at yield_point() and went on
    trainer.send_signal(signal.SIGSTOP)
    return result
