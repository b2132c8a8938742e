"""``facenas data``: synthetic Face Synthetics-layout datasets."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from facenas.cli.common import console, user_errors
from facenas.data.synth import generate_dataset

app = typer.Typer(help="Datasets in the Face Synthetics layout.", no_args_is_help=True)


@app.command("synth")
@user_errors
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    count: Annotated[int, typer.Option("--count", min=1, max=1_000_000, help="Number of frames.")],
    size: Annotated[int, typer.Option("--size", min=16, max=2048, help="Image side in pixels.")] = 256,
    seed: Annotated[int, typer.Option(help="Dataset seed; frame i depends only on (seed, i).")] = 0,
    start: Annotated[int, typer.Option(min=0, help="Index of the first frame.")] = 0,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Processes.")] = 1,
) -> None:
    """Generate procedural faces and label maps ({i:06d}.png, {i:06d}_seg.png)."""
    began = time.perf_counter()
    chunk = max(1, min(500, count // 20 or 1))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("generating", total=count)
        for offset in range(0, count, chunk):
            todo = min(chunk, count - offset)
            generate_dataset(out, todo, size=size, seed=seed, start=start + offset, workers=workers)
            progress.advance(task, todo)
    seconds = time.perf_counter() - began
    console.print(
        f"wrote {count} frames ({size}x{size}) to {out} in {seconds:.1f} s ({count / seconds:.0f}/s)"
    )
