"""Latency stability: 10 sampled archs measured in two independent rounds, then under load.

Prints the median coefficient of variation (target <= 3%) and Kendall's tau between the two rounds'
medians (target >= 0.95), and how many results were refused as unstable. Each round builds a fresh ONNX
Runtime session per arch, in a different order. A third, contended round runs with one spinning
neighbour pinned to each usable CPU (``--no-contended`` skips it) and prints its medians against the
first round's and how many were refused (the contention detector should refuse them all).

    .venv/bin/python bench/latency_stability.py [--n 10] [--img-size 256] [--threads 1] [--no-contended]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from neighbours import neighbours
from scipy.stats import kendalltau

from facenas.latency import LatencyProtocol, LatencyResult, host_info, measure_onnx_latency
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
    parser.add_argument("--contended", action=argparse.BooleanOptionalAction, default=True)
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
    refused = [0, 0]
    order = list(models)
    for round_index in range(2):
        random.Random(round_index).shuffle(order)
        medians: dict[str, float] = {}
        for archid in order:
            result = measure_onnx_latency(models[archid], protocol=protocol)
            medians[archid] = result.median_s
            cvs.append(result.cv)
            refused[round_index] += not result.stable
            print(f"round {round_index + 1} {archid[:12]}: " + _describe(result))
        rounds.append(medians)

    ids = list(models)
    tau = kendalltau([rounds[0][i] for i in ids], [rounds[1][i] for i in ids]).statistic
    shifts = [abs(rounds[1][i] / rounds[0][i] - 1) for i in ids]
    print()
    print(f"median CV over {len(cvs)} measurements: {statistics.median(cvs):.2%} (target <= 3%)")
    print(f"Kendall tau between rounds:           {tau:.3f} (target >= 0.95)")
    print(f"median |round2/round1 - 1|:           {statistics.median(shifts):.2%}")
    print(f"refused as unstable:                  {refused[0]} + {refused[1]} of {2 * args.n}")
    if args.contended:
        _contended_round(models, rounds[0], protocol)
    print(f"wall time: {time.perf_counter() - began:.0f} s")


def _describe(result: LatencyResult) -> str:
    """One line: median, cv, attempts, CPU share, and the refusal reasons if unstable."""
    verdict = "" if result.stable else "  REFUSED: " + "; ".join(result.unstable_reasons)
    return (
        f"median {result.median_s * 1e3:8.2f} ms  cv {result.cv:6.2%}  attempts {result.attempts}  "
        f"cpu_fraction {result.cpu_fraction:.2f}{verdict}"
    )


def _contended_round(models: dict[str, bytes], quiet: dict[str, float], protocol: LatencyProtocol) -> None:
    """Measure every arch with a spinning neighbour pinned to each usable CPU; compare with ``quiet``."""
    cpus = sorted(os.sched_getaffinity(0))
    print(f"\ncontended round: {len(cpus)} spinning neighbour(s), one pinned to each usable CPU")
    ratios, refused = [], 0
    with neighbours("spin", len(cpus), cpus=cpus):
        for archid, model in models.items():
            result = measure_onnx_latency(model, protocol=protocol)
            ratios.append(result.median_s / quiet[archid])
            refused += not result.stable
            print(f"contended {archid[:12]}: {_describe(result)}  x{ratios[-1]:.2f} of round 1")
    print(f"median contended/quiet ratio:         {statistics.median(ratios):.2f}")
    print(f"refused as unstable under load:       {refused} of {len(models)}")


if __name__ == "__main__":
    main()
