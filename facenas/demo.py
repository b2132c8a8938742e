"""``make demo``: ``facenas search run`` on generated data with an embedded small config.

Generates a synthetic dataset (once), then runs the demo search exactly as a user runs one on their own
data: the store, two trainers, latency_cpu (and latency_snp for the snp target) and the searcher as
processes on loopback, live progress, the Pareto front, Archai's outputs, everything stopped at the end.
The output directory keeps the search: running the demo again resumes it and re-evaluates nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from facenas.data.facesynth import discover_frames
from facenas.data.synth import generate_dataset
from facenas.errors import DatasetError, InvalidInput
from facenas.localrun import LocalRunResult, LocalRunSettings, run_local_search
from facenas.space.params import default_config_text

#: target -> embedded config (``facenas/configs/<name>_search.yaml``)
DEMO_CONFIGS = {"cpu": "demo", "snp": "demo_snp"}
#: The demo's 300 frames: 10 % for validation (2 % would leave 6 images to score a model on).
DEMO_VAL_FRACTION = 0.1


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

    @property
    def output_dir(self) -> Path:
        return self.workdir / (
            f"search-{self.target}" if self.config is None else f"search-{self.config.stem}"
        )


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


def run_demo(settings: DemoSettings, console: Console) -> LocalRunResult:
    """Run (or resume) the demo search."""
    config = settings.config_text()
    data = _dataset(settings, console)
    local = LocalRunSettings(
        config,
        data,
        settings.output_dir,
        trainers=settings.trainers,
        name=f"demo-{settings.target}",
        val_fraction=DEMO_VAL_FRACTION,
    )
    return run_local_search(local, console)
