"""Int8 emulation: fp32 vs int8 (QDQ) latency on this host, and the mIOU lost to quantization.

For ``--n`` seeded sampled archs (params in [1e5, 5e6]) at ``--img-size``: partial training for
``--steps`` steps (batch 8) on a generated dataset of ``--images`` frames, export of the trained model,
int8 quantization calibrated on ``--calib`` train images, then fp32 and int8 median latency (CPU
protocol, ``--threads`` intra-op threads) and fp32-ONNX vs int8-ONNX mIOU on the val split (a quarter
of the frames, so that the mIOU rests on more than one image).

Defaults: ``--img-size`` 128, not 256. At 256 on 2 cores, 30 steps would take about 20 minutes, and
15 steps (690 s) leave every model at val mIOU ~0.001, so the mIOU drop says nothing; at 128, 30 steps
reach mIOU ~0.07 in about 10 s per arch. The int8 model is quantized twice per arch (once for mIOU,
once inside ``measure_quantized_latency``); the two must be byte-identical, which checks determinism
at full size. ``cv`` is the larger of the two latencies' round-median CVs; ``load`` the host's 1-minute
load average when the int8 timing began (a busy host slows both, and the ratio less so). Training uses
``--torch-threads`` (default 1): on a busy 2-core host two OpenMP threads slowed training 10-15x.

    .venv/bin/python bench/quantization.py [--n 10] [--img-size 128] [--steps 30] [--method minmax]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from facenas.data.synth import generate_dataset
from facenas.latency import LatencyProtocol
from facenas.latency.quantized import (
    FloatArray,
    calibration_batches,
    emulated_device,
    measure_quantized_latency,
    onnx_miou,
    quantize_int8,
)
from facenas.model import export_onnx
from facenas.pipeline import DatasetSplits, partial_train_model
from facenas.space import Arch, HgnetSearchSpace, ParamRange, SearchSpaceParams
from facenas.train.loop import TrainingConfig

HEADER = "archid      Mparams  fp32 ms   int8 ms  speedup  cv     load"


@dataclass(frozen=True)
class Row:
    """One arch's figures."""

    archid: str
    params_m: float
    fp32_ms: float
    int8_ms: float
    speedup: float
    cv: float
    load: float | None
    fp32_miou: tuple[float, float]  # (Archai per-batch, global)
    int8_miou: tuple[float, float]


def _archs(space: HgnetSearchSpace, n: int, low: float, high: float) -> list[Arch]:
    archs: dict[str, Arch] = {}
    while len(archs) < n:
        arch = space.sample_valid(ParamRange(low, high))
        archs.setdefault(arch.archid, arch)
    return list(archs.values())


def _trained_onnx(arch: Arch, params: SearchSpaceParams, data: DatasetSplits, steps: int) -> bytes:
    """Partially train ``arch`` and export the trained model."""
    model, _ = partial_train_model(arch, params, data, TrainingConfig(steps=steps, batch_size=8))
    return export_onnx(model.cpu(), data.train.img_size, params.in_channels).model_bytes


def _row(
    arch: Arch, space: HgnetSearchSpace, data: DatasetSplits, args: argparse.Namespace, cal: list[FloatArray]
) -> Row:
    fp32 = _trained_onnx(arch, space.params, data, args.steps)
    int8 = quantize_int8(fp32, cal, args.method, args.per_channel)
    protocol = LatencyProtocol(intra_op_threads=args.threads)
    lat = measure_quantized_latency(
        fp32, cal, protocol, include_fp32=True, method=args.method, per_channel=args.per_channel
    )
    if lat.int8_sha256 != hashlib.sha256(int8).hexdigest():
        raise SystemExit(f"{arch.archid}: quantization is not deterministic")
    assert lat.fp32 is not None and lat.speedup is not None
    return Row(
        archid=arch.archid,
        params_m=space.num_parameters(arch) / 1e6,
        fp32_ms=lat.fp32.median_s * 1e3,
        int8_ms=lat.int8.median_s * 1e3,
        speedup=lat.speedup,
        cv=max(lat.fp32.cv, lat.int8.cv),
        load=lat.int8.load_1min,
        fp32_miou=onnx_miou(fp32, data.val),
        int8_miou=onnx_miou(int8, data.val),
    )


def _print_row(r: Row) -> None:
    load = f"{r.load:4.1f}" if r.load is not None else "   -"
    drop = (r.fp32_miou[0] - r.int8_miou[0], r.fp32_miou[1] - r.int8_miou[1])
    print(
        f"{r.archid[:10]}  {r.params_m:5.2f}  {r.fp32_ms:8.2f}  {r.int8_ms:8.2f}  {r.speedup:5.2f}x  "
        f"{r.cv:5.1%}  {load}  "
        f"{r.fp32_miou[0]:.4f}/{r.fp32_miou[1]:.4f}  {r.int8_miou[0]:.4f}/{r.int8_miou[1]:.4f}  "
        f"{drop[0]:+.4f}/{drop[1]:+.4f}",
        flush=True,
    )


def _print_medians(rows: list[Row]) -> None:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    print(
        f"median: fp32 {med([r.fp32_ms for r in rows]):.2f} ms, "
        f"int8 {med([r.int8_ms for r in rows]):.2f} ms, "
        f"speedup {med([r.speedup for r in rows]):.2f}x (min {min(r.speedup for r in rows):.2f}, "
        f"max {max(r.speedup for r in rows):.2f})"
    )
    archai = [r.fp32_miou[0] - r.int8_miou[0] for r in rows]
    global_ = [r.fp32_miou[1] - r.int8_miou[1] for r in rows]
    print(
        f"median mIOU drop (fp32 - int8): Archai {med(archai):+.4f} (max {max(archai):+.4f}), "
        f"global {med(global_):+.4f} (max {max(global_):+.4f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    parser.add_argument("--per-channel", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-params", type=float, default=1e5)
    parser.add_argument("--max-params", type=float, default=5e6)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    began = time.perf_counter()
    size = (args.img_size, args.img_size)
    params = SearchSpaceParams(img_size=size)
    space = HgnetSearchSpace(params, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="facenas-quant-bench-") as tmp:
        generate_dataset(tmp, args.images, size=args.img_size, seed=args.seed)
        data = DatasetSplits.open(Path(tmp), size, val_fraction=0.25)
        cal = calibration_batches(tmp, size, count=args.calib)
        print(f"{emulated_device()}; {args.n} archs at {args.img_size}x{args.img_size}, {args.steps} steps")
        print(
            f"int8: {args.method}, per_channel={args.per_channel}, {len(cal)} calibration images; "
            f"latency threads={args.threads}; mIOU on {len(data.val)} val images (Archai/global)"
        )
        print(f"{HEADER}  fp32 mIOU        int8 mIOU        drop (Archai/global)")
        rows = []
        for arch in _archs(space, args.n, args.min_params, args.max_params):
            rows.append(_row(arch, space, data, args, cal))
            _print_row(rows[-1])
    _print_medians(rows)
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
