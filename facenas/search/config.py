"""Search configs: Archai's ``cpu_search.yaml`` / ``snp_search.yaml`` unchanged, plus facenas keys.

facenas keys (all optional; one in Archai's ``search.target`` block, the rest at the top level)::

    search:
      target:
        name: snp
        quantized_iou: true  # snp only: also maximise "SNP Quantized Val. IOU" (int8 model's val mIOU)

    training:            # the partial-training objective's budget and recipe
      batch_size: 16
      learning_rate: 2.0e-4
      epochs: 1          # or steps: N (steps win)
      seed: 0
      max_eval_batches: 0
      img_size: [256, 256]   # default: search_space.params.img_size
    constraints:
      min_parameters: 1.0e6
      max_parameters: 5.0e7  # default: search.algorithm.params.max_parameters
      max_latency_s: 0.3     # CPU ONNX latency cap (Archai: 0.3 cpu, 0.185 snp)
    evaluation:
      max_attempts: 4        # per evaluation, across replicas (a lost worker, an error)
      timeout_s: 3600        # per attempt
      max_unstable: 3        # re-measurements of a figure that would not settle, before giving up
      unstable_delay_s: 30   # wait before re-measuring it (doubles each time)
      outage_patience_s: 1800  # how long the search waits for an unreachable service before failing

Unknown keys are refused everywhere (listing the known ones), so a typo such as ``search.algoritm`` or
``search.target.nmae`` is an error instead of a silent default; ``aml`` (Archai's Azure block) and
Archai's remote-benchmark keys of ``search.target`` (:data:`ARCHAI_TARGET_KEYS`) are accepted and unused.

``search.algorithm.name`` is ``evolution_pareto`` (Archai's, barrier per iteration),
``async_evolution_pareto`` (ours: no barrier, every worker kept busy), or Archai's ``local_search``,
``regularized_evolution`` (``pareto_sample_size``, ``history_size``) and ``random_search``, which run
on the same barrier loop with their own proposal rules.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from facenas.domain import OBJECTIVES, Budget, EvalSpace
from facenas.errors import ConfigError, InvalidInput
from facenas.limits import MAX_CONFIG_BYTES, brief, load_yaml
from facenas.search.snapshot import ObjectiveInfo
from facenas.space.params import SearchSpaceParams, search_space_params_from_config

ALGORITHMS = (
    "evolution_pareto",
    "async_evolution_pareto",
    "local_search",
    "regularized_evolution",
    "random_search",
)
TARGETS = ("cpu", "snp")
#: Keys of Archai's snp ``search.target`` block for its remote benchmark (unused here).
ARCHAI_TARGET_KEYS = frozenset({"metric_key", "max_retries", "retry_interval", "verbose"})
IOU = "Partial Training Val. IOU"
CPU_LATENCY = "CPU ONNX Latency (s)"
SNP_LATENCY = "SNP Quantized Latency (s)"
QUANTIZED_IOU = "SNP Quantized Val. IOU"
DEFAULT_MAX_LATENCY = {"cpu": 0.3, "snp": 0.185}


@dataclass(frozen=True)
class AlgorithmParams:
    """Archai's EvolutionParetoSearch parameters (defaults: cpu_search.yaml)."""

    num_iters: int = 20
    init_num_models: int = 20
    mutations_per_parent: int = 5
    num_crossovers: int = 10
    max_unseen_population: int = 50
    num_random_mix: int = 5
    seed: int = 42
    # regularized_evolution: tournament sample size and the age window of the population
    pareto_sample_size: int = 40
    history_size: int = 100


