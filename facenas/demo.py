"""``make demo``: the whole system as processes on loopback, running a small search.

Generates a synthetic dataset, starts the store, two trainers, latency_cpu, latency_snp and the searcher,
runs an embedded demo search (async Pareto evolution; ``demo_search.yaml`` for the cpu target,
``demo_snp_search.yaml`` for snp, which adds the emulated int8 latency and the int8 model's val mIOU),
shows live progress, prints the Pareto front, writes Archai's outputs and stops every process it started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from facenas.data.facesynth import discover_frames
from facenas.data.synth import generate_dataset
from facenas.errors import DatasetError, InvalidInput
from facenas.launcher import LocalCluster
from facenas.space.params import default_config_text

#: target -> embedded config (``facenas/configs/<name>_search.yaml``)
DEMO_CONFIGS = {"cpu": "demo", "snp": "demo_snp"}


@dataclass(frozen=True)
class DemoSettings:
    workdir: Path
    count: int = 300
    img_size: int = 64
    trainers: int = 2
    seed: int = 0
    config: Path | None = None
    target: str = "cpu"  # which embedded config runs when ``config`` is None

    def config_text(self) -> str:
        """The search config: the ``config`` file, else the embedded demo config of ``target``."""
        if self.config is not None:
            try:
                return self.config.read_text(encoding="utf-8")
            except OSError as err:
                raise InvalidInput(f"--config: cannot read {self.config}: {err.strerror or err}") from err
        if self.target not in DEMO_CONFIGS:
            raise InvalidInput(f"--target: {self.target!r} is not one of {', '.join(DEMO_CONFIGS)}")
        return default_config_text(DEMO_CONFIGS[self.target])


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


def run_demo(settings: DemoSettings, console: Console) -> str:
    """Run the demo; returns the search id."""
    from facenas.cli.search import follow
    from facenas.rpc.client import call, make_channel
    from facenas.v1 import searcher_pb2, searcher_pb2_grpc

    config = settings.config_text()
    workdir = settings.workdir.resolve()
    data = _dataset(settings, console).resolve()
    run_dir = workdir / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    began = time.perf_counter()
    with LocalCluster(run_dir / "logs") as cluster:
        with console.status("starting services"):
            store = cluster.start("store", ["--url", f"sqlite:///{run_dir / 'store.db'}"])
            data_args = ["--dataset-dir", str(data), "--val-fraction", "0.1", "--threads", "1"]
            trainers = [
                cluster.start("trainer", data_args, name=f"trainer-{i + 1}") for i in range(settings.trainers)
            ]
            cpu = cluster.start("latency_cpu", ["--rounds", "5"])
            snp = cluster.start("latency_snp", [*data_args, "--rounds", "5"])
            workers = ["--trainer", ",".join(t.address for t in trainers), "--latency-cpu", cpu.address]
            searcher = cluster.start(
                "searcher", ["--store", store.address, *workers, "--latency-snp", snp.address]
            )
        console.print(
            f"services up in {time.perf_counter() - began:.1f} s: store {store.address}, "
            f"trainers {', '.join(t.address for t in trainers)}, latency_cpu {cpu.address}, "
            f"latency_snp {snp.address}, searcher {searcher.address}; logs in {run_dir / 'logs'}"
        )
        stub = searcher_pb2_grpc.SearcherStub(make_channel(searcher.address))
        summary = call(stub.StartSearch, searcher_pb2.StartSearchRequest(config=config, name="demo"), 60.0)
        search_id = summary.search.search_id
        console.print(f"search {search_id} started; live progress below")
        follow(stub, search_id, run_dir / "outputs", json_out=False, display=console)
        console.print(f"outputs (search_state_k.csv, pareto_models_iter_k/, plots) in {run_dir / 'outputs'}")
    console.print(f"stopped every service; demo took {time.perf_counter() - began:.0f} s")
    return search_id
