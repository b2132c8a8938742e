"""Data loading: frames/s of the PNG loader vs the decoded data cache, Face Synthetics size to Archai's.

Generates ``--frames`` 512x512 frames (``facenas.data.synth``) in a temporary directory, prepares the
cache at 256x256 with ``--workers`` processes, then reads every frame through a shuffled DataLoader
(batch 16) from the PNGs and from the cache: in the reading process (0 workers, "1 process") and with
``--workers`` DataLoader workers. Each figure is full passes over the frames for at least
``--seconds`` after one warm-up batch; both paths read files the page cache holds (just written). The
reading process runs ``--threads`` torch threads (default 1: figures per core; DataLoader workers run 1).
Prints frames/s, the cache/PNG ratios and what one partial-training epoch (88,000 frames, 5,500 steps
of 16) spends decoding; ``--json`` prints one JSON object instead.

    .venv/bin/python bench/data_throughput.py [--frames 256] [--workers N] [--seconds 3] [--threads 1]
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
from torch.utils.data import DataLoader, Dataset

from facenas.cpus import usable_cpus
from facenas.data.cache import CachedFaceDataset, default_cache_dir, prepare_cache
from facenas.data.facesynth import FaceSyntheticsDataset
from facenas.data.synth import generate_dataset

SOURCE, SIZE, BATCH, EPOCH_FRAMES = 512, (256, 256), 16, 88_000


def frames_per_second(dataset: Dataset[Any], workers: int, min_seconds: float) -> float:
    """Frames/s of shuffled batches from ``dataset`` with ``workers`` DataLoader workers."""
    loader = DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    next(iter(loader))  # warm-up: workers started, maps opened
    frames, began = 0, time.perf_counter()
    while True:
        for images, _ in loader:
            frames += images.shape[0]
        elapsed = time.perf_counter() - began
        if elapsed >= min_seconds:
            return frames / elapsed


def run(frames: int, workers: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="data_throughput_") as tmp:
        root = Path(tmp)
        generate_dataset(root, frames, size=SOURCE, seed=0, workers=workers)
        began = time.perf_counter()
        prepare_cache(root, SIZE, workers=workers)
        prepare_s = time.perf_counter() - began
        png = FaceSyntheticsDataset(root, "all", SIZE)
        cache = CachedFaceDataset(default_cache_dir(root, SIZE), "all")
        out: dict[str, Any] = {
            "frames": frames,
            "source_size": [SOURCE, SOURCE],
            "img_size": list(SIZE),
            "workers": workers,
            "usable_cpus": usable_cpus(),
            "torch_threads": torch.get_num_threads(),
            "prepare_seconds": prepare_s,
            "prepare_frames_per_s": frames / prepare_s,
            "png_frames_per_s": frames_per_second(png, 0, seconds),
            "cache_frames_per_s": frames_per_second(cache, 0, seconds),
            "png_frames_per_s_workers": frames_per_second(png, workers, seconds),
            "cache_frames_per_s_workers": frames_per_second(cache, workers, seconds),
        }
    out["ratio_1_process"] = out["cache_frames_per_s"] / out["png_frames_per_s"]
    out["ratio_workers"] = out["cache_frames_per_s_workers"] / out["png_frames_per_s_workers"]
    out["epoch_decode_seconds_png"] = EPOCH_FRAMES / out["png_frames_per_s"]
    out["epoch_decode_seconds_cache"] = EPOCH_FRAMES / out["cache_frames_per_s"]
    return out


def report(r: dict[str, Any]) -> None:
    w = r["workers"]
    print(
        f"{r['frames']} frames {SOURCE}x{SOURCE} -> {SIZE[0]}x{SIZE[1]}, {r['usable_cpus']} usable CPUs, "
        f"{r['torch_threads']} torch threads"
    )
    print(f"prepare ({w} processes): {r['prepare_seconds']:.1f} s, {r['prepare_frames_per_s']:.1f} frames/s")
    print("                          PNG frames/s   cache frames/s   cache/PNG")
    print(
        f"1 process                 {r['png_frames_per_s']:12.1f}   {r['cache_frames_per_s']:14.1f}"
        f"   {r['ratio_1_process']:8.1f}x"
    )
    print(
        f"{w} DataLoader workers{' ' * (6 - len(str(w)))}{r['png_frames_per_s_workers']:12.1f}"
        f"   {r['cache_frames_per_s_workers']:14.1f}   {r['ratio_workers']:8.1f}x"
    )
    print(
        f"decoding one epoch ({EPOCH_FRAMES:,} frames) in 1 process: "
        f"PNG {r['epoch_decode_seconds_png'] / 60:.1f} min, cache {r['epoch_decode_seconds_cache']:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=256, help="512x512 frames to generate (default 256)")
    parser.add_argument("--workers", type=int, default=usable_cpus(), help="processes (default: usable CPUs)")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum seconds per figure (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the reading process (1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.frames < BATCH or args.workers < 1 or args.threads < 1:
        parser.error(f"--frames must be >= {BATCH}, --workers and --threads >= 1")
    torch.set_num_threads(args.threads)  # "1 process" = one core
    result = run(args.frames, args.workers, args.seconds)
    if args.json:
        print(json.dumps(result))
    else:
        report(result)


if __name__ == "__main__":
    main()
