"""How long a simulated evaluation takes: a fixed delay or one drawn per evaluation, spent with progress.

``--sim-delay`` takes ``SECONDS`` (fixed, ``0`` for none), ``uniform:LOW,HIGH`` or ``lognormal:MEDIAN,SIGMA``
(``MEDIAN * exp(SIGMA * N(0, 1))``: a long tail, like real training times). A drawn delay is seeded by the
evaluation (its key and the backend's seed), so a rerun waits the same. :func:`spend` waits it out in
ticks of at most :data:`TICK_S`, reporting progress and checking for cancellation at each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from facenas.errors import InvalidInput
from facenas.sim.seeded import rng
from facenas.workers.base import Work

#: The longest delay one evaluation may take (a day).
MAX_DELAY_S = 86_400.0
#: Cancellation is noticed, and progress reported, at least this often while a delay is spent.
TICK_S = 0.1
FORMS = "SECONDS, uniform:LOW,HIGH or lognormal:MEDIAN,SIGMA (e.g. 2.5, uniform:1,3, lognormal:2,0.5)"
KINDS = ("fixed", "uniform", "lognormal")


class DelayError(InvalidInput):
    """A ``--sim-delay`` value that is not one of :data:`FORMS`; ``problem`` ends ``'<value>' ...``."""

    def __init__(self, text: str, problem: str) -> None:
        self.problem = problem
        super().__init__(f"{text!r} {problem}")


@dataclass(frozen=True)
class Delay:
    """A delay distribution: ``fixed`` (``a`` seconds), ``uniform`` in [a, b], ``lognormal`` (median a,
    sigma b)."""

    kind: str = "fixed"
    a: float = 0.0
    b: float = 0.0

    def draw(self, *parts: object) -> float:
        """The delay of the evaluation ``parts`` name (the same parts, the same delay)."""
        if self.kind == "fixed":
            return self.a
        draw = rng("delay", *parts)
        if self.kind == "uniform":
            return draw.uniform(self.a, self.b)
        return min(self.a * math.exp(self.b * draw.gauss(0.0, 1.0)), MAX_DELAY_S)

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{self.a:g}"
        return f"{self.kind}:{self.a:g},{self.b:g}"


def parse_delay(text: str) -> Delay:
    """A :class:`Delay` from ``--sim-delay``'s text; :class:`DelayError` naming what is wrong."""
    kind, sep, rest = text.strip().partition(":")
    if not sep:
        kind, rest = "fixed", kind
    numbers = _numbers(text, rest)
    if kind == "fixed" and len(numbers) == 1:
        return Delay("fixed", numbers[0])
    if kind in ("uniform", "lognormal") and len(numbers) == 2:
        a, b = numbers
        if kind == "uniform" and a > b:
            raise DelayError(text, f"has LOW {a:g} > HIGH {b:g}")
        if kind == "lognormal" and b > 3:
            raise DelayError(text, f"has SIGMA {b:g}; at most 3 (a tail beyond that is no delay)")
        return Delay(kind, a, b)
    raise DelayError(text, f"must be {FORMS}")


def _numbers(text: str, rest: str) -> list[float]:
    try:
        numbers = [float(part) for part in rest.split(",")]
    except ValueError:
        raise DelayError(text, f"must be {FORMS}") from None
    for value in numbers:
        if not math.isfinite(value) or value < 0:
            raise DelayError(text, "has a negative or non-finite number; delays are seconds >= 0")
        if value > MAX_DELAY_S:
            raise DelayError(text, f"has {value:g} s; at most {MAX_DELAY_S:g} s")
    return numbers


def spend(
    seconds: float,
    work: Work,
    phase: str,
    total: int = 0,
    loss: Callable[[int], float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Wait ``seconds``, reporting ``phase`` to ``work`` (steps 0 to ``total`` spread evenly over the wait,
    with ``loss(step)`` when given) and checking for cancellation every :data:`TICK_S` at most."""
    ticks = max(1, math.ceil(seconds / TICK_S))
    start = clock()

    def report(step: int) -> None:
        work.report(phase, step, total, loss(step) if loss is not None and total else None)

    report(0)
    for tick in range(1, ticks + 1):
        left = start + seconds * tick / ticks - clock()
        if left > 0:
            sleep(left)
        report(round(total * tick / ticks))
