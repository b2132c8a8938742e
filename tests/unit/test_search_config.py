"""Search configs: Archai's files unchanged, facenas keys, every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from facenas.domain import Budget, budget_key
from facenas.errors import ConfigError
from facenas.rpc.server import ServerConfig, start
from facenas.search.config import CPU_LATENCY, IOU, SNP_LATENCY, parse_search_config
from facenas.search.manager import SearchManager
from facenas.space.params import default_config_text
from facenas.store import SqlStore
from facenas.v1 import searcher_pb2, searcher_pb2_grpc
from services.searcher.servicer import SearcherServicer


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


@pytest.mark.parametrize(
    ("typo", "field"),
    [
        (("  algorithm:", "  algoritm:"), "search.algoritm"),
        (("  target: \n    name: cpu", "  target: \n    nmae: snp"), "search.target.nmae"),
        (("  search_space:\n    name: hgnet", "  search_space:\n    nme: hgnet"), "search.search_space.nme"),
        (("search:\n", "search:\n  seach_space: {}\n"), "search.seach_space"),
        (("    params:\n      num_iters", "    parms:\n      num_iters"), "search.algorithm.parms"),
    ],
)
def test_a_typo_in_any_search_block_is_refused_listing_the_known_keys(
    typo: tuple[str, str], field: str
) -> None:
    text = default_config_text("cpu")
    assert typo[0] in text
    with pytest.raises(ConfigError) as info:
        parse_search_config(text.replace(typo[0], typo[1], 1))
    assert any(p.startswith(f"{field}: unknown key (known: ") for p in info.value.problems), (
        info.value.problems
    )


def test_archai_target_keys_and_the_aml_block_are_accepted() -> None:
    snp = parse_search_config(default_config_text("snp"))  # metric_key, max_retries, ... and aml
    assert snp.target == "snp"


def test_the_summary_says_what_the_search_will_do() -> None:
    demo = parse_search_config(default_config_text("demo")).summary()
    assert demo["algorithm"] == "async_evolution_pareto" and demo["target"] == "cpu"
    assert demo["populations"]["init_num_models"] == 8 and demo["populations"]["num_iters"] == 6
    assert "history_size" not in demo["populations"]
    assert demo["budget"]["steps"] == 30 and demo["budget"]["img_size"] == [64, 64]
    assert demo["candidates"] == 8 + 5 * 6 and demo["evaluations"] == 2 * (8 + 5 * 6)
    assert [o["name"] for o in demo["objectives"]] == [CPU_LATENCY, IOU]
    regularized = default_config_text("demo").replace("async_evolution_pareto", "regularized_evolution")
    assert parse_search_config(regularized).summary()["populations"]["history_size"] == 100


def test_start_search_answers_invalid_argument_for_a_typo(tmp_path: Path) -> None:
    store = SqlStore.from_url(f"sqlite:///{tmp_path / 'store.db'}")
    manager = SearchManager(store, {})
    registration = (searcher_pb2_grpc.add_SearcherServicer_to_server, SearcherServicer(manager), "searcher")
    server = start([registration], ServerConfig(port=0, metrics_port=None))
    try:
        stub = searcher_pb2_grpc.SearcherStub(grpc.insecure_channel(server.address))
        config = default_config_text("cpu").replace("  algorithm:", "  algoritm:")
        with pytest.raises(grpc.RpcError) as info:
            stub.StartSearch(searcher_pb2.StartSearchRequest(config=config), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "search.algoritm: unknown key" in (info.value.details() or "")
        assert store.list_searches() == []
    finally:
        server.stop(0)
        store.close()
