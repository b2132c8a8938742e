"""``facenas search``: a gRPC client of the searcher (start, watch, list, pareto, get, cancel, resume,
outputs, train on a trainer), `search run`, a whole search with local services, and `search validate`,
which checks a config locally."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from facenas.cli.common import (
    SEARCHER_PORT,
    console,
    err_console,
    no_searcher,
    print_json,
    user_errors,
    with_port,
)
from facenas.errors import ConfigError, FacenasError, InvalidInput, Unavailable
from facenas.rpc import security
from facenas.rpc.client import call, make_channel
from facenas.rpc.status import error_from_rpc
from facenas.v1 import searcher_pb2, searcher_pb2_grpc, store_pb2

app = typer.Typer(help="Run and inspect searches through the searcher service.", no_args_is_help=True)

T = TypeVar("T")
SearcherOpt = Annotated[
    str,
    typer.Option(
        "--searcher", envvar="FACENAS_SEARCHER", help=f"Searcher address (host[:port], port {SEARCHER_PORT})."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
DEFAULT_SEARCHER = f"127.0.0.1:{SEARCHER_PORT}"
TRAINER_PORT = 50061


#: the bearer token the searcher's API gets (set by the `search` options, see :func:`_security`)
_session: dict[str, str | None] = {"token": None}
#: the searcher this command dialled: its address and channel (see :func:`_unreachable`)
_dialled: dict[str, tuple[str, grpc.Channel]] = {}


def _opt(flag: str, envvar: str, help: str) -> Any:
    return typer.Option(flag, envvar=envvar, help=help, show_default=False)


@app.callback()
@user_errors
def _security(
    api_token: Annotated[
        str, _opt("--api-token", security.ENV_TOKEN, "Bearer token of the searcher's API.")
    ] = "",
    api_token_file: Annotated[
        str, _opt("--api-token-file", security.ENV_TOKEN_FILE, "A file holding that token.")
    ] = "",
    tls_cert: Annotated[str, _opt("--tls-cert", security.ENV_CERT, "mTLS: client certificate (PEM).")] = "",
    tls_key: Annotated[str, _opt("--tls-key", security.ENV_KEY, "mTLS: its private key (PEM).")] = "",
    tls_ca: Annotated[str, _opt("--tls-ca", security.ENV_CA, "mTLS: CA of the servers (PEM).")] = "",
    tls_dir: Annotated[str, _opt("--tls-dir", security.ENV_DIR, "mTLS: tls.crt, tls.key, ca.crt here.")] = "",
    tls_server_name: Annotated[
        str, _opt("--tls-server-name", security.ENV_SERVER_NAME, "mTLS: name in the server's certificate.")
    ] = "",
) -> None:
    """Security of the connections to the services (also FACENAS_API_TOKEN and FACENAS_TLS_* variables)."""
    problems = []
    try:
        _session["token"] = security.load_token(api_token, api_token_file)
    except ConfigError as err:
        problems += err.problems
    try:
        security.use_client_tls(
            security.load_tls(tls_cert, tls_key, tls_ca, tls_dir, tls_server_name or None)
        )
    except ConfigError as err:
        problems += err.problems
    if problems:
        raise ConfigError(problems)


def _stub(address: str) -> searcher_pb2_grpc.SearcherStub:
    """A stub of the searcher at ``address`` (its default port added when it names none)."""
    target = with_port(address, SEARCHER_PORT, "--searcher")
    channel = make_channel(target, token=_session["token"])
    _dialled["searcher"] = (target, channel)
    return searcher_pb2_grpc.SearcherStub(channel)


def _call(method: Callable[..., T], request: Any, timeout: float = 60.0) -> T:
    try:
        return call(method, request, timeout)
    except Unavailable as err:
        raise _unreachable(err) from None


def _unreachable(err: FacenasError) -> FacenasError:
    """``err``, or, when the dialled searcher never answered (nothing listens there, or the connection
    is refused), the error that says so and what to do. A searcher that answered UNAVAILABLE itself
    (its store is out) keeps its own message."""
    if not isinstance(err, Unavailable) or "searcher" not in _dialled:
        return err
    target, channel = _dialled["searcher"]
    try:
        grpc.channel_ready_future(channel).result(timeout=1.0)
    except grpc.FutureTimeoutError:
        return no_searcher(target, str(err))
    return err


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
    if summary.cache_hits:
        done += f" ({summary.cache_hits} evaluations from the store's cache)"
    (display or console).print(
        f"{s.search_id} [bold]{_status(summary)}[/]  {s.name}: {summary.iterations_done} iterations, "
        f"{done}, hypervolume {summary.hypervolume:.4g}"
        + (f"\n  error: {s.error}" if s.error else "")
        + (f"\n  [yellow]{summary.waiting}[/]" if summary.waiting else "")
    )


def _read_config(config: Path) -> str:
    try:
        return config.read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidInput(f"cannot read {config}: {err.strerror or err}") from err


@app.command("validate")
@user_errors
def validate(
    config: Annotated[Path, typer.Argument(help="Search config (Archai YAML plus facenas keys).")],
    json_out: JsonOpt = False,
) -> None:
    """Check a search config here, with no searcher: what it will run and how many evaluations to
    expect, or every problem at once (exit status 2)."""
    from facenas.search.config import parse_search_config

    try:
        summary = parse_search_config(_read_config(config)).summary()
    except ConfigError as err:
        if not json_out:
            raise
        print_json({"valid": False, "problems": err.problems})
        raise typer.Exit(code=2) from None
    if json_out:
        print_json({"valid": True, **summary})
        return
    console.print(_describe_config(summary), highlight=False)


def _describe_config(s: dict[str, Any]) -> str:
    """``search validate``'s lines for a :meth:`~facenas.search.config.SearchConfig.summary`."""
    p, b, c = s["populations"], s["budget"], s["constraints"]
    amount = f"{b['steps']} steps" if b["steps"] else f"{b['epochs']:g} epoch(s)"
    evals = f", {b['max_eval_batches']} eval batches" if b["max_eval_batches"] else ""
    shown = ("num_iters", "init_num_models", "max_unseen_population")
    proposals = ", ".join(f"{k} {v}" for k, v in p.items() if k not in shown)
    objectives = ", ".join(
        f"{o['name']} ({o['direction']}" + (f", <= {o['constraint'][1]:g}" if o["constraint"] else "") + ")"
        for o in s["objectives"]
    )
    return "\n".join(
        [
            f"valid: {s['algorithm']} on the {s['target']} target",
            f"  populations: {p['init_num_models']} initial models, then {p['max_unseen_population']} per "
            f"iteration, {p['num_iters']} iterations ({proposals})",
            f"  budget: {amount}, batch {b['batch_size']}, lr {b['learning_rate']:g}, seed {b['seed']}"
            f"{evals}, images {b['img_size'][0]}x{b['img_size'][1]}",
            f"  parameters: {c['min_parameters']:g} to {c['max_parameters']:g}",
            f"  objectives: {objectives}",
            f"  expect: {s['candidates']} candidates, at most {s['evaluations']} evaluations (fewer when a "
            "constraint rejects a candidate early or the store already holds a result)",
        ]
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
    text = _read_config(config)
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


@app.command("run")
@user_errors
def run_local(
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output-dir", "--output_dir", help="Store, logs and Archai's outputs; rerun to resume."
        ),
    ],
    config: Annotated[
        Path | None, typer.Argument(help="Search config (default: Archai's cpu_search.yaml).")
    ] = None,
    dataset_dir: Annotated[
        Path | None,
        typer.Option(
            "--dataset-dir",
            "--dataset_dir",
            help="Face Synthetics-layout directory (required, except with --backend sim).",
        ),
    ] = None,
    search_config: Annotated[
        Path | None,
        typer.Option("--search-config", "--search_config", help="Same as CONFIG (Archai's flag)."),
    ] = None,
    trainers: Annotated[
        int | None, typer.Option(min=1, max=64, help="CPU trainer processes (GPU hosts: one per GPU).")
    ] = None,
    device: Annotated[
        str, typer.Option(help="auto (every GPU, else the CPU), cpu, cuda or cuda:N,...")
    ] = "auto",
    jobs_per_device: Annotated[
        int | None, typer.Option(min=1, max=64, help="Trainings per device (default 2 per GPU, 1 on CPU).")
    ] = None,
    gpus_per_job: Annotated[
        float | None,
        typer.Option(
            "--gpus-per-job", "--gpus_per_job", min=0.01, max=1.0, help="Archai's: 0.5 = 2 per GPU."
        ),
    ] = None,
    serial_training: Annotated[
        bool, typer.Option("--serial-training", "--serial_training", help="One training at a time.")
    ] = False,
    name: Annotated[str, typer.Option(help="Display name (default: the output directory's).")] = "",
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Validation split (Archai: 0.02; test is 0.10).")
    ] = 0.02,
    data_cache: Annotated[
        bool, typer.Option(help="Decode the dataset once into a uint8 cache first (else PNGs every time).")
    ] = True,
    backend: Annotated[
        str,
        typer.Option(
            help="real: train and measure; sim: simulated values (labelled, keyed apart), no dataset "
            "needed -- try a config or an algorithm in minutes."
        ),
    ] = "real",
    sim_delay: Annotated[
        str,
        typer.Option(
            help="With --backend sim: seconds per evaluation, uniform:LOW,HIGH or lognormal:MEDIAN,SIGMA."
        ),
    ] = "0",
    sim_seed: Annotated[
        int, typer.Option(min=0, max=2**31 - 1, help="With --backend sim: the values' seed.")
    ] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object at the end.")] = False,
) -> None:
    """Run a search on your own data with local services (Archai's search.py); the same command resumes it.

    With --backend sim every objective is simulated instead: see the README's "Trying a config in minutes"."""
    from facenas.localrun import LocalRunSettings, run_local_search
    from facenas.space.params import default_config_text

    if config is not None and search_config is not None and config != search_config:
        raise InvalidInput("CONFIG and --search-config name different files; give one")
    path = config or search_config
    try:
        text = path.read_text(encoding="utf-8") if path is not None else default_config_text("cpu")
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {err.strerror or err}") from err
    if jobs_per_device is not None and gpus_per_job is not None:
        raise InvalidInput("--jobs-per-device and --gpus-per-job: give one")
    if gpus_per_job is not None:
        jobs_per_device = max(1, round(1 / gpus_per_job))
    settings = LocalRunSettings(
        text,
        dataset_dir,
        output_dir,
        trainers,
        device,
        jobs_per_device,
        serial_training,
        name,
        val_fraction,
        data_cache,
        backend,
        sim_delay,
        sim_seed,
    )
    settings.check()  # a missing dataset or a bad --sim-delay, before anything starts
    display = err_console if json_out else Console(width=max(console.width, 120))
    try:
        with _interrupted_by_signals():
            result = run_local_search(settings, display)
    except KeyboardInterrupt:
        display.print(f"interrupted; every service stopped. Run the same command to resume from {output_dir}")
        raise typer.Exit(code=130) from None
    if json_out:
        print_json(result.to_dict())


