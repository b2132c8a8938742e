"""Measure synthetic-face generation speed on one process, PNG writing included.

Usage: ``python bench/synth_speed.py [--count N] [--size S] [--seed K]`` (with facenas importable,
e.g. installed or ``PYTHONPATH=.``).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from facenas.data.synth import generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="images to generate (default 200)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="synth_speed_") as out:
        start = time.perf_counter()
        generate_dataset(out, args.count, size=args.size, seed=args.seed, workers=1)
        elapsed = time.perf_counter() - start
    rate = args.count / elapsed
    print(f"{args.count} images at {args.size}x{args.size} in {elapsed:.2f} s: {rate:.1f} images/s")


if __name__ == "__main__":
    main()
