"""``facenas search``: a gRPC client of the searcher (start, watch, list, pareto, get, cancel, resume)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from facenas.cli.common import console, err_console, print_json, user_errors
from facenas.errors import ConfigError, InvalidInput
from facenas.rpc.client import call, make_channel
from facenas.rpc.status import error_from_rpc
from facenas.v1 import searcher_pb2, searcher_pb2_grpc, store_pb2

app = typer.Typer(help="Run and inspect searches through the searcher service.", no_args_is_help=True)

T = TypeVar("T")
SearcherOpt = Annotated[
    str, typer.Option("--searcher", envvar="FACENAS_SEARCHER", help="Searcher address (host:port).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
DEFAULT_SEARCHER = "127.0.0.1:50051"


def _stub(address: str) -> searcher_pb2_grpc.SearcherStub:
    return searcher_pb2_grpc.SearcherStub(make_channel(address))


def _call(method: Callable[..., T], request: Any, timeout: float = 60.0) -> T:
    return call(method, request, timeout)


def _dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _status(summary: searcher_pb2.SearchSummary) -> str:
    return store_pb2.SearchStatus.Name(summary.search.status).removeprefix("SEARCH_STATUS_").lower()


def _print_summary(
    summary: searcher_pb2.SearchSummary, json_out: bool, display: Console | None = None
) -> None:
    if json_out:
        data = _dict(summary)
        data["search"].pop("config", None)
        print_json(data)
        return
    s = summary.search
    done = f"{summary.evaluations_done}/{summary.candidates} candidates evaluated"
    (display or console).print(
        f"{s.search_id} [bold]{_status(summary)}[/]  {s.name}: {summary.iterations_done} iterations, "
        f"{done}, hypervolume {summary.hypervolume:.4g}" + (f"\n  error: {s.error}" if s.error else "")
    )


@app.command("start")
@user_errors
def start(
    config: Annotated[Path, typer.Argument(help="Search config (Archai YAML plus facenas keys).")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    search_id: Annotated[str, typer.Option("--id", help="Client-chosen id (makes start idempotent).")] = "",
    watch_it: Annotated[bool, typer.Option("--watch", help="Follow progress until the search ends.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="With --watch: write Archai's outputs here at the end.")
    ] = None,
    searcher: SearcherOpt = DEFAULT_SEARCHER,
    json_out: JsonOpt = False,
) -> None:
    """Start a search."""
    try:
        text = config.read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidInput(f"cannot read {config}: {err.strerror or err}") from err
    stub = _stub(searcher)
    request = searcher_pb2.StartSearchRequest(config=text, name=name, search_id=search_id)
    problems = _call(stub.ValidateConfig, request).problems
    if problems:
        raise ConfigError(list(problems))
    summary = _call(stub.StartSearch, request)
    if watch_it:
        follow(stub, summary.search.search_id, out, json_out)
    else:
        _print_summary(summary, json_out)


@app.command("watch")
@user_errors
def watch(
    search_id: Annotated[str, typer.Argument(help="Search id.")],
    out: Annotated[
        Path | None, typer.Option(help="Write Archai's outputs here when the search ends.")
    ] = None,
    searcher: SearcherOpt = DEFAULT_SEARCHER,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print events as JSON lines, then the summary.")
    ] = False,
) -> None:
    """Follow a search's event log with progress bars until it ends."""
    follow(_stub(searcher), search_id, out, json_out)


def follow(
    stub: searcher_pb2_grpc.SearcherStub,
    search_id: str,
    out: Path | None,
    json_out: bool,
    display: Console | None = None,
) -> None:
    """Stream events; progress bars on a terminal (``display``, default the CLI's console), JSON lines with
    ``json_out``."""
    from facenas.search.config import parse_search_config

    summary = _call(stub.GetSearch, searcher_pb2.SearchRef(search_id=search_id))
    config = parse_search_config(summary.search.config)
    p = config.params
    total = p.init_num_models + (p.num_iters - 1) * p.max_unseen_population
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=err_console if json_out else display or console,
        disable=json_out,
    )
    with progress:
        iterations = progress.add_task("iterations", total=p.num_iters, note="")
        candidates = progress.add_task("candidates", total=total, note="")
        evaluations = progress.add_task("evaluations", total=total * len(config.objectives), note="")
        try:
            for event in stub.WatchSearch(searcher_pb2.WatchSearchRequest(search_id=search_id)):
                payload = json.loads(event.payload_json or "{}")
                if json_out:
                    print_json({"seq": event.seq, "kind": event.kind, **payload})
                _advance(progress, (iterations, candidates, evaluations), event.kind, payload)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
    summary = _call(stub.GetSearch, searcher_pb2.SearchRef(search_id=search_id))
    if out is not None:
        write_search_outputs(stub, search_id, out, quiet=json_out)
    if not json_out:
        show_pareto(stub, search_id, display)
    _print_summary(summary, json_out, display)