@contextlib.contextmanager
def _interrupted_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP stop a local run like Ctrl-C does: its services are stopped, not orphaned."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
        running = RunningBars(progress)
        try:
            for event in stub.WatchSearch(searcher_pb2.WatchSearchRequest(search_id=search_id)):
                payload = json.loads(event.payload_json or "{}")
                if json_out:
                    print_json({"seq": event.seq, "kind": event.kind, **payload})
                if event.kind == "progress":
                    running.show(payload.get("running", []))
                _advance(progress, (iterations, candidates, evaluations), event.kind, payload)
        except grpc.RpcError as err:
            raise _unreachable(error_from_rpc(err)) from None
        running.show([])
    summary = _call(stub.GetSearch, searcher_pb2.SearchRef(search_id=search_id))
    if out is not None:
        write_search_outputs(stub, search_id, out, quiet=json_out, display=display)
    if not json_out:
        show_pareto(stub, search_id, display)
    _print_summary(summary, json_out, display)


#: Short names of the objectives for one progress line per running evaluation.
_SHORT = {
    "Partial Training Val. IOU": "training",
    "CPU ONNX Latency (s)": "cpu latency",
    "SNP Quantized Latency (s)": "snp latency",
    "SNP Quantized Val. IOU": "int8 IOU",
}


