"""``facenas data``: synthetic Face Synthetics-layout datasets and the decoded data cache."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from facenas.cli.common import console, err_console, parse_img_size, print_json, user_errors

app = typer.Typer(help="Datasets in the Face Synthetics layout and their data cache.", no_args_is_help=True)


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
    from facenas.data.synth import generate_dataset  # the data package imports torch: not at the CLI's load

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


@app.command("prepare")
@user_errors
def prepare(
    dataset_dir: Annotated[Path, typer.Option("--dataset-dir", help="Face Synthetics-layout directory.")],
    img_size: Annotated[str, typer.Option("--img-size", help="Training size: S or WxH, e.g. 256.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Cache directory (default: DATASET_DIR/.facenas-cache/WxH).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, max=256, help="Decoding processes (default: all CPUs).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Decode every frame once into a memory-mapped cache at the training size; resumes if interrupted."""
    from facenas.data.cache import default_cache_dir, prepare_cache
    from facenas.data.cachefiles import IMAGES, MASKS

    size = parse_img_size(img_size) or (0, 0)
    directory = out if out is not None else default_cache_dir(dataset_dir, size)
    began = time.perf_counter()
    first: list[int] = []
    with Progress(console=err_console if json_out else console, transient=True) as progress:
        task = progress.add_task("decoding", total=None)

        def on_progress(done: int, total: int) -> None:
            first[:] = first or [done]
            progress.update(task, completed=done, total=total)

        manifest = prepare_cache(dataset_dir, size, out, workers, on_progress)
    seconds = time.perf_counter() - began
    decoded = manifest.count - (first[0] if first else 0)
    rate = decoded / seconds if seconds > 0 else 0.0
    size_bytes = sum((directory / name).stat().st_size for name in (IMAGES, MASKS))
    if json_out:
        print_json(
            {
                "cache_dir": str(directory),
                "img_size": list(size),
                "frames": manifest.count,
                "decoded": decoded,
                "seconds": round(seconds, 3),
                "frames_per_second": round(rate, 1),
                "bytes": size_bytes,
                "complete": manifest.complete,
            }
        )
    elif decoded == 0:
        console.print(f"{directory}: complete, {manifest.count} frames at {size[0]}x{size[1]}; nothing to do")
    else:
        console.print(
            f"{directory}: {manifest.count} frames at {size[0]}x{size[1]} ({size_bytes / 1e9:.2f} GB); "
            f"decoded {decoded} in {seconds:.1f} s ({rate:.0f}/s)"
        )
