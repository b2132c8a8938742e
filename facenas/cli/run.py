"""``facenas latency``, ``facenas train`` and ``facenas demo``."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from facenas.cli.common import console, err_console, parse_img_size, print_json, space_params, user_errors
from facenas.errors import ConfigError, InvalidInput
from facenas.space.hgnet import HgnetSearchSpace
from facenas.space.params import SearchSpaceParams

if TYPE_CHECKING:  # onnxruntime: imported by the commands that measure, not at the CLI's load
    from facenas.latency import LatencyResult

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Archai search YAML (default: embedded cpu_search.yaml).")
]
ImgSizeOpt = Annotated[
    str | None, typer.Option("--img-size", help="S or WxH (default: the space's img_size).")
]


def step_progress(target: Console) -> Progress:
    """A progress bar for training steps on ``target``."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
        console=target,
        transient=True,
    )


@user_errors
def latency(
    file: Annotated[Path, typer.Argument(help="Archai arch JSON file.")],
    img_size: ImgSizeOpt = None,
    threads: Annotated[int, typer.Option(min=1, max=256, help="onnxruntime intra-op threads.")] = 1,
    rounds: Annotated[int, typer.Option(min=2, max=1000, help="Timed rounds.")] = 7,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    require_stable: Annotated[
        bool, typer.Option("--require-stable", help="Fail (exit 2) instead of printing an unstable result.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """ONNX Runtime CPU latency of an architecture (warm-up, repeated rounds, median and CV).

    Every result says whether it is stable: a busy host (the measuring thread got too little CPU) or
    a high CV makes it unstable, with the reasons.
    """
    from facenas.latency import LatencyProtocol, ensure_stable
    from facenas.pipeline import measure_arch_latency

    size = parse_img_size(img_size)
    params = space_params(config)
    arch = HgnetSearchSpace(params).load(file)
    protocol = LatencyProtocol(intra_op_threads=threads, rounds=rounds)
    with err_console.status("measuring latency", spinner="dots"):
        result = measure_arch_latency(arch, params, protocol, size)
    if require_stable:
        ensure_stable(result)
    if json_out:
        print_json({"archid": arch.archid, "img_size": list(size or params.img_size), **result.to_dict()})
        return
    console.print(
        f"{arch.archid}: median {result.median_s * 1e3:.2f} ms, cv {result.cv:.2%} "
        f"({result.samples} runs, {result.attempts} attempt(s), {result.intra_op_threads} thread(s), "
        f"{result.host.cpu_model})"
    )
    console.print(_host_facts(result), highlight=False)


def _host_facts(result: LatencyResult) -> str:
    """One line: what the host did to the measurement and whether the result is stable."""
    load = " -> ".join("?" if x is None else f"{x:.2f}" for x in (result.load_1min, result.load_1min_end))
    queue = f", {statistics.fmean(result.neighbours):.1f} other runnable tasks" if result.neighbours else ""
    verdict = "stable" if result.stable else "UNSTABLE: " + "; ".join(result.unstable_reasons)
    return f"host: cpu_fraction {result.cpu_fraction:.2f}{queue}, load {load}: {verdict}"


@user_errors
def train(
    file: Annotated[Path, typer.Argument(help="Archai arch JSON file.")],
    dataset_dir: Annotated[Path, typer.Option("--dataset-dir", help="Face Synthetics-layout directory.")],
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Checkpoints, model.onnx, metrics.json.")],
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=10_000, help="Total epochs (resumes).")] = 30,
    batch_size: Annotated[int, typer.Option(min=1, max=4096)] = 16,
    learning_rate: Annotated[float, typer.Option("--lr", min=1e-8, max=1.0)] = 2e-4,
    img_size: Annotated[
        str | None,
        typer.Option(
            "--img-size",
            help="S or WxH (default: the space's img_size, or the dataset's if its frames are smaller).",
        ),
    ] = None,
    seed: int = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    val_fraction: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.02,
    test_fraction: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.10,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object at the end.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Final training of one architecture (Archai's train.py), resumable; exports model.onnx."""
    from facenas.pipeline import DatasetSplits
    from facenas.train.final import train_final
    from facenas.train.loop import TrainingConfig

    size = parse_img_size(img_size)
    params = space_params(config, size)
    if size is None:
        params = _fit_to_dataset(params, dataset_dir)
    arch = HgnetSearchSpace(params).load(file)
    data = DatasetSplits.open(dataset_dir, params.img_size, val_fraction, test_fraction)
    cfg = TrainingConfig(batch_size=batch_size, learning_rate=learning_rate, seed=seed, device=device)
    with step_progress(err_console if json_out else console) as progress:
        task = progress.add_task("epoch", total=None, loss=float("nan"))

        def on_step(step: int, total: int, loss: float) -> None:
            progress.update(task, completed=step, total=total, loss=loss)

        def on_epoch(record: dict[str, Any]) -> None:
            progress.console.print(
                f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, "
                f"val mIOU {record['val_miou']:.4f} (global {record['val_miou_global']:.4f}), "
                f"{record['seconds']:.1f} s"
            )

        result = train_final(arch, params, data.train, data.val, output_dir, epochs, cfg, on_epoch, on_step)
    if json_out:
        print_json({**result.to_dict(), "img_size": list(params.img_size)})
    else:
        console.print(
            f"done: {result.epochs_done} epochs (resumed after {result.resumed_from}); {result.onnx_path}"
        )


def _fit_to_dataset(params: SearchSpaceParams, dataset_dir: Path) -> SearchSpaceParams:
    """Without ``--img-size``: the space's image size, or the dataset's when its frames are smaller --
    upsampling only costs time (64 px frames at 256 px are 16x the pixels) and gives a worse model.
    InvalidInput with the reason when the dataset's size does not suit the space."""
    from facenas.data.facesynth import frame_size

    w, h = frame_size(dataset_dir)
    want_w, want_h = params.img_size
    if w >= want_w and h >= want_h:
        return params  # downscaled, as Archai trains Face Synthetics' 512 px frames at 256 px
    try:
        fitted = SearchSpaceParams.from_mapping({**params.to_dict(), "img_size": [w, h]})
    except ConfigError as err:
        raise InvalidInput(
            f"{dataset_dir} holds {w}x{h} images, smaller than the space's img_size {want_w}x{want_h}: "
            f"training at {want_w}x{want_h} would upsample every frame (slower, and a worse model), and "
            f"{w}x{h} does not suit the space ({'; '.join(err.problems)}); choose one with --img-size"
        ) from None
    err_console.print(
        f"training at the dataset's {w}x{h} (the space's img_size {want_w}x{want_h} would upsample it; "
        "--img-size overrides)",
        highlight=False,
    )
    return fitted


@user_errors
def demo(
    workdir: Annotated[Path, typer.Option(help="Where data, the store, logs and outputs go.")] = Path(
        "runs/demo"
    ),
    count: Annotated[int, typer.Option(min=8, max=100_000, help="Synthetic frames.")] = 300,
    trainers: Annotated[int, typer.Option(min=1, max=16, help="Trainer replicas.")] = 2,
    config: Annotated[Path | None, typer.Option(help="Search config (default: the embedded demo).")] = None,
    seed: int = 0,
    target: Annotated[
        str | None,
        typer.Option(help="cpu or snp: the embedded demo config to run (default cpu; not with --config)."),
    ] = None,
) -> None:
    """Run the whole system on loopback: a small search with live progress and outputs."""
    from facenas.demo import DemoSettings, run_demo

    if config is not None and target is not None:
        raise InvalidInput(
            "--config and --target: give one; a config file names its own target (search.target.name)"
        )
    settings = DemoSettings(workdir, count, 64, trainers, seed, config, target or "cpu")
    settings.config_text()  # an unknown target fails before any data is generated
    run_demo(settings, Console(width=max(console.width, 120)))