@dataclass(frozen=True)
class SearchConfig:
    """A validated search config."""

    text: str
    algorithm: str
    params: AlgorithmParams
    target: str
    space: SearchSpaceParams
    budget: Budget
    img_size: tuple[int, int]
    min_parameters: float
    max_parameters: float
    max_latency_s: float
    max_attempts: int
    timeout_s: float
    quantized_iou: bool = False  # search.target.quantized_iou (snp target only)
    max_unstable: int = 3
    unstable_delay_s: float = 30.0
    outage_patience_s: float = 1800.0

    @property
    def candidates(self) -> int:
        """Candidates the whole search proposes (Archai's budget; fewer if the space runs out)."""
        p = self.params
        return p.init_num_models + (p.num_iters - 1) * p.max_unseen_population

    def summary(self) -> dict[str, Any]:
        """What the search will do, JSON-friendly: algorithm, populations, budget, constraints,
        objectives and the candidates and evaluations to expect (``facenas search validate``)."""
        populations = asdict(self.params)
        if self.algorithm != "regularized_evolution":
            for key in ("pareto_sample_size", "history_size"):
                populations.pop(key)
        budget = {**asdict(self.budget), "img_size": list(self.img_size)}
        return {
            "algorithm": self.algorithm,
            "target": self.target,
            "populations": populations,
            "budget": budget,
            "constraints": {
                "min_parameters": self.min_parameters,
                "max_parameters": self.max_parameters,
                "max_latency_s": self.max_latency_s,
            },
            "objectives": [
                {
                    "name": o.name,
                    "direction": o.direction.value,
                    "constraint": o.constraint and list(o.constraint),
                }
                for o in self.objectives
            ],
            "candidates": self.candidates,
            # every objective of every candidate; fewer when a constraint rejects one early, it fails,
            # or the store already holds the result
            "evaluations": self.candidates * len(self.objectives),
        }

    @property
    def eval_space(self) -> EvalSpace:
        return EvalSpace(self.space.num_classes, self.space.in_channels, self.img_size)

    @property
    def objectives(self) -> tuple[ObjectiveInfo, ...]:
        """Cheap constraint objectives first, training last (Archai's order of evaluation); the
        quantized IOU (training, quantization and two evaluations) after everything else."""
        names = [CPU_LATENCY, IOU] if self.target == "cpu" else [SNP_LATENCY, CPU_LATENCY, IOU]
        if self.quantized_iou:
            names.append(QUANTIZED_IOU)
        out = []
        for name in names:
            spec = OBJECTIVES[name]
            constraint = (0.0, self.max_latency_s) if name == CPU_LATENCY else None
            out.append(ObjectiveInfo(name, spec.direction, spec.unit, constraint))
        return tuple(out)


def _section(data: Mapping[str, Any], name: str, problems: list[str], prefix: str = "") -> Mapping[str, Any]:
    """``data[name]`` as a mapping (empty when absent); a problem naming ``prefix + name`` otherwise."""
    value = data.get(name, {})
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"{prefix}{name}: must be a mapping")
        return {}
    return value


class _Reader:
    """Reads typed values from a mapping, collecting every problem."""

    def __init__(self, data: Mapping[str, Any], prefix: str, problems: list[str]) -> None:
        self.data, self.prefix, self.problems = data, prefix, problems

    def number(self, key: str, default: float, lo: float, hi: float, integer: bool = False) -> Any:
        value = self.data.get(key, default)
        if isinstance(value, str) and len(value) < 64:  # YAML 1.1 reads "2e-4" as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and isinstance(value, float):
            ok = math.isfinite(value) and (not integer or value == int(value))
        if not ok or not lo <= value <= hi:  # compared as given: a huge int never becomes a float
            kind = "an integer" if integer else "a number"
            self.problems.append(f"{self.prefix}{key}: {brief(value)} must be {kind} in [{lo:g}, {hi:g}]")
            return default
        return int(value) if integer else float(value)

    def unknown(self, known: set[str] | frozenset[str]) -> None:
        _unknown(self.data, self.prefix, known, self.problems)


