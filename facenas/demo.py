"""The demo on embedded defaults: synthetic data, sampled architectures, partial training, latency."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from facenas.data.facesynth import discover_frames
from facenas.data.synth import generate_dataset
from facenas.errors import DatasetError
from facenas.latency import LatencyProtocol
from facenas.pipeline import DatasetSplits, measure_arch_latency, partial_train_arch
from facenas.space.hgnet import HgnetSearchSpace, ParamRange
from facenas.space.params import SearchSpaceParams, load_search_space_params
from facenas.train.loop import TrainingConfig

#: Small models keep the demo within minutes on 2 CPU cores.
DEMO_PARAM_RANGE = ParamRange(1e5, 2e6)


@dataclass(frozen=True)
class DemoSettings:
    workdir: Path
    count: int = 240
    img_size: int = 64
    archs: int = 5
    steps: int = 80
    batch_size: int = 16
    seed: int = 0


def _dataset(settings: DemoSettings, console: Console) -> Path:
    data_dir = settings.workdir / "data"
    try:
        if len(discover_frames(data_dir)) >= settings.count:
            console.print(f"[dim]reusing {data_dir}[/]")
            return data_dir
    except DatasetError:
        pass
    began = time.perf_counter()
    with console.status(f"generating {settings.count} synthetic faces"):
        generate_dataset(data_dir, settings.count, size=settings.img_size, seed=settings.seed)
    console.print(f"generated {settings.count} frames in {time.perf_counter() - began:.1f} s -> {data_dir}")
    return data_dir


@dataclass(frozen=True)
class DemoRow:
    """One architecture's figures."""

    archid: str
    params: int
    latency_s: float
    latency_cv: float
    val_miou: float
    val_miou_global: float
    loss_first: float
    loss_last: float
    train_s: float


def run_demo(settings: DemoSettings, console: Console) -> list[DemoRow]:
    """Run the demo and return one row per architecture (also written to ``results.json``)."""
    base = load_search_space_params()
    size = [settings.img_size, settings.img_size]
    params = SearchSpaceParams.from_mapping({**base.to_dict(), "img_size": size})
    data = DatasetSplits.open(_dataset(settings, console), params.img_size, val_fraction=0.1)
    space = HgnetSearchSpace(params, seed=settings.seed)
    archs_dir = settings.workdir / "archs"
    archs_dir.mkdir(parents=True, exist_ok=True)
    config = TrainingConfig(batch_size=settings.batch_size, steps=settings.steps, seed=settings.seed)
    protocol = LatencyProtocol(rounds=5, max_seconds=20.0)
    rows: list[DemoRow] = []
    for index in range(settings.archs):
        arch = space.sample_valid(DEMO_PARAM_RANGE)
        space.save(arch, archs_dir)
        tag = f"[{index + 1}/{settings.archs}] {arch.archid}"
        with console.status(f"{tag}: training {settings.steps} steps"):
            trained = partial_train_arch(arch, params, data, config)
        with console.status(f"{tag}: measuring latency"):
            latency = measure_arch_latency(arch, params, protocol)
        row = DemoRow(
            archid=arch.archid,
            params=space.num_parameters(arch),
            latency_s=latency.median_s,
            latency_cv=latency.cv,
            val_miou=trained.val_miou,
            val_miou_global=trained.val_miou_global,
            loss_first=trained.first_loss,
            loss_last=trained.last_loss,
            train_s=trained.train_seconds,
        )
        rows.append(row)
        console.print(
            f"{tag}: loss {row.loss_first:.3f} -> {row.loss_last:.3f}, "
            f"mIOU {row.val_miou:.3f}, latency {row.latency_s * 1e3:.2f} ms"
        )
    results = settings.workdir / "results.json"
    results.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    console.print(_table(rows, settings))
    console.print(f"architectures in {archs_dir}, figures in {results}")
    return rows


def _table(rows: list[DemoRow], settings: DemoSettings) -> Table:
    title = f"facenas demo: {settings.steps} training steps at {settings.img_size}px, CPU ONNX latency"
    table = Table(title=title)
    for column in ("archid", "params", "latency (ms)", "CV", "val mIOU", "global mIOU"):
        table.add_column(column, justify="left" if column == "archid" else "right", no_wrap=True)
    for row in sorted(rows, key=lambda r: r.latency_s):
        table.add_row(
            row.archid,
            f"{row.params:,}",
            f"{row.latency_s * 1e3:.2f}",
            f"{row.latency_cv:.1%}",
            f"{row.val_miou:.3f}",
            f"{row.val_miou_global:.3f}",
        )
    return table
