"""The backends use the quiet gate and refuse unstable figures: training pauses while a latency is measured
on the same host, and an unsettled latency fails as ``unstable`` instead of being returned."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from facenas.domain import Budget, EvalSpace
from facenas.errors import UnstableMeasurement
from facenas.hostgate import ENV, quiet_gate
from facenas.latency import LatencyProtocol
from facenas.workers.base import DetachedWork, parse_arch
from facenas.workers.cpu_latency import CpuLatencyBackend
from facenas.workers.trainer import TrainerBackend
from tests.unit.test_train import TINY_ARCH

SPACE = EvalSpace(img_size=(64, 64))
ARCH = parse_arch(json.dumps(TINY_ARCH), "ab" * 20, SPACE)


class _Steps(DetachedWork):
    """Records when each training step was reported."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.times: list[float] = []

    def report(self, phase: str, step: int = 0, total: int = 0, loss: float | None = None) -> None:
        if phase == "train":
            self.times.append(time.monotonic())


@pytest.mark.slow
def test_training_pauses_while_a_latency_is_measured(
    synth_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, str(tmp_path / "quiet.lock"))
    backend = TrainerBackend(synth_dataset, device="cpu", val_fraction=0.2)
    work = _Steps()
    budget = Budget(steps=60, batch_size=4, max_eval_batches=1)
    training = threading.Thread(
        target=backend.evaluate, args=(ARCH, backend.objectives[0], SPACE, budget, work)
    )
    training.start()
    while len(work.times) < 5:  # training is under way
        assert training.is_alive()
        time.sleep(0.01)
    with quiet_gate().measuring(max_wait_s=60) as window:
        began, steps_then = time.monotonic(), len(work.times)
        time.sleep(1.0)  # the "measurement"
        ended, steps_during = time.monotonic(), len(work.times) - steps_then
    training.join(120)
    assert window.quiet and window.gated
    assert steps_during <= 1  # at most the step that was already running when the gate closed
    assert not [t for t in work.times if began + 0.05 < t < ended]
    assert len(work.times) == 60  # and it finished afterwards


def test_an_unsettled_latency_is_refused() -> None:
    protocol = LatencyProtocol(
        rounds=2, cv_target=0.0, max_cv=0.0, max_attempts=1, warmup_runs=1, min_cpu_fraction=0.0
    )
    backend = CpuLatencyBackend(protocol)
    with pytest.raises(UnstableMeasurement, match="would not settle") as refused:
        backend.evaluate(ARCH, backend.objectives[0], SPACE, Budget(), DetachedWork())
    assert refused.value.reasons
