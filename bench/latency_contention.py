"""Latency under CPU-burning neighbours: what the contention detector sees, per neighbour kind.

For each scenario (quiet host; 1 and 2 spinning neighbours, plain and ``nice 19``; a torch training
loop) every model is measured ``--repeats`` times under the default protocol. Prints per scenario the
median latency and its ratio to the quiet one, cv, cpu_fraction, other runnable tasks, and how many
results were contended / refused. The quiet scenario is measured first and last to expose drift.

    .venv/bin/python bench/latency_contention.py [--repeats 3] [--img-size 64 256]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path

from neighbours import neighbours

from facenas.latency import LatencyProtocol, LatencyResult, host_info, measure_onnx_latency
from facenas.pipeline import arch_to_onnx
from facenas.space import HgnetSearchSpace, SearchSpaceParams

ARCH = (
    Path(__file__).parents[1]
    / "tests/fixtures/archai/snp_target/4786c03a18be281ad2fed235c86a5fe952fb4b0a.json"
)

Scenario = Callable[[], contextlib.AbstractContextManager[object]]
SCENARIOS: dict[str, Scenario] = {
    "quiet": contextlib.nullcontext,
    "spin x1": lambda: neighbours("spin", 1),
    "spin x1 nice19": lambda: neighbours("spin", 1, nice=19),
    "spin x2": lambda: neighbours("spin", 2),
    "spin x2 nice19": lambda: neighbours("spin", 2, nice=19),
    "train x1": lambda: neighbours("train", 1),
    "quiet again": contextlib.nullcontext,
}


def _measure(
    models: dict[str, bytes], repeats: int, protocol: LatencyProtocol
) -> Iterator[tuple[str, LatencyResult]]:
    for _ in range(repeats):
        for name, model in models.items():
            yield name, measure_onnx_latency(model, protocol=protocol)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--img-size", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    args = parser.parse_args()

    models: dict[str, bytes] = {}
    for size in args.img_size:
        params = SearchSpaceParams(img_size=(size, size))
        arch = HgnetSearchSpace(params).load(ARCH)
        models[f"{size}px"] = arch_to_onnx(arch, params).model_bytes
    protocol = LatencyProtocol()
    host = host_info()
    print(f"host: {host.cpu_model} ({host.usable_cpus} usable cpus); protocol {protocol}")

    quiet: dict[str, float] = {}
    for scenario in args.scenarios:
        with SCENARIOS[scenario]():
            results: dict[str, list[LatencyResult]] = {name: [] for name in models}
            for name, result in _measure(models, args.repeats, protocol):
                results[name].append(result)
        for name, rs in results.items():
            median = statistics.median(r.median_s for r in rs)
            quiet.setdefault(name, median)
            neigh = [statistics.fmean(r.neighbours) for r in rs if r.neighbours]
            print(
                f"{scenario:15s} {name:6s} median {median * 1e3:8.3f} ms  x{median / quiet[name]:5.2f}  "
                f"cv {max(r.cv for r in rs):6.2%} (max)  cpu_fraction "
                + " ".join(f"{r.cpu_fraction:.3f}" for r in rs)
                + f"  neighbours {statistics.fmean(neigh) if neigh else float('nan'):.1f}  "
                f"contended {sum(r.contended for r in rs)}/{len(rs)}  refused {sum(not r.stable for r in rs)}"
                f"/{len(rs)}  medians " + " ".join(f"{r.median_s * 1e3:.3f}" for r in rs)
            )


if __name__ == "__main__":
    main()
