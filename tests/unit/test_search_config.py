"""Search configs: Archai's files unchanged, facenas keys, every problem reported at once."""

from __future__ import annotations

import pytest

from facenas.domain import Budget, budget_key
from facenas.errors import ConfigError
from facenas.search.config import CPU_LATENCY, IOU, SNP_LATENCY, parse_search_config
from facenas.space.params import default_config_text


def test_archai_configs_parse_unchanged() -> None:
    cpu = parse_search_config(default_config_text("cpu"))
    assert cpu.algorithm == "evolution_pareto" and cpu.target == "cpu"
    assert (cpu.params.num_iters, cpu.params.num_crossovers, cpu.params.max_unseen_population) == (20, 10, 50)
    assert [o.name for o in cpu.objectives] == [CPU_LATENCY, IOU]
    assert cpu.objectives[0].constraint == (0.0, 0.3)
    snp = parse_search_config(default_config_text("snp"))
    assert snp.target == "snp" and snp.max_parameters == 5e7 and snp.params.num_random_mix == 6
    assert [o.name for o in snp.objectives] == [SNP_LATENCY, CPU_LATENCY, IOU]
    assert snp.max_latency_s == 0.185
    assert snp.budget == Budget() and snp.img_size == (256, 256)


def test_demo_config() -> None:
    demo = parse_search_config(default_config_text("demo"))
    assert demo.algorithm == "async_evolution_pareto"
    assert demo.budget.steps == 30 and demo.img_size == (64, 64)
    assert (demo.min_parameters, demo.max_parameters) == (1e5, 2e6)


def test_every_problem_is_listed() -> None:
    text = default_config_text("cpu") + (
        "training: {steps: -1, batch_size: 0, img_size: [10, 10], colour: red}\n"
        "constraints: {min_parameters: 9e9, max_parameters: 1e3}\n"
        "evaluation: {max_attempts: 0}\n"
        "surprise: 1\n"
    )
    text = text.replace("name: evolution_pareto", "name: bayesian").replace("num_iters: 20", "num_iters: 0")
    with pytest.raises(ConfigError) as info:
        parse_search_config(text)
    fields = " ".join(info.value.problems)
    for field in (
        "search.algorithm.name",
        "search.algorithm.params.num_iters",
        "training.steps",
        "training.batch_size",
        "training.img_size",
        "training.colour",
        "constraints.min_parameters",
        "evaluation.max_attempts",
        "surprise",
    ):
        assert field in fields, field


@pytest.mark.parametrize("text", ["", "[1, 2]", "search: [", "x" * (2 << 20)])
def test_garbage_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_search_config(text)


def test_budget_keys_separate_training_from_measurement() -> None:
    budget = Budget(steps=30, batch_size=16, learning_rate=1e-3)
    assert budget_key(IOU, budget, (64, 64)) == "steps=30,bs=16,lr=0.001,seed=0,img=64x64"
    assert budget_key(CPU_LATENCY, budget, (64, 64)) == "img=64x64"
    assert budget_key(IOU, Budget(epochs=1.5), (256, 256)).startswith("epochs=1.5,")
