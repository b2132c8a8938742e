"""A plausible learning curve: simulated validation mIOU after a training budget.

``iou = ceiling * (1 - exp(-sqrt(images / tau)))``, where ``images`` is what the budget trains on (steps x
batch size; an epoch is :data:`NOMINAL_TRAIN_IMAGES`), discounted when the learning rate is far from
Archai's. The ceiling grows with capacity (log parameters and log MACs) within [:data:`CEILING_LOW`,
:data:`CEILING_HIGH`], shifted by seeded noise drawn once per architecture, objective and recipe (the
budget without its length), so that one architecture's curve is monotone in steps. Bigger models learn
more slowly (a larger ``tau``). With Archai's budget (1 epoch at 256x256) values land in Archai's range
(0.5-0.8); a few dozen steps at 64x64 give about 0.08, near what the demo's real training gives.

The int8 model's mIOU (``SNP Quantized Val. IOU``) is the same curve less a quantization drop of a few
percent, larger for small models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from facenas.domain import Budget
from facenas.sim.cost import Cost
from facenas.sim.seeded import gauss

#: An epoch: Face Synthetics' 100,000 frames less Archai's 2 % validation and 10 % test splits.
NOMINAL_TRAIN_IMAGES = 88_000
#: Images a 1M-parameter model needs to reach 1 - 1/e of its ceiling's square-root progress.
TAU_IMAGES = 20_000.0
#: Archai's learning rate: the recipe the curve peaks at.
REFERENCE_LR = 2e-4
CEILING_LOW = 0.55
CEILING_HIGH = 0.92
#: The capacity at the middle of the ceiling's range (a model of about 5M parameters, 10 GMACs).
CAPACITY_MIDDLE = 0.9
#: How sharply the ceiling rises with capacity.
CAPACITY_SLOPE = 2.5
#: Deviation of an architecture's ceiling from its capacity's.
CEILING_SIGMA = 0.015
#: A quantized model's drop: the fraction of mIOU int8 loses, between these for large and small models.
DROP_LOW = 0.02
DROP_HIGH = 0.06
#: The cross-entropy of a uniform guess over 18 classes, where simulated losses start.
LOSS_START = math.log(18)


def training_steps(budget: Budget) -> int:
    """The budget's steps (``epochs`` of :data:`NOMINAL_TRAIN_IMAGES` when it gives none)."""
    if budget.steps:
        return int(budget.steps)
    return max(1, math.ceil(budget.epochs * NOMINAL_TRAIN_IMAGES / budget.batch_size))


def capacity(cost: Cost) -> float:
    """0 for a 1M-parameter, 1-GMAC model; about +1 per 10x in both."""
    return 0.6 * (math.log10(max(cost.params, 1)) - 6.0) + 0.4 * (math.log10(max(cost.macs, 1)) - 9.0)


def _large(cost: Cost) -> float:
    """How large a model is, from 0 to 1 (a sigmoid of its capacity)."""
    return 1.0 / (1.0 + math.exp(-CAPACITY_SLOPE * (capacity(cost) - CAPACITY_MIDDLE)))


@dataclass(frozen=True)
class LearningCurve:
    """One architecture's curve under one recipe."""

    ceiling: float
    tau_images: float
    lr_factor: float
    batch_size: int

    def progress(self, step: int) -> float:
        """The fraction of the ceiling reached after ``step`` steps (0 at 0, rising towards 1)."""
        images = max(step, 0) * self.batch_size * self.lr_factor
        return 1.0 - math.exp(-math.sqrt(images / self.tau_images))

    def iou(self, step: int) -> float:
        return min(1.0, max(0.0, self.ceiling * self.progress(step)))

    def loss(self, step: int) -> float:
        """A training loss for progress reports: from a uniform guess's down to the ceiling's."""
        end = 0.2 + (1.0 - self.ceiling)
        return end + (LOSS_START - end) * (1.0 - self.progress(step))


def learning_curve(cost: Cost, budget: Budget, noise_parts: tuple[object, ...]) -> LearningCurve:
    """The curve of a model of ``cost`` under ``budget``'s recipe; ``noise_parts`` (seed, archid, objective,
    the recipe's key) fix its ceiling's noise."""
    ceiling = CEILING_LOW + (CEILING_HIGH - CEILING_LOW) * _large(cost)
    ceiling += gauss(CEILING_SIGMA, "ceiling", *noise_parts)
    tau = TAU_IMAGES * (max(cost.params, 1) / 1e6) ** 0.15
    off = math.log10(budget.learning_rate / REFERENCE_LR) if budget.learning_rate > 0 else 3.0
    return LearningCurve(min(max(ceiling, 0.05), 0.95), tau, 1.0 / (1.0 + off * off), budget.batch_size)


def recipe(budget: Budget) -> Budget:
    """``budget`` without its length: what the ceiling's noise is drawn for."""
    return replace(budget, steps=0, epochs=1.0)


def quantization_drop(cost: Cost, noise_parts: tuple[object, ...]) -> float:
    """The fraction of its mIOU an int8 model loses (smaller for larger models), with seeded noise."""
    small = 1.0 - _large(cost)
    drop = DROP_LOW + (DROP_HIGH - DROP_LOW) * small + abs(gauss(0.005, "drop", *noise_parts))
    return min(drop, 0.5)
