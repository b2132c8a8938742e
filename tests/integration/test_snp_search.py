"""An snp-target search with ``quantized_iou`` through real processes: four objectives per candidate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from facenas.domain import Evaluation
from facenas.launcher import LocalCluster, ServiceProcess
from facenas.search.config import CPU_LATENCY, IOU, QUANTIZED_IOU, SNP_LATENCY
from facenas.search.protoconv import export_search
from facenas.store import open_store
from facenas.v1 import common_pb2, common_pb2_grpc, searcher_pb2
from tests.integration.conftest import System, tiny_search
from tests.timing import scaled

pytestmark = pytest.mark.integration

OBJECTIVES = {SNP_LATENCY, CPU_LATENCY, IOU, QUANTIZED_IOU}
VAL_FRACTION = "0.2"  # as System's trainers: both train on the same split


class SnpSystem(System):
    """store + one trainer + latency_cpu + latency_snp (emulation) + searcher."""

    def __init__(self, cluster: LocalCluster, dataset: Path) -> None:
        self.dataset = dataset
        super().__init__(cluster, dataset, trainers=1)

    def start_searcher(self) -> ServiceProcess:
        args = ["--dataset-dir", str(self.dataset), "--val-fraction", VAL_FRACTION, "--rounds", "2"]
        args += ["--calibration-images", "4"]
        self.snp = self.cluster.start("latency_snp", args)
        workers = ["--trainer", self.trainers[0].address, "--latency-cpu", self.latency.address]
        return self.cluster.start(
            "searcher", ["--store", self.store.address, *workers, "--latency-snp", self.snp.address]
        )


@pytest.fixture
def snp_system(tmp_path: Path, dataset: Path) -> Iterator[SnpSystem]:
    with LocalCluster(tmp_path / "cluster") as cluster:
        yield SnpSystem(cluster, dataset)


def snp_search() -> str:
    config = tiny_search(iters=2, steps=3)
    assert "    name: cpu\n" in config
    return config.replace("    name: cpu\n", "    name: snp\n    quantized_iou: true\n", 1)


def test_snp_search_with_quantized_iou(snp_system: SnpSystem) -> None:
    stub = snp_system.stub()
    request = searcher_pb2.StartSearchRequest(config=snp_search(), name="snp-iou")
    search_id = stub.StartSearch(request, timeout=60).search.search_id
    kinds = [
        e.kind
        for e in stub.WatchSearch(searcher_pb2.WatchSearchRequest(search_id=search_id), timeout=scaled(300))
    ]
    assert kinds[-1] == "completed", kinds
    final = stub.GetSearch(searcher_pb2.SearchRef(search_id=search_id), timeout=30)
    assert final.iterations_done == 2 and final.candidates == 4 + 3

    export = export_search(lambda r: stub.ExportSearch(r, timeout=60), search_id)
    assert [o.name for o in export.objectives] == [SNP_LATENCY, CPU_LATENCY, IOU, QUANTIZED_IOU]
    for candidate in export.candidates:
        assert candidate.feasible and candidate.failed == "", candidate.archid
        assert set(candidate.values) == OBJECTIVES, candidate.archid
        assert 0.0 <= candidate.values[QUANTIZED_IOU] <= 1.0
    pareto = stub.GetPareto(searcher_pb2.SearchRef(search_id=search_id), timeout=30)
    assert pareto.points and pareto.hypervolume > 0

    evaluator = common_pb2_grpc.EvaluatorStub(grpc.insecure_channel(snp_system.snp.address))
    space = common_pb2.SearchSpace(num_classes=18, in_channels=3, img_width=64, img_height=64)
    for objective in (SNP_LATENCY, QUANTIZED_IOU):
        described = evaluator.Describe(
            common_pb2.DescribeRequest(objective=objective, space=space), timeout=30
        )
        assert described.target.emulated and set(described.objectives) == {SNP_LATENCY, QUANTIZED_IOU}

    store = open_store(f"sqlite:///{snp_system.cluster.workdir / 'store.db'}")
    try:
        stored = store.list_evaluations([c.archid for c in export.candidates])
    finally:
        store.close()
    by_arch: dict[str, dict[str, Evaluation]] = {}
    for evaluation in stored:
        by_arch.setdefault(evaluation.key.archid, {})[evaluation.key.objective] = evaluation
    assert len(by_arch) == len(export.candidates)
    for values in by_arch.values():
        for objective in (SNP_LATENCY, QUANTIZED_IOU):
            details = values[objective].details
            assert details["emulated"] is True and details["backend"] == "onnxruntime-qdq-emulation"
        quantized = values[QUANTIZED_IOU]
        trained = values[IOU]
        assert quantized.key.budget == trained.key.budget
        assert quantized.key.target.startswith("snp-emulation-iou/")
        details = quantized.details
        # latency_snp trained exactly what the trainer trained (same recipe, seed, split, one thread)
        assert details["partial_training"]["val_miou"] == pytest.approx(trained.value, abs=1e-4)
        assert details["fp32_miou"] == pytest.approx(trained.value, abs=1e-3)
