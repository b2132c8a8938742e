"""Latency stability: 10 sampled archs measured in two independent rounds.

Prints the median coefficient of variation (target <= 3%) and Kendall's tau between the two rounds'
medians (target >= 0.95). Each round builds a fresh ONNX Runtime session per arch, in a different order.

    .venv/bin/python bench/latency_stability.py [--n 10] [--img-size 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from scipy.stats import kendalltau

from facenas.latency import LatencyProtocol, host_info, measure_onnx_latency
from facenas.pipeline import arch_to_onnx
from facenas.space import HgnetSearchSpace, ParamRange, SearchSpaceParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-params", type=float, default=1e5)
    parser.add_argument("--max-params", type=float, default=5e6)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    params = SearchSpaceParams(img_size=(args.img_size, args.img_size))
    space = HgnetSearchSpace(params, seed=args.seed)
    archs = []
    while len(archs) < args.n:
        arch = space.sample_valid(ParamRange(args.min_params, args.max_params))
        if arch.archid not in {a.archid for a in archs}:
            archs.append(arch)
    models = {a.archid: arch_to_onnx(a, params).model_bytes for a in archs}
    protocol = LatencyProtocol(intra_op_threads=args.threads)
    host = host_info()
    print(f"host: {host.cpu_model} ({host.machine}, {host.usable_cpus} usable cpus), threads={args.threads}")
    print(f"{args.n} archs at {args.img_size}x{args.img_size}, protocol {protocol}")

    began = time.perf_counter()
    rounds: list[dict[str, float]] = []
    cvs: list[float] = []
    order = list(models)
    for round_index in range(2):
        random.Random(round_index).shuffle(order)
        medians: dict[str, float] = {}
        for archid in order:
            result = measure_onnx_latency(models[archid], protocol=protocol)
            medians[archid] = result.median_s
            cvs.append(result.cv)
            print(
                f"round {round_index + 1} {archid[:12]}: median {result.median_s * 1e3:8.2f} ms  "
                f"cv {result.cv:6.2%}  attempts {result.attempts}"
            )
        rounds.append(medians)

    ids = list(models)
    tau = kendalltau([rounds[0][i] for i in ids], [rounds[1][i] for i in ids]).statistic
    shifts = [abs(rounds[1][i] / rounds[0][i] - 1) for i in ids]
    print()
    print(f"median CV over {len(cvs)} measurements: {statistics.median(cvs):.2%} (target <= 3%)")
    print(f"Kendall tau between rounds:           {tau:.3f} (target >= 0.95)")
    print(f"median |round2/round1 - 1|:           {statistics.median(shifts):.2%}")
    print(f"wall time: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
