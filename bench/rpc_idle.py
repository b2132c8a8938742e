"""What a round trip to an idle service costs: one store write over gRPC, back to back and with gaps.

Starts a store process on loopback (a fresh SQLite file) and writes evaluations to it through the
searcher's client (``GrpcStore.put_evaluation``), ``--calls`` times with no pause between them, then with
a pause of each ``--gaps`` value before each call. Prints the p50 and p90 of each and the ratio of each
p50 to the back-to-back one, measured in this one run: on a host whose cores sleep while a search waits
on its workers, every hop between processes pays the wake-up, which ``bench/scale.py``'s per-evaluation
overhead (two hops) shows.

    .venv/bin/python bench/rpc_idle.py [--calls 200] [--gaps 0.001,0.01,0.05]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from facenas.domain import EvalKey, Evaluation
from facenas.launcher import LocalCluster
from facenas.store.grpc_client import GrpcStore


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _writes(store: GrpcStore, calls: int, gap: float, tag: str) -> list[float]:
    seconds = []
    for i in range(calls):
        key = EvalKey(f"{tag}{i:08d}".ljust(40, "0"), "val_iou", "b", "sim:bench", "m")
        evaluation = Evaluation(key, 0.5, "miou", {"simulated": True}, "bench", 1.0)
        if gap:
            time.sleep(gap)
        began = time.perf_counter()
        store.put_evaluation(evaluation)
        seconds.append(time.perf_counter() - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--gaps", default="0.001,0.01,0.05", help="pauses before each call, in seconds")
    args = parser.parse_args()
    gaps = [float(g) for g in args.gaps.split(",") if g]
    with tempfile.TemporaryDirectory(prefix="facenas-rpc-idle-") as tmp, LocalCluster(Path(tmp)) as cluster:
        served = cluster.start("store", ["--url", f"sqlite:///{Path(tmp) / 'store.db'}"])
        store = GrpcStore(served.address)
        _writes(store, 20, 0.0, "w")  # warm-up: connection, statement caches
        base = _writes(store, args.calls, 0.0, "a")
        base_p50 = _percentile(base, 50)
        print(f"store write over gRPC, {args.calls} calls each")
        print(f"  back to back: p50 {1e3 * base_p50:.2f} ms, p90 {1e3 * _percentile(base, 90):.2f} ms")
        for n, gap in enumerate(gaps):
            timed = _writes(store, args.calls, gap, f"g{n}")
            p50 = _percentile(timed, 50)
            p90 = _percentile(timed, 90)
            print(
                f"  {1e3 * gap:g} ms apart: p50 {1e3 * p50:.2f} ms, p90 {1e3 * p90:.2f} ms "
                f"({p50 / base_p50:.2f}x back to back)"
            )


if __name__ == "__main__":
    main()
