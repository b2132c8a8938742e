"""Partial-training images/s on the data cache vs the PNGs, and the share of step time waiting for data.

Generates ``--frames`` 512x512 frames in a temporary directory, prepares the cache at 256x256, then
trains one arch (default: the smallest published ``snp_target`` arch in tests/fixtures) with the default
recipe (Adam 2e-4, batch 16, automatic loader workers and precision) for ``--steps`` steps twice: reading
the PNGs (``cache=None``) and reading the cache (``cache="auto"``). Reports training images/s, the data
wait share (``data_wait_seconds / train_seconds``), loader workers and precision; ``--json`` prints one
JSON object instead.

    .venv/bin/python bench/train_throughput.py [--steps 12] [--device auto] [--frames 96] [--threads N]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from facenas.data.cache import prepare_cache
from facenas.data.synth import generate_dataset
from facenas.pipeline import DatasetSplits, partial_train_arch
from facenas.space import HgnetSearchSpace, SearchSpaceParams
from facenas.train import TrainingConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARCH = ROOT / "tests/fixtures/archai/snp_target/4786c03a18be281ad2fed235c86a5fe952fb4b0a.json"
SIZE = (256, 256)


def train_once(root: Path, arch_file: Path, cache: str | None, config: TrainingConfig) -> dict[str, Any]:
    params = SearchSpaceParams(img_size=SIZE)
    arch = HgnetSearchSpace(params).load(arch_file)
    data = DatasetSplits.open(root, SIZE, cache=cache)
    result = partial_train_arch(arch, params, data, config)
    return {
        "loader": type(data.train).__name__,
        "images_per_s": result.images_per_second,
        "train_seconds": result.train_seconds,
        "data_wait_seconds": result.data_wait_seconds,
        "data_wait_share": result.data_wait_seconds / result.train_seconds,
        "loader_workers": result.loader_workers,
        "precision": result.precision,
        "device": result.device,
        "archid": arch.archid,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = TrainingConfig(steps=args.steps, max_eval_batches=1, device=args.device)
    with tempfile.TemporaryDirectory(prefix="train_throughput_") as tmp:
        root = Path(tmp)
        generate_dataset(root, args.frames, size=512, seed=0, workers=2)
        began = time.perf_counter()
        prepare_cache(root, SIZE)
        prepared = time.perf_counter() - began
        png = train_once(root, args.arch, None, config)
        cache = train_once(root, args.arch, "auto", config)
    return {
        "frames": args.frames,
        "steps": args.steps,
        "batch_size": config.batch_size,
        "img_size": list(SIZE),
        "torch_threads": torch.get_num_threads(),
        "prepare_seconds": prepared,
        "png": png,
        "cache": cache,
        "speedup": cache["images_per_s"] / png["images_per_s"],
    }


def report(r: dict[str, Any]) -> None:
    c = r["cache"]
    print(
        f"arch {c['archid'][:10]} at {SIZE[0]}x{SIZE[1]}, batch {r['batch_size']}, {r['steps']} steps, "
        f"{c['device']} ({c['precision']}), {r['torch_threads']} torch threads"
    )
    print("loader                    images/s   data wait share   loader workers")
    for name in ("png", "cache"):
        x = r[name]
        print(
            f"{x['loader']:<24}{x['images_per_s']:10.1f}   {x['data_wait_share']:15.1%}"
            f"   {x['loader_workers']:14d}"
        )
    print(f"cache / PNG: {r['speedup']:.2f}x images/s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12, help="training steps per run (default 12)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--frames", type=int, default=96, help="512x512 frames to generate (default 96)")
    parser.add_argument("--arch", type=Path, default=DEFAULT_ARCH, help="Archai arch JSON")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        report(result)


if __name__ == "__main__":
    main()
