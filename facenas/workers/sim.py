"""The simulation backend (``--backend sim``): every objective, simulated, labelled, torch-free.

Values are deterministic per (architecture, objective, budget, seed): latencies from the analytic cost
model of :mod:`facenas.sim.cost` (MACs, memory traffic, op count; fp32 CPU and int8 Snapdragon
coefficients), IOUs from the learning curve of :mod:`facenas.sim.curve`, each with seeded noise. Each
evaluation waits a delay (:mod:`facenas.sim.delay`), reporting progress as the real services do. Results
carry ``simulated: true`` in their details and target keys starting with :data:`SIM_PREFIX`, which no
real backend produces, so they are never mixed with measured results (the seed and the model version are
part of the key too). Use it to try a search config or an algorithm in minutes, as Syne Tune's simulator
backend is used; never to choose a model.
"""

from __future__ import annotations

from typing import Any

from facenas.domain import OBJECTIVES, Budget, EvalSpace, budget_key
from facenas.errors import InvalidInput
from facenas.sim import MODEL_VERSION
from facenas.sim.cost import CPU_FP32, SNP_INT8, LatencyModel, cost_of
from facenas.sim.curve import learning_curve, quantization_drop, recipe, training_steps
from facenas.sim.delay import Delay, spend
from facenas.sim.seeded import gauss
from facenas.space.hgnet import Arch
from facenas.space.spec import check_input_size
from facenas.workers.base import SIM_PREFIX, EvaluationBackend, Measurement, TargetInfo, Work

IOU = "Partial Training Val. IOU"
CPU_LATENCY = "CPU ONNX Latency (s)"
SNP_LATENCY = "SNP Quantized Latency (s)"
QUANTIZED_IOU = "SNP Quantized Val. IOU"
#: objective -> the part of its target key after ``sim:``
KINDS = {IOU: "train", CPU_LATENCY: "cpu-fp32", SNP_LATENCY: "snp-int8", QUANTIZED_IOU: "snp-int8-iou"}
LATENCY_MODELS: dict[str, LatencyModel] = {CPU_LATENCY: CPU_FP32, SNP_LATENCY: SNP_INT8}
#: The relative deviation of a simulated latency from its cost model's figure.
LATENCY_SIGMA = 0.03
#: The objectives each service serves with ``--backend sim``.
SERVICE_OBJECTIVES = {
    "trainer": (IOU,),
    "latency_cpu": (CPU_LATENCY,),
    "latency_snp": (SNP_LATENCY, QUANTIZED_IOU),
}


class SimBackend(EvaluationBackend):
    """Simulated ``objectives``; each evaluation waits a ``delay`` drawn for it."""

    def __init__(
        self, objectives: tuple[str, ...], delay: Delay | None = None, seed: int = 0, capacity: int = 1
    ) -> None:
        unknown = [o for o in objectives if o not in KINDS]
        if unknown or not objectives:
            raise InvalidInput(f"no simulation of {unknown or 'nothing'}; it simulates {list(KINDS)}")
        self.objectives = tuple(objectives)
        self.delay = delay or Delay()
        self.seed = seed
        self.capacity = capacity

    def target(self, objective: str, space: EvalSpace) -> TargetInfo:
        self.check_objective(objective)
        w, h = space.img_size
        size = f"/{w}x{h}" if objective in LATENCY_MODELS else ""  # (trained ones have it in the budget)
        return TargetInfo(
            key=f"{SIM_PREFIX}{KINDS[objective]}/{MODEL_VERSION}/seed{self.seed}{size}",
            description=f"simulated {objective} (facenas sim model {MODEL_VERSION}, seed {self.seed}); "
            "not a measurement",
        )

    def evaluate(
        self, arch: Arch, objective: str, space: EvalSpace, budget: Budget, work: Work
    ) -> Measurement:
        self.check_objective(objective)
        check_input_size(arch.spec, space.img_size)  # as the real backends refuse it
        cost = cost_of(arch.spec, space.num_classes, space.img_size, space.in_channels)
        key = budget_key(objective, budget, space.img_size)
        delay_s = self.delay.draw(self.seed, arch.archid, objective, key)
        details: dict[str, Any] = {
            "simulated": True,
            "model": MODEL_VERSION,
            "seed": self.seed,
            "delay": self.delay.describe(),
            "delay_s": round(delay_s, 6),
            "cost": cost.to_dict(),
        }
        if objective in LATENCY_MODELS:
            model = LATENCY_MODELS[objective]
            spend(delay_s, work, "measure")
            noise = gauss(LATENCY_SIGMA, self.seed, arch.archid, objective, key)
            seconds = model.seconds(cost) * max(0.5, 1.0 + noise)
            return Measurement(seconds, "s", {**details, "latency_model": model.to_dict()})
        steps = training_steps(budget)
        how = recipe(budget).key(space.img_size)  # noise per recipe: curves stay monotone in steps
        # the trainer's curve, under the int8 model too (it is what would be quantized)
        curve = learning_curve(cost, budget, (self.seed, arch.archid, IOU, how))
        spend(delay_s, work, "train", steps, curve.loss)
        value = curve.iou(steps)
        details.update(steps=steps, ceiling=round(curve.ceiling, 6), fp32_miou=value)
        if objective == QUANTIZED_IOU:
            drop = quantization_drop(cost, (self.seed, arch.archid, objective, how))
            value *= 1.0 - drop
            details["drop"] = drop
        return Measurement(value, OBJECTIVES[objective].unit, details)
