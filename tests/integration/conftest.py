"""Real service processes on free loopback ports."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from facenas.data.synth import generate_dataset
from facenas.launcher import LocalCluster, ServiceProcess
from facenas.v1 import searcher_pb2_grpc

pytestmark = pytest.mark.integration

#: A search small enough for CI: tiny models, few steps, 64x64 images.
TINY_SEARCH = """
search:
  search_space:
    name: hgnet
    params:
      num_classes: 18
      img_size: [64, 64]
      in_channels: 3
      op_subset: ['conv3x3', 'conv5x5', 'conv7x7']
      stem_strides: [2]
      num_blocks: 5
      downsample_block_max_ops: 4
      skip_block_max_ops: 2
      upsample_block_max_ops: 4
      post_upsample_max_ops: 2
  algorithm:
    name: {algorithm}
    params:
      num_iters: {iters}
      init_num_models: 4
      mutations_per_parent: 2
      num_crossovers: 1
      max_unseen_population: 3
      num_random_mix: 1
      seed: {seed}
  target:
    name: cpu
training:
  steps: {steps}
  batch_size: 4
  max_eval_batches: 1
constraints:
  min_parameters: 1.0e5
  max_parameters: 8.0e5
evaluation:
  max_attempts: 4
  timeout_s: 300
"""


def tiny_search(
    algorithm: str = "async_evolution_pareto", iters: int = 3, steps: int = 3, seed: int = 42
) -> str:
    return TINY_SEARCH.format(algorithm=algorithm, iters=iters, steps=steps, seed=seed)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    generate_dataset(root, 40, size=64, seed=3)
    return root


class System:
    """store + trainers + latency_cpu + searcher, each a real process."""

    def __init__(self, cluster: LocalCluster, dataset: Path, trainers: int = 2) -> None:
        self.cluster = cluster
        self.store = cluster.start("store", ["--url", f"sqlite:///{cluster.workdir / 'store.db'}"])
        args = ["--dataset-dir", str(dataset), "--val-fraction", "0.2", "--threads", "1"]
        self.trainers = [cluster.start("trainer", args, name=f"trainer-{i + 1}") for i in range(trainers)]
        self.latency = cluster.start("latency_cpu", ["--rounds", "2"])
        self.searcher = self.start_searcher()

    def start_searcher(self) -> ServiceProcess:
        workers = [
            "--trainer",
            ",".join(t.address for t in self.trainers),
            "--latency-cpu",
            self.latency.address,
        ]
        return self.cluster.start("searcher", ["--store", self.store.address, *workers])

    def stub(self) -> searcher_pb2_grpc.SearcherStub:
        return searcher_pb2_grpc.SearcherStub(grpc.insecure_channel(self.searcher.address))


def metric(process: ServiceProcess, name: str) -> float:
    """Sum of a metric's samples on a process's /metrics endpoint."""
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=5).read().decode()
    )
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def system(tmp_path: Path, dataset: Path) -> Iterator[System]:
    with LocalCluster(tmp_path / "cluster") as cluster:
        yield System(cluster, dataset)
