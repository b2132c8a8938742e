"""Orchestration overhead per evaluation, and worker utilisation of async vs barrier search.

Runs the same search budget twice on a fresh local system (store, 2 trainers, latency_cpu, searcher as
separate processes): once with Archai's barrier ``evolution_pareto``, once with our
``async_evolution_pareto``. Prints, measured in this one run:

* overhead per evaluation = (gRPC round trip - the worker's own evaluation time + store calls) / worker time,
  from the searcher's ``evaluation`` events (target < 1%);
* trainer utilisation = trainer busy seconds / (2 trainers x search wall time), from the trainers' own
  ``facenas_evaluation_seconds`` metric, and the wall-time ratio of the two algorithms.

    .venv/bin/python bench/overhead.py [--iters 4] [--population 6] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc

from facenas.data.synth import generate_dataset
from facenas.launcher import LocalCluster, ServiceProcess
from facenas.store import open_store
from facenas.v1 import searcher_pb2, searcher_pb2_grpc

CONFIG = """
search:
  search_space:
    name: hgnet
    params: {{num_classes: 18, img_size: [64, 64], in_channels: 3, op_subset: [conv3x3, conv5x5, conv7x7],
              stem_strides: [2], num_blocks: 5, downsample_block_max_ops: 4, skip_block_max_ops: 2,
              upsample_block_max_ops: 4, post_upsample_max_ops: 2}}
  algorithm:
    name: {algorithm}
    params: {{num_iters: {iters}, init_num_models: {population}, mutations_per_parent: 2, num_crossovers: 2,
              max_unseen_population: {population}, num_random_mix: 2, seed: 7}}
  target: {{name: cpu}}
training: {{steps: {steps}, batch_size: 8, max_eval_batches: 2}}
constraints: {{min_parameters: 1.0e5, max_parameters: 1.5e6}}
"""


def busy_seconds(process: ServiceProcess) -> float:
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=5).read().decode()
    )
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("facenas_evaluation_seconds_sum")
    )


def run(algorithm: str, args: argparse.Namespace, data: Path, workdir: Path) -> dict[str, float]:
    config = CONFIG.format(
        algorithm=algorithm, iters=args.iters, population=args.population, steps=args.steps
    )
    with LocalCluster(workdir) as cluster:
        store = cluster.start("store", ["--url", f"sqlite:///{workdir / 'store.db'}"])
        trainer_args = ["--dataset-dir", str(data), "--val-fraction", "0.1", "--threads", "1"]
        trainers = [cluster.start("trainer", trainer_args, name=f"trainer-{i}") for i in range(2)]
        cpu = cluster.start("latency_cpu", ["--rounds", "3"])
        workers = ["--trainer", ",".join(t.address for t in trainers), "--latency-cpu", cpu.address]
        searcher = cluster.start("searcher", ["--store", store.address, *workers])
        stub = searcher_pb2_grpc.SearcherStub(grpc.insecure_channel(searcher.address))
        began = time.monotonic()
        search_id = stub.StartSearch(
            searcher_pb2.StartSearchRequest(config=config), timeout=60
        ).search.search_id
        for _ in stub.WatchSearch(searcher_pb2.WatchSearchRequest(search_id=search_id)):
            pass
        wall = time.monotonic() - began
        busy = sum(busy_seconds(t) for t in trainers)
        reader = open_store(f"sqlite:///{workdir / 'store.db'}")
        events = [e.payload for e in reader.list_events(search_id, 0, 100_000) if e.kind == "evaluation"]
        final = reader.list_iterations(search_id)[-1]
        reader.close()
    overheads = [float(e["overhead_s"]) / float(e["seconds"]) for e in events if float(e["seconds"]) > 0]
    trainings = [float(e["seconds"]) for e in events if "IOU" in str(e["objective"])]
    return {
        "wall_s": wall,
        "evaluations": len(events),
        "utilisation": busy / (2 * wall),
        "overhead_total": sum(float(e["overhead_s"]) for e in events)
        / sum(float(e["seconds"]) for e in events),
        "overhead_median": statistics.median(overheads),
        "overhead_ms_median": 1e3 * statistics.median(float(e["overhead_s"]) for e in events),
        "hypervolume": final.hypervolume,
        "store_ms_median": 1e3 * statistics.median(float(e["store_s"]) for e in events),
        "training_s_mean": statistics.fmean(trainings),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--population", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="facenas-bench-") as tmp:
        root = Path(tmp)
        data = root / "data"
        generate_dataset(data, 160, size=64, seed=1)
        results = {
            name: run(name, args, data, root / name)
            for name in ("evolution_pareto", "async_evolution_pareto")
        }
    print(
        f"budget: {args.iters} iterations x {args.population} candidates, "
        f"{args.steps} training steps, 2 trainers"
    )
    for name, r in results.items():
        print(
            f"{name:>24}: wall {r['wall_s']:6.1f} s, {r['evaluations']:3.0f} evaluations, "
            f"trainer utilisation {r['utilisation']:6.1%}, overhead {r['overhead_total']:.3%} of worker time "
            f"(median per evaluation {r['overhead_median']:.3%}, {r['overhead_ms_median']:.1f} ms, "
            f"store {r['store_ms_median']:.1f} ms), mean training {r['training_s_mean']:.1f} s, "
            f"final hypervolume {r['hypervolume']:.4g}"
        )
    barrier, asynchronous = results["evolution_pareto"], results["async_evolution_pareto"]
    print(f"utilisation async / barrier: {asynchronous['utilisation'] / barrier['utilisation']:.2f}x")
    print(f"wall time barrier / async:   {barrier['wall_s'] / asynchronous['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