def _unknown(
    data: Mapping[str, Any], prefix: str, known: set[str] | frozenset[str], problems: list[str]
) -> None:
    """A problem for every key of ``data`` not in ``known``, listing the known ones."""
    for key in data:
        if key not in known:
            problems.append(f"{prefix}{str(key)[:80]}: unknown key (known: {', '.join(sorted(known))})")


def parse_search_config(text: str) -> SearchConfig:
    """Parse and validate YAML/JSON text; every problem is reported at once in a ConfigError.

    The text is refused before it is parsed when it is over :data:`~facenas.limits.MAX_CONFIG_BYTES`,
    and before its aliases are expanded when they expand past the YAML limits (see ``facenas.limits``).
    """
    if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
        raise ConfigError([f"config: larger than {MAX_CONFIG_BYTES} bytes"])
    try:
        data = load_yaml(text, "config")
    except InvalidInput as err:
        raise ConfigError([str(err)]) from None
    if not isinstance(data, Mapping):
        raise ConfigError(["config: top level must be a mapping with a 'search' section"])
    problems: list[str] = []
    search = _section(data, "search", problems)
    if "search" not in data:
        problems.append("search: missing (Archai's search config layout)")
    _unknown(search, "search.", {"search_space", "algorithm", "target"}, problems)
    if isinstance(search.get("search_space"), Mapping):  # else _space says what is wrong with it
        _unknown(search["search_space"], "search.search_space.", {"name", "params"}, problems)
    space = _space(data, problems)
    algorithm, params, max_params = _algorithm(search, problems)
    target, quantized_iou = _target(search, problems)
    training = _Reader(_section(data, "training", problems), "training.", problems)
    budget = _budget(training, problems)
    img_size = _img_size(training.data, space, problems)
    constraints = _Reader(_section(data, "constraints", problems), "constraints.", problems)
    min_params = constraints.number("min_parameters", 1e6, 0, 1e10)
    max_params = constraints.number("max_parameters", max_params, 1, 1e10)
    max_latency = constraints.number("max_latency_s", DEFAULT_MAX_LATENCY.get(target, 0.3), 1e-6, 3600)
    constraints.unknown({"min_parameters", "max_parameters", "max_latency_s"})
    if min_params > max_params:
        problems.append(f"constraints.min_parameters: {min_params:g} exceeds max_parameters {max_params:g}")
    evaluation = _Reader(_section(data, "evaluation", problems), "evaluation.", problems)
    max_attempts = evaluation.number("max_attempts", 4, 1, 100, integer=True)
    timeout = evaluation.number("timeout_s", 3600, 1, 7 * 86400)
    max_unstable = evaluation.number("max_unstable", 3, 0, 100, integer=True)
    unstable_delay = evaluation.number("unstable_delay_s", 30.0, 0, 86400)
    outage_patience = evaluation.number("outage_patience_s", 1800.0, 0, 7 * 86400)
    evaluation.unknown({"max_attempts", "timeout_s", "max_unstable", "unstable_delay_s", "outage_patience_s"})
    _unknown(data, "", {"search", "training", "constraints", "evaluation", "aml"}, problems)
    if problems or space is None:
        raise ConfigError(problems or ["search.search_space: invalid"])
    return SearchConfig(
        text,
        algorithm,
        params,
        target,
        space,
        budget,
        img_size,
        min_params,
        max_params,
        max_latency,
        max_attempts,
        timeout,
        quantized_iou,
        max_unstable,
        unstable_delay,
        outage_patience,
    )


def _space(data: Mapping[str, Any], problems: list[str]) -> SearchSpaceParams | None:
    try:
        return search_space_params_from_config(data)
    except ConfigError as err:
        prefix = "search.search_space.params."
        problems.extend(p if p.startswith("search.") else prefix + p for p in err.problems)
        return None