class RunningBars:
    """One bar per running evaluation (step/total on its replica, loss, ETA), from ``progress`` events."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[tuple[str, str], Any] = {}

    def show(self, running: list[dict[str, Any]]) -> None:
        seen = set()
        for item in running:
            key = (str(item.get("archid", "")), str(item.get("objective", "")))
            seen.add(key)
            description = f"  {key[0][:8]} {_SHORT.get(key[1], key[1])} @ {item.get('replica', '')}"
            total = int(item.get("total") or 0) or None
            note = _progress_note(item)
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(description, total=total, note=note)
            self.progress.update(
                self.tasks[key],
                description=description,
                total=total,
                completed=int(item.get("step") or 0),
                note=note,
            )
        for key in [k for k in self.tasks if k not in seen]:
            self.progress.remove_task(self.tasks.pop(key))


def _progress_note(item: dict[str, Any]) -> str:
    """``queued (#2)``, or the phase, last loss and time left, e.g. ``train loss 0.812 ETA 3m05s``."""
    if item.get("state") == "queued":
        return f"queued (#{item.get('queue_position') or '?'})"
    parts = [str(item.get("phase") or "")]
    if isinstance(item.get("loss"), int | float):
        parts.append(f"loss {item['loss']:.3f}")
    if isinstance(item.get("eta_s"), int | float):
        minutes, seconds = divmod(int(item["eta_s"]), 60)
        parts.append(f"ETA {minutes}m{seconds:02d}s")
    if item.get("attached"):
        parts.append("(joined)")
    return " ".join(p for p in parts if p)


def _advance(progress: Progress, tasks: tuple[Any, Any, Any], kind: str, payload: dict[str, Any]) -> None:
    iterations, candidates, evaluations = tasks
    if kind == "candidate":
        progress.advance(candidates)
    elif kind == "evaluation":
        note = f"{payload.get('objective', '')} = {payload.get('value', 0):.4g}"
        progress.update(evaluations, advance=1, note=note)
    elif kind == "evaluation_cached":
        value = f"{payload.get('objective', '')} = {payload.get('value', 0):.4g}"
        note = f"{value} (cached; {payload.get('cache_hits', '?')} cache hits)"
        progress.update(evaluations, advance=1, note=note)
    elif kind == "iteration":
        note = f"front {len(payload.get('pareto', []))}, hypervolume {payload.get('hypervolume', 0):.4g}"
        progress.update(iterations, completed=int(payload.get("iteration", 0)) + 1, note=note)
    elif kind in (
        "evaluation_retry",
        "evaluation_failed",
        "failed",
        "cancelled",
        "interrupted",
        "waiting",
        "waited",
        "space_exhausted",
    ):
        progress.console.print(f"[yellow]{kind}[/]: {json.dumps(payload)[:300]}", highlight=False)


def write_search_outputs(
    stub: searcher_pb2_grpc.SearcherStub,
    search_id: str,
    out: Path,
    quiet: bool = False,
    display: Console | None = None,
) -> list[Path]:
    """search_state_{k}.csv, pareto_models_iter_{k}/, Pareto-evolution and hypervolume plots; the files
    written."""
    from facenas.search.outputs import write_outputs
    from facenas.search.protoconv import export_search, snapshot_from_proto

    export = export_search(lambda request: _call(stub.ExportSearch, request, timeout=120), search_id)
    written = write_outputs(snapshot_from_proto(export), out)
    if not quiet:
        (display or console).print(f"wrote {len(written)} files to {out}")
    return written


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


def _list_all(stub: searcher_pb2_grpc.SearcherStub) -> searcher_pb2.ListSearchesReply:
    """Every page of ListSearches, as one reply."""
    reply = searcher_pb2.ListSearchesReply()
    seen: set[str] = set()
    page = _call(stub.ListSearches, store_pb2.ListSearchesRequest())
    while True:
        reply.searches.extend(page.searches)
        token = page.next_page_token
        if not token or token in seen:
            return reply
        seen.add(token)
        page = _call(stub.ListSearches, store_pb2.ListSearchesRequest(page_token=token))


@app.command("list")
@user_errors
def list_searches(searcher: SearcherOpt = DEFAULT_SEARCHER, json_out: JsonOpt = False) -> None:
    """All searches the store holds."""
    reply = _list_all(_stub(searcher))
    if json_out:
        data = _dict(reply)
        for s in data.get("searches", []):
            s["search"].pop("config", None)
        print_json(data)
        return
    table = Table(title="searches")
    for column in ("id", "name", "status", "iterations", "evaluated", "cache hits", "hypervolume"):
        table.add_column(column, no_wrap=column == "id")
    for s in reply.searches:
        table.add_row(
            s.search.search_id,
            s.search.name,
            _status(s),
            str(s.iterations_done),
            f"{s.evaluations_done}/{s.candidates}",
            str(s.cache_hits),
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
    archid: Annotated[
        str, typer.Argument(help="Architecture id, or its first characters (unique within the search).")
    ],
    out: Annotated[Path | None, typer.Option(help="Write the arch JSON to this file.")] = None,
    searcher: SearcherOpt = DEFAULT_SEARCHER,
    json_out: JsonOpt = False,
) -> None:
    """One architecture of a search (by archid or a unique prefix): its JSON, parameters and values."""
    request = searcher_pb2.GetArchitectureRequest(search_id=search_id, archid=archid)
    reply = _call(_stub(searcher).GetArchitecture, request)
    if out is not None:
        out.write_text(reply.architecture.json, encoding="utf-8")
    if json_out:
        print_json(_dict(reply))
        return
    console.print(
        f"{reply.architecture.archid}: {reply.params:,} params, iteration {reply.iteration}, "
        f"parents {list(reply.parents)}"
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
    json_out: JsonOpt = False,
) -> None:
    """Write Archai's outputs (CSV per iteration, Pareto models, plots) from what the store holds."""
    written = write_search_outputs(_stub(searcher), search_id, out, quiet=json_out)
    if json_out:
        print_json({"search_id": search_id, "out": str(out), "files": [str(p) for p in written]})


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
    stub = trainer_pb2_grpc.TrainerStub(make_channel(with_port(trainer, TRAINER_PORT, "--trainer")))
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
