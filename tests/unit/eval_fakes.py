"""Backends that stand in for training and latency in unit tests: deterministic values, counted steps,
training that tests can hold at a step, measurements that fail the way real ones do."""

from __future__ import annotations

import collections
import threading
import time

from facenas.domain import Budget, EvalSpace
from facenas.errors import ArchNotEvaluable, InvalidInput, UnstableMeasurement
from facenas.space.hgnet import Arch
from facenas.workers.base import EvaluationBackend, Measurement, TargetInfo, Work
from tests.timing import scaled

IOU = "Partial Training Val. IOU"
CPU_LATENCY = "CPU ONNX Latency (s)"


def value_of(archid: str, salt: int = 0) -> float:
    """A deterministic value in (0, 1) per architecture."""
    return ((int(archid[:8], 16) + salt * 7919) % 10_000 + 1) / 10_001


class StepTrainer(EvaluationBackend):
    """'Trains' ``steps`` steps, reporting each; ``hold_at`` holds every job at that step until released."""

    objectives = (IOU,)

    def __init__(self, steps: int = 8, step_s: float = 0.0, hold_at: int | None = None) -> None:
        self.steps = steps
        self.step_s = step_s
        self.hold_at = hold_at
        self.released = threading.Event()
        self.steps_done: collections.Counter[str] = collections.Counter()
        self.started: collections.Counter[str] = collections.Counter()
        self.devices: list[str] = []
        self.lock = threading.Lock()
        self.held = threading.Condition(self.lock)

    def target(self, objective: str, space: EvalSpace) -> TargetInfo:
        return TargetInfo("train/fake", "a fake trainer")

    def evaluate(
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, work: Work
    ) -> Measurement:
        with self.lock:
            self.started[arch.archid] += 1
            self.devices.append(work.device)
        for step in range(1, self.steps + 1):
            if self.hold_at is not None and step == self.hold_at:
                with self.held:
                    self.held.notify_all()
                while not self.released.wait(0.01):
                    work.check_alive()
                work.check_alive()
            if self.step_s:
                time.sleep(self.step_s)
            with self.lock:
                self.steps_done[arch.archid] += 1
            work.report("train", step, self.steps, loss=1.0 / step)
        return Measurement(value_of(arch.archid), "miou", {"steps": self.steps})

    def wait_held(self, count: int, timeout: float = 60.0) -> None:
        """Block until ``count`` jobs sit at ``hold_at``."""
        assert self.hold_at is not None
        deadline = time.monotonic() + scaled(timeout)
        with self.held:
            while sum(1 for n in self.steps_done.values() if n >= self.hold_at - 1) < count:
                assert self.held.wait(max(0.0, deadline - time.monotonic())), "jobs never reached the hold"


class FakeLatency(EvaluationBackend):
    """Latency from the archid; ``unstable`` archids refuse that many times, ``invalid`` ones always."""

    objectives = (CPU_LATENCY,)

    def __init__(
        self,
        unstable: dict[str, int] | None = None,
        invalid: set[str] | None = None,
        not_evaluable: set[str] | None = None,
    ) -> None:
        self.unstable = dict(unstable or {})
        self.invalid = set(invalid or ())
        self.not_evaluable = set(not_evaluable or ())
        self.calls: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def target(self, objective: str, space: EvalSpace) -> TargetInfo:
        return TargetInfo("cpu/fake/t1/64x64", "a fake CPU")

    def evaluate(
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, work: Work
    ) -> Measurement:
        with self.lock:
            self.calls[arch.archid] += 1
            left = self.unstable.get(arch.archid, 0)
            if left:
                self.unstable[arch.archid] = left - 1
        work.report("measure", 1, 1)
        if arch.archid in self.invalid:
            raise InvalidInput(f"{arch.archid}: cannot be exported")
        if arch.archid in self.not_evaluable:
            raise ArchNotEvaluable(f"{arch.archid}: onnxruntime rejects the model")
        if left:
            raise UnstableMeasurement("host busy: cpu_fraction 0.50 < 0.90", ["cpu_fraction 0.50 < 0.90"])
        return Measurement(0.01 + value_of(arch.archid, 1) / 100, "s", {"cv": 0.02, "stable": True})