def _algorithm(search: Mapping[str, Any], problems: list[str]) -> tuple[str, AlgorithmParams, float]:
    block = _section(search, "algorithm", problems, "search.")
    _unknown(block, "search.algorithm.", {"name", "params"}, problems)
    name = block.get("name", "evolution_pareto")
    if name not in ALGORITHMS:
        problems.append(f"search.algorithm.name: {brief(name)} is not one of {', '.join(ALGORITHMS)}")
    r = _Reader(
        _section(block, "params", problems, "search.algorithm."), "search.algorithm.params.", problems
    )
    d = AlgorithmParams()
    params = AlgorithmParams(
        num_iters=r.number("num_iters", d.num_iters, 1, 10_000, integer=True),
        init_num_models=r.number("init_num_models", d.init_num_models, 1, 100_000, integer=True),
        mutations_per_parent=r.number("mutations_per_parent", d.mutations_per_parent, 0, 1000, integer=True),
        num_crossovers=r.number("num_crossovers", d.num_crossovers, 0, 100_000, integer=True),
        max_unseen_population=r.number(
            "max_unseen_population", d.max_unseen_population, 1, 100_000, integer=True
        ),
        num_random_mix=r.number("num_random_mix", d.num_random_mix, 0, 100_000, integer=True),
        seed=r.number("seed", d.seed, 0, 2**63 - 1, integer=True),
        pareto_sample_size=r.number("pareto_sample_size", d.pareto_sample_size, 1, 100_000, integer=True),
        history_size=r.number("history_size", d.history_size, 1, 1_000_000, integer=True),
    )
    max_params = r.number("max_parameters", 5e7, 1, 1e10)
    r.unknown(set(AlgorithmParams.__dataclass_fields__) | {"max_parameters"})
    return str(name), params, max_params


def _target(search: Mapping[str, Any], problems: list[str]) -> tuple[str, bool]:
    """The target's name and whether ``quantized_iou`` is on (Archai's remote-benchmark keys are accepted)."""
    block = _section(search, "target", problems, "search.")
    _unknown(block, "search.target.", {"name", "quantized_iou", *ARCHAI_TARGET_KEYS}, problems)
    name = block.get("name", "cpu")
    quantized_iou = block.get("quantized_iou", False)
    if not isinstance(quantized_iou, bool):
        problems.append(f"search.target.quantized_iou: {brief(quantized_iou)} must be true or false")
        quantized_iou = False
    if name not in TARGETS:
        problems.append(f"search.target.name: {brief(name)} is not one of {', '.join(TARGETS)}")
        return "cpu", False
    if quantized_iou and name != "snp":
        problems.append(
            f"search.target.quantized_iou: only the snp target has a quantized model ({QUANTIZED_IOU!r} "
            f"is measured by latency_snp); set search.target.name: snp or remove quantized_iou"
        )
        quantized_iou = False
    return str(name), quantized_iou


def _budget(r: _Reader, problems: list[str]) -> Budget:
    steps = r.number("steps", 0, 0, 10_000_000, integer=True)
    epochs = r.number("epochs", 1.0, 1e-6, 10_000)
    r.unknown({"steps", "epochs", "batch_size", "learning_rate", "seed", "max_eval_batches", "img_size"})
    return Budget(
        steps=steps,
        epochs=epochs,
        batch_size=r.number("batch_size", 16, 1, 4096, integer=True),
        learning_rate=r.number("learning_rate", 2e-4, 1e-9, 1.0),
        seed=r.number("seed", 0, 0, 2**63 - 1, integer=True),
        max_eval_batches=r.number("max_eval_batches", 0, 0, 10_000_000, integer=True),
    )


def _img_size(
    training: Mapping[str, Any], space: SearchSpaceParams | None, problems: list[str]
) -> tuple[int, int]:
    default = space.img_size if space else (256, 256)
    value = training.get("img_size", list(default))
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    ok = isinstance(value, list | tuple) and len(value) == 2
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and 16 <= v <= 2048 for v in value)
    if not ok:
        problems.append(f"training.img_size: {brief(value)} must be [width, height] within [16, 2048]")
        return default
    return (int(value[0]), int(value[1]))