def _advance(progress: Progress, tasks: tuple[Any, Any, Any], kind: str, payload: dict[str, Any]) -> None:
    iterations, candidates, evaluations = tasks
    if kind == "candidate":
        progress.advance(candidates)
    elif kind == "evaluation":
        note = f"{payload.get('objective', '')} = {payload.get('value', 0):.4g}"
        progress.update(evaluations, advance=1, note=note)
    elif kind == "iteration":
        note = f"front {len(payload.get('pareto', []))}, hypervolume {payload.get('hypervolume', 0):.4g}"
        progress.update(iterations, completed=int(payload.get("iteration", 0)) + 1, note=note)
    elif kind in ("evaluation_retry", "evaluation_failed", "failed", "cancelled", "interrupted"):
        progress.console.print(f"[yellow]{kind}[/]: {json.dumps(payload)[:300]}", highlight=False)


def write_search_outputs(
    stub: searcher_pb2_grpc.SearcherStub, search_id: str, out: Path, quiet: bool = False
) -> None:
    """search_state_{k}.csv, pareto_models_iter_{k}/, Pareto-evolution and hypervolume plots."""
    from facenas.search.outputs import write_outputs
    from facenas.search.protoconv import snapshot_from_proto

    export = _call(stub.ExportSearch, searcher_pb2.SearchRef(search_id=search_id), timeout=300)
    written = write_outputs(snapshot_from_proto(export), out)
    if not quiet:
        console.print(f"wrote {len(written)} files to {out}")


def show_pareto(
    stub: searcher_pb2_grpc.SearcherStub, search_id: str, display: Console | None = None
) -> searcher_pb2.ParetoReply:
    """Print the front as a table with every objective; values are never cut, the archid folds if need be."""
    shown = display or console
    reply = _call(stub.GetPareto, searcher_pb2.SearchRef(search_id=search_id))
    table = Table(
        title=f"Pareto front after iteration {reply.iteration} (hypervolume {reply.hypervolume:.4g})"
    )
    names = list(reply.objective_names)
    first = names[0] if names else ""
    rows = [
        (point, [f"{point.objectives[n]:.4g}" if n in point.objectives else "" for n in names])
        for point in sorted(reply.points, key=lambda p: p.objectives.get(first, 0.0))
    ]
    cell = max([9, *(len(v) for _, values in rows for v in values)])
    # columns with padding and borders: the archid stays whole (40 hex) when everything fits on a line
    fits = 43 + 12 + len(names) * (cell + 3) + 1 <= shown.width
    table.add_column("archid", no_wrap=fits, overflow="fold")
    table.add_column("iteration", justify="right")
    for name in names:
        table.add_column(name, justify="right", min_width=cell)
    for point, values in rows:
        table.add_row(point.archid, str(point.iteration), *values)
    shown.print(table)
    return reply


@app.command("list")
@user_errors
def list_searches(searcher: SearcherOpt = DEFAULT_SEARCHER, json_out: JsonOpt = False) -> None:
    """All searches the store holds."""
    reply = _call(_stub(searcher).ListSearches, store_pb2.ListSearchesRequest())
    if json_out:
        data = _dict(reply)
        for s in data.get("searches", []):
            s["search"].pop("config", None)
        print_json(data)
        return
    table = Table(title="searches")
    for column in ("id", "name", "status", "iterations", "evaluated", "hypervolume"):
        table.add_column(column, no_wrap=column == "id")
    for s in reply.searches:
        table.add_row(
            s.search.search_id,
            s.search.name,
            _status(s),
            str(s.iterations_done),
            f"{s.evaluations_done}/{s.candidates}",
            f"{s.hypervolume:.4g}",
        )
    console.print(table)


