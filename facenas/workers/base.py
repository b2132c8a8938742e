"""The backend contract behind every objective service, and the pieces they share."""

from __future__ import annotations

import abc
import hashlib
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from facenas.domain import Budget, EvalSpace
from facenas.errors import DatasetError, InvalidInput
from facenas.space.hgnet import Arch, arch_with_id
from facenas.space.params import SearchSpaceParams

#: Called now and then during long work; raises (e.g. Cancelled) to abandon it.
CheckAlive = Callable[[], None]
#: A training loop's per-step callback: (step, total, loss).
StepCallback = Callable[[int, int, float], None]


class Work(Protocol):
    """What a running evaluation may use and must tell: its device, whether to go on, its progress."""

    @property
    def device(self) -> str:
        """The device this evaluation slot owns (``cpu``, ``cuda:0``...)."""
        ...

    def check_alive(self) -> None:
        """Raise :class:`~facenas.errors.Cancelled` when the evaluation was cancelled."""

    def report(self, phase: str, step: int = 0, total: int = 0, loss: float | None = None) -> None:
        """Progress within ``phase`` (e.g. ``train``, ``measure``); also checks for cancellation."""


@dataclass
class DetachedWork:
    """A :class:`Work` for direct calls (CLI, benches, tests): never cancelled unless ``check`` raises;
    progress is dropped."""

    device: str = "cpu"
    check: CheckAlive | None = None

    def check_alive(self) -> None:
        if self.check is not None:
            self.check()

    def report(self, phase: str, step: int = 0, total: int = 0, loss: float | None = None) -> None:
        self.check_alive()


def step_reporter(
    work: Work, phase: str = "train", between_steps: Callable[[], object] | None = None
) -> StepCallback:
    """A training loop's ``on_step`` that reports each step of ``phase`` to ``work``; ``between_steps``
    (e.g. the quiet gate's ``yield_point``) runs after each step, before the next one starts."""

    def on_step(step: int, total: int, loss: float) -> None:
        work.report(phase, step, total, loss)
        if between_steps is not None:
            between_steps()

    return on_step


#: The start of every simulated result's target key (``--backend sim``); no real backend's key has it.
SIM_PREFIX = "sim:"


@dataclass(frozen=True)
class TargetInfo:
    """What results are keyed by: results with different keys are never mixed."""

    key: str
    description: str
    emulated: bool = False

    @property
    def simulated(self) -> bool:
        """Whether results under this key are simulated (:mod:`facenas.workers.sim`), not measured."""
        return self.key.startswith(SIM_PREFIX)


@dataclass(frozen=True)
class Measurement:
    """One evaluated objective value."""

    value: float
    unit: str
    details: Mapping[str, Any] = field(default_factory=dict)


class EvaluationBackend(abc.ABC):
    """Measures objectives of architectures; one instance per service process."""

    #: Archai objective names this backend evaluates.
    objectives: tuple[str, ...] = ()
    #: Evaluations it runs at once by default (latency measurements must not overlap: 1).
    capacity: int = 1

    @abc.abstractmethod
    def target(self, objective: str, space: EvalSpace) -> TargetInfo:
        """The target key results of ``objective`` get under ``space``."""

    @abc.abstractmethod
    def evaluate(
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, work: Work
    ) -> Measurement:
        """Measure ``objective`` for ``arch`` on ``work.device``, reporting progress to ``work``.

        Raise InvalidInput for what it cannot evaluate (the model or request), Unavailable when something
        it needs is missing right now, UnstableMeasurement when a figure would not settle.
        """

    def check_objective(self, objective: str) -> None:
        if objective not in self.objectives:
            raise InvalidInput(
                f"objective: {objective!r} is not served here; this service evaluates {list(self.objectives)}"
            )


def worker_id() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def parse_arch(document: str, archid: str, space: EvalSpace) -> Arch:
    """Validate an arch JSON document for building under ``space``; results are keyed by ``archid``."""
    check_space(space)
    if not _ARCHID.match(archid):
        raise InvalidInput(f"architecture.archid: {archid!r} must be 40 lowercase hex digits (sha1)")
    return arch_with_id(document, archid, space.num_classes, space.in_channels)


_ARCHID = re.compile(r"^[0-9a-f]{40}$")


def check_space(space: EvalSpace) -> None:
    """Classes, channels and image size within sane bounds (divisibility is checked per arch)."""
    problems = []
    if not 1 <= space.num_classes <= 1000:
        problems.append(f"space.num_classes: {space.num_classes} must be in [1, 1000]")
    if not 1 <= space.in_channels <= 64:
        problems.append(f"space.in_channels: {space.in_channels} must be in [1, 64]")
    w, h = space.img_size
    if not (16 <= w <= 2048 and 16 <= h <= 2048):
        problems.append(f"space.img_width/img_height: {w}x{h} must be within [16, 2048]")
    if problems:
        raise InvalidInput("; ".join(problems))


def space_params_for(space: EvalSpace) -> SearchSpaceParams:
    """Build/feed parameters for ``space``; the image-size rule is relaxed (checked per architecture)."""
    return SearchSpaceParams(
        num_classes=space.num_classes,
        in_channels=space.in_channels,
        img_size=space.img_size,
        num_blocks=2,
        stem_strides=(1,),
    )


def dataset_key(dataset_dir: Path) -> str:
    """``<dir name>-<frames>-<sha1 of the frame ids, 10 hex>``: what trained results are keyed by.

    Raises DatasetError for a directory without frames or with fewer than 3 (train, val, test).
    """
    from facenas.data.facesynth import discover_frames  # keeps this module torch-free

    frames = discover_frames(dataset_dir)
    if len(frames) < 3:
        raise DatasetError(f"{dataset_dir} has {len(frames)} frames; at least 3 are needed")
    digest = hashlib.sha1("\n".join(frames).encode()).hexdigest()[:10]
    return f"{dataset_dir.name}-{len(frames)}-{digest}"


def split_key(val_fraction: float, test_fraction: float) -> str:
    """The split part of a trained result's target key, e.g. ``val0.02-test0.1``."""
    return f"val{val_fraction:g}-test{test_fraction:g}"