@app.command("pareto")
@user_errors
def pareto(
    search_id: Annotated[str, typer.Argument(help="Search id.")],
    searcher: SearcherOpt = DEFAULT_SEARCHER,
    json_out: JsonOpt = False,
) -> None:
    """The current Pareto front."""
    stub = _stub(searcher)
    if json_out:
        print_json(_dict(_call(stub.GetPareto, searcher_pb2.SearchRef(search_id=search_id))))
    else:
        show_pareto(stub, search_id)


@app.command("get")
@user_errors
def get(
    search_id: Annotated[str, typer.Argument(help="Search id.")],
    archid: Annotated[str, typer.Argument(help="Architecture id.")],
    out: Annotated[Path | None, typer.Option(help="Write the arch JSON to this file.")] = None,
    searcher: SearcherOpt = DEFAULT_SEARCHER,
    json_out: JsonOpt = False,
) -> None:
    """One architecture of a search: its JSON, parameters and objective values."""
    request = searcher_pb2.GetArchitectureRequest(search_id=search_id, archid=archid)
    reply = _call(_stub(searcher).GetArchitecture, request)
    if out is not None:
        out.write_text(reply.architecture.json, encoding="utf-8")
    if json_out:
        print_json(_dict(reply))
        return
    console.print(
        f"{archid}: {reply.params:,} params, iteration {reply.iteration}, parents {list(reply.parents)}"
    )
    for name, value in reply.objectives.items():
        console.print(f"  {name}: {value:.6g}")


@app.command("cancel")
@user_errors
def cancel(search_id: str, searcher: SearcherOpt = DEFAULT_SEARCHER, json_out: JsonOpt = False) -> None:
    """Cancel a running search (finished evaluations stay in the store)."""
    _print_summary(_call(_stub(searcher).CancelSearch, searcher_pb2.SearchRef(search_id=search_id)), json_out)


@app.command("resume")
@user_errors
def resume(search_id: str, searcher: SearcherOpt = DEFAULT_SEARCHER, json_out: JsonOpt = False) -> None:
    """Resume a search from the store (after a crash, a restart or a cancel)."""
    _print_summary(_call(_stub(searcher).ResumeSearch, searcher_pb2.SearchRef(search_id=search_id)), json_out)


@app.command("outputs")
@user_errors
def outputs(
    search_id: str,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    searcher: SearcherOpt = DEFAULT_SEARCHER,
) -> None:
    """Write Archai's outputs (CSV per iteration, Pareto models, plots) from what the store holds."""
    write_search_outputs(_stub(searcher), search_id, out)


@app.command("train")
@user_errors
def remote_train(
    file: Annotated[Path, typer.Argument(help="Archai arch JSON file (e.g. from `search get --out`).")],
    trainer: Annotated[str, typer.Option("--trainer", envvar="FACENAS_TRAINER", help="Trainer address.")],
    epochs: Annotated[int, typer.Option(min=1, max=10_000)] = 30,
    img_size: Annotated[int, typer.Option(min=16, max=2048, help="Square image side.")] = 256,
    batch_size: Annotated[int, typer.Option(min=1, max=4096)] = 16,
    learning_rate: Annotated[float, typer.Option("--lr", min=1e-8, max=1.0)] = 2e-4,
    name: Annotated[str, typer.Option(help="Output sub-directory on the trainer (default: archid).")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Final training on a trainer service (Archai's train.py, remotely), with per-epoch progress."""
    from facenas.space.hgnet import HgnetSearchSpace
    from facenas.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc

    arch = HgnetSearchSpace().load(file)
    request = trainer_pb2.FullTrainRequest(
        architecture=common_pb2.Architecture(archid=arch.archid, json=arch.to_json()),
        space=common_pb2.SearchSpace(img_width=img_size, img_height=img_size),
        budget=common_pb2.TrainingBudget(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate),
        output_name=name,
    )
    stub = trainer_pb2_grpc.TrainerStub(make_channel(trainer))
    last = None
    try:
        for progress in stub.FullTrain(request):
            last = progress
            if not progress.done and not json_out:
                console.print(
                    f"epoch {progress.epoch}/{progress.epochs}: loss {progress.train_loss:.4f}, "
                    f"val mIOU {progress.val_miou:.4f} (global {progress.val_miou_global:.4f})"
                )
    except grpc.RpcError as err:
        raise error_from_rpc(err) from None
    if last is not None and json_out:
        print_json(_dict(last))
    elif last is not None:
        console.print(f"done: {last.output_dir} (model.onnx: {last.onnx_path})")
