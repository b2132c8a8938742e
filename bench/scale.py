"""The system at scale: N evaluations through the real searcher and store processes, with sim workers.

Starts a store (``--store-url``; a fresh SQLite file by default), K simulated trainers and K simulated
latency_cpu replicas (``--backend sim --sim-delay S``, capacity 1 each) and a searcher, as separate
processes on loopback, then runs M concurrent ``random_search`` searches (a cpu target: 2 objectives per
candidate, the latency constraint lifted so that every candidate gets both) of N evaluations in all,
split evenly between the searches. Prints, measured in this one run:

* **evaluations/s**: evaluations finished / wall time from the first StartSearch to the last search's end;
* **orchestration overhead per evaluation** (p50, p99): the searcher's own ``overhead_s`` of each
  ``evaluation`` event -- the time from submitting the job to having its result, minus the job's time on
  its worker (``finished_at - created_at`` there, so the sim delay and any queueing on the worker are
  excluded), plus handing the result to the search's store writer. The store write itself runs off the
  evaluation's path (the writer makes results durable in order, a batch at a time, at most 50 ms later):
  its time is ``store_write_ms`` (p50, p99). Evaluations that joined another search's job are left
  out (their overhead is not measured). Proposal and iteration bookkeeping between evaluations are not
  in it; they show in evaluations/s against the ideal ``replicas / delay``;
* **RSS** (``VmRSS``) of the searcher and store processes after warm-up (once 10% of the evaluations
  are done) and at the end (after the reads below);
* **reads at the end**: GetSearch, GetPareto and GetArchitecture (its newest candidate) of every
  search and ListSearches, each repeated ``--read-repeats`` times (p50 and max), every page of each
  search's ExportSearch (``export_ms_max``: the slowest whole export; ``export_page_ms_max``: the
  slowest page; ``read_ms_max`` is the slowest call of them all, export pages included, and
  ``slowest_read`` names it), and the time to replay each search's WatchSearch from its first event;
  a read that fails is reported in ``read_errors``, not raised;
* **fairness**: each search's finish time from the first StartSearch (``finish_s``) and the ratio of
  the last to the first (``finish_spread``; 1.0 when they end together, large when one starved);
* **against the ideal**: with a fixed ``--delay`` D, the replicas' slots (K trainers + K latency_cpu)
  kept busy end the evaluations in ``ideal_s`` = N x D / 2K; ``over_ideal_pct`` is the wall time past
  it (Ray Tune's 10,000 one-second trials on 16 CPUs: 715 s against 625 s, 14 %);
* **the store's size on disk**: the SQLite file with its WAL, or the store's PostgreSQL schema
  (``pg_total_relation_size`` of its tables: data, indexes and TOAST).

A store that already holds results for the same architectures, budget and ``--sim-seed`` serves them
from its cache (counted as ``evaluations_cached``): use a fresh store, or another ``--sim-seed``.

    .venv/bin/python bench/scale.py --evaluations 2000 [--replicas 8] [--delay 0.05] [--searches 1] \\
        [--store-url postgresql+psycopg://user@host/db?options=-csearch_path%3Dmyschema] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy.exc import SQLAlchemyError

from facenas.errors import InvalidInput
from facenas.launcher import LocalCluster, ServiceProcess
from facenas.rpc.security import token_from_env
from facenas.sim.delay import DelayError, parse_delay
from facenas.v1 import searcher_pb2, searcher_pb2_grpc, store_pb2

#: Algorithms a scale run can use: Archai's barrier random search, or our asynchronous evolution.
ALGORITHMS = ("random_search", "async_evolution_pareto")
#: Objectives of a cpu-target search: CPU latency, then the partial training IOU.
OBJECTIVES = 2
#: RSS "after warm-up" is taken once this fraction of the evaluations is done.
WARM_FRACTION = 0.1
TERMINAL = ("completed", "cancelled", "failed", "interrupted")
#: The searcher's reads are single calls with this deadline (no retries: their latency is the figure).
READ_TIMEOUT_S = 60.0

CONFIG = """
search:
  search_space:
    name: hgnet
    params: {{num_classes: 18, img_size: [64, 64], in_channels: 3, op_subset: [conv3x3, conv5x5, conv7x7],
              stem_strides: [2], num_blocks: 5, downsample_block_max_ops: 4, skip_block_max_ops: 2,
              upsample_block_max_ops: 4, post_upsample_max_ops: 2}}
  algorithm:
    name: {algorithm}
    params: {{num_iters: {iters}, init_num_models: {init}, max_unseen_population: {population}, seed: {seed}}}
  target: {{name: cpu}}
training: {{steps: 100, batch_size: 8}}
constraints: {{min_parameters: 0, max_latency_s: 3600}}
evaluation: {{timeout_s: {timeout}}}
"""


@dataclass(frozen=True)
class ScaleSettings:
    """What one scale run is asked for."""

    evaluations: int  # in all, split evenly between the searches
    store_url: str | None = None  # None: a fresh SQLite file in the work directory
    replicas: int = 1  # simulated trainers, and as many simulated latency_cpu replicas
    delay: str = "0"  # the workers' --sim-delay
    searches: int = 1
    population: int = 50  # max_unseen_population (candidates per iteration)
    algorithm: str = "random_search"  # or async_evolution_pareto: no barrier between iterations
    sim_seed: int = 0
    read_repeats: int = 5
    timeout_s: float = 3600.0  # the whole search phase
    workdir: Path | None = None  # None: a temporary directory, removed afterwards

    def check(self) -> None:
        """InvalidInput naming the first setting no run can start with."""
        if self.searches < 1:
            raise InvalidInput(f"--searches: {self.searches} must be at least 1")
        if self.evaluations < OBJECTIVES * self.searches:
            raise InvalidInput(
                f"--evaluations: {self.evaluations} leaves a search without a candidate "
                f"({OBJECTIVES} evaluations each); use at least {OBJECTIVES * self.searches} "
                f"with --searches {self.searches}"
            )
        for name, value in (("--replicas", self.replicas), ("--population", self.population)):
            if value < 1:
                raise InvalidInput(f"{name}: {value} must be at least 1")
        if self.read_repeats < 1:
            raise InvalidInput(f"--read-repeats: {self.read_repeats} must be at least 1")
        if not self.timeout_s > 0:
            raise InvalidInput(f"--timeout-s: {self.timeout_s} must be positive")
        try:
            parse_delay(self.delay)
        except DelayError as err:
            raise InvalidInput(f"--delay: {err}") from None


@dataclass(frozen=True)
class SearchPlan:
    """One random_search's budget: ``init + (iters - 1) * population`` candidates."""

    candidates: int
    init: int
    iters: int
    population: int

    @property
    def evaluations(self) -> int:
        return self.candidates * OBJECTIVES


def plan_searches(evaluations: int, searches: int, population: int) -> list[SearchPlan]:
    """Budgets of ``searches`` searches with ``evaluations`` in all (rounded up to whole candidates),
    split as evenly as whole candidates allow."""
    candidates = math.ceil(evaluations / OBJECTIVES)
    plans = []
    for i in range(searches):
        share = candidates // searches + (1 if i < candidates % searches else 0)
        pop = min(population, share)
        iters = math.ceil(share / pop)
        plans.append(SearchPlan(share, share - (iters - 1) * pop, iters, pop))
    return plans


def search_config(plan: SearchPlan, seed: int, timeout_s: float, algorithm: str = "random_search") -> str:
    return CONFIG.format(
        algorithm=algorithm,
        iters=plan.iters,
        init=plan.init,
        population=plan.population,
        seed=seed,
        timeout=max(1, math.ceil(timeout_s)),
    )


def rss_mb(pid: int) -> float:
    """A process's resident set size (``VmRSS``) in MB (10^6 bytes); NaN when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except (OSError, ValueError, IndexError):
        pass
    return math.nan


def store_size_bytes(url: str) -> int:
    """The store's size on disk: the SQLite file with its ``-wal`` and ``-shm``, or the total size of
    the tables (indexes and TOAST included) in the PostgreSQL schema the URL selects."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if "://" not in url:  # a path, as the store takes it
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        path = Path(parsed.database or "")
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        return sum(f.stat().st_size for f in files if f.exists())
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            total = conn.execute(
                text(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return int(total)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class ReadTiming:
    """Latencies of one kind of read at the end (ms)."""

    calls: int
    p50_ms: float
    max_ms: float


@dataclass(frozen=True)
class ScaleResult:
    """What a scale run measured (see the module docstring for each figure)."""

    evaluations_requested: int
    evaluations: int  # evaluation events: results run and stored in this run
    evaluations_cached: int
    evaluations_failed: int
    candidates: int
    searches: int
    statuses: list[str]
    replicas: int
    delay: str
    store: str  # "sqlite" or "postgresql"
    startup_s: float
    wall_s: float
    evaluations_per_s: float
    overhead_ms_p50: float
    overhead_ms_p99: float
    store_write_ms_p50: float
    store_write_ms_p99: float
    searcher_rss_mb_warm: float
    searcher_rss_mb_end: float
    searcher_rss_mb_peak: float
    store_rss_mb_warm: float
    store_rss_mb_end: float
    store_rss_mb_peak: float
    reads: dict[str, ReadTiming]
    read_ms_max: float
    watch_replay_ms_max: float
    watch_replay_events: int
    store_bytes: int
    read_errors: list[str] = field(default_factory=list)
    slowest_read: str = ""  # which call took read_ms_max (an export page: which search and page)
    export_ms_max: float = math.nan
    export_page_ms_max: float = math.nan
    export_pages: int = 0
    finish_s: list[float] = field(default_factory=list)
    finish_spread: float = math.nan
    ideal_s: float = math.nan
    over_ideal_pct: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["store_mb"] = self.store_bytes / 1e6
        for name, timing in self.reads.items():
            out[f"{name}_ms_p50"], out[f"{name}_ms_max"] = timing.p50_ms, timing.max_ms
        out["finish_s"] = [_json_number(v) for v in self.finish_s]
        return {k: _json_number(v) if isinstance(v, float) else v for k, v in out.items()}


def _json_number(value: float) -> float | None:
    """Rounded to the microsecond or kB; None for a figure that could not be measured (NaN)."""
    return None if math.isnan(value) else round(value, 3)


class _Tracker:
    """Counts the events of every watched search; samples RSS after warm-up and at each evaluation."""

    def __init__(self, warm_at: int, searcher: ServiceProcess, store: ServiceProcess) -> None:
        self.warm_at = warm_at
        self.pids = {"searcher": searcher.proc.pid, "store": store.proc.pid}
        self.lock = threading.Lock()
        self.overheads: list[float] = []
        self.store_writes: list[float] = []
        self.counts = {"evaluation": 0, "evaluation_cached": 0, "evaluation_failed": 0}
        self.warm: dict[str, float] = {}
        self.peak = {name: 0.0 for name in self.pids}
        self.ended = 0.0
        self.finished: dict[str, float] = {}  # search id -> monotonic time of its end event

    def sample(self) -> dict[str, float]:
        rss = {name: rss_mb(pid) for name, pid in self.pids.items()}
        for name, value in rss.items():
            self.peak[name] = max(self.peak[name], value)
        return rss

    def on_event(self, kind: str, payload: dict[str, Any]) -> None:
        with self.lock:
            if kind in self.counts:
                self.counts[kind] += 1
            if kind != "evaluation":
                return
            if not payload.get("attached") and "overhead_s" in payload:
                self.overheads.append(float(payload["overhead_s"]))
                self.store_writes.append(float(payload.get("store_s", 0.0)))
            rss = self.sample()
            if not self.warm and self.counts["evaluation"] >= self.warm_at:
                self.warm = rss


def _watch(stub: searcher_pb2_grpc.SearcherStub, search_id: str, tracker: _Tracker, deadline: float) -> str:
    """Follow one search to its end; its last event's kind (or the error that ended the stream)."""
    last = ""
    try:
        request = searcher_pb2.WatchSearchRequest(search_id=search_id)
        for event in stub.WatchSearch(request, timeout=max(1.0, deadline - time.monotonic())):
            if event.kind == "progress":
                continue
            tracker.on_event(event.kind, json.loads(event.payload_json or "{}"))
            last = event.kind
            if last in TERMINAL:
                with tracker.lock:
                    tracker.finished[search_id] = time.monotonic()
    except grpc.RpcError as err:
        return f"watch error: {err.code().name}: {err.details()}"
    with tracker.lock:
        tracker.ended = max(tracker.ended, time.monotonic())
    return last if last in TERMINAL else f"stream ended after {last or 'no event'}"


def _timed(
    name: str,
    method: Callable[..., object],
    request: object,
    timings: dict[str, list[float]],
    errors: list[str],
) -> None:
    """One call of a unary read, no retries: its latency into ``timings``, or its failure into ``errors``."""
    began = time.perf_counter()
    try:
        method(request, timeout=READ_TIMEOUT_S)
    except grpc.RpcError as err:
        errors.append(f"{name}: {err.code().name}: {(err.details() or '')[:200]}")
        return
    timings.setdefault(name, []).append(1e3 * (time.perf_counter() - began))


@dataclass
class _Reads:
    timings: dict[str, ReadTiming]
    replay_ms: float
    replay_events: int
    export_ms: float
    export_page_ms: float
    export_pages: int
    errors: list[str]
    slowest_page: str


def _reads(stub: searcher_pb2_grpc.SearcherStub, search_ids: list[str], repeats: int) -> _Reads:
    """Latencies of the searcher's reads at the end (see the module docstring)."""
    timings: dict[str, list[float]] = {}
    errors: list[str] = []
    newest: dict[str, str] = {}
    for search_id in search_ids:
        try:
            newest[search_id] = _newest_candidate(stub, search_id)
        except grpc.RpcError as err:
            errors.append(f"export: {err.code().name}: {(err.details() or '')[:200]}")
    for _ in range(repeats):
        for search_id in search_ids:
            ref = searcher_pb2.SearchRef(search_id=search_id)
            _timed("get_search", stub.GetSearch, ref, timings, errors)
            _timed("get_pareto", stub.GetPareto, ref, timings, errors)
            if search_id in newest:
                one = searcher_pb2.GetArchitectureRequest(search_id=search_id, archid=newest[search_id])
                _timed("get_architecture", stub.GetArchitecture, one, timings, errors)
        _timed("list_searches", stub.ListSearches, store_pb2.ListSearchesRequest(), timings, errors)
    export_ms = page_ms = 0.0
    pages = 0
    slowest_page = ""
    for n, search_id in enumerate(search_ids):
        request = searcher_pb2.ExportSearchRequest(search_id=search_id)
        began = time.perf_counter()
        try:
            for number in itertools.count(1):
                page_began = time.perf_counter()
                page = stub.ExportSearch(request, timeout=READ_TIMEOUT_S)
                took = 1e3 * (time.perf_counter() - page_began)
                if took > page_ms:
                    page_ms, slowest_page = took, f"export_page (search {n + 1}, page {number})"
                pages += 1
                if not page.next_page_token:
                    break
                request.page_token = page.next_page_token
        except grpc.RpcError as err:
            errors.append(f"export: {err.code().name}: {(err.details() or '')[:200]}")
            continue
        export_ms = max(export_ms, 1e3 * (time.perf_counter() - began))
    replay_ms, replay_events = 0.0, 0
    for search_id in search_ids:
        watch = searcher_pb2.WatchSearchRequest(search_id=search_id, after_seq=0)
        began = time.perf_counter()
        try:
            events = sum(1 for _ in stub.WatchSearch(watch, timeout=READ_TIMEOUT_S))
        except grpc.RpcError as err:
            errors.append(f"watch_replay: {err.code().name}: {(err.details() or '')[:200]}")
            continue
        replay_ms = max(replay_ms, 1e3 * (time.perf_counter() - began))
        replay_events += events
    reads = {
        name: ReadTiming(len(values), percentile(values, 50), max(values)) for name, values in timings.items()
    }
    return _Reads(reads, replay_ms, replay_events, export_ms, page_ms, pages, errors, slowest_page)


def _newest_candidate(stub: searcher_pb2_grpc.SearcherStub, search_id: str) -> str:
    """The archid of the search's last candidate (from the last page of its export)."""
    request = searcher_pb2.ExportSearchRequest(search_id=search_id, page_size=1000)
    last = ""
    while True:
        page = stub.ExportSearch(request, timeout=READ_TIMEOUT_S)
        if page.candidates:
            last = page.candidates[-1].archid
        if not page.next_page_token:
            return last
        request.page_token = page.next_page_token


@contextmanager
def _workdir(settings: ScaleSettings) -> Iterator[Path]:
    if settings.workdir is not None:
        settings.workdir.mkdir(parents=True, exist_ok=True)
        yield settings.workdir.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="facenas-scale-") as tmp:
        yield Path(tmp)


def _start(cluster: LocalCluster, settings: ScaleSettings, store_url: str) -> dict[str, ServiceProcess]:
    """The store, K sim trainers, K sim latency_cpu replicas and the searcher."""
    store = cluster.start("store", ["--url", store_url])
    sim = ["--backend", "sim", "--sim-delay", settings.delay, "--sim-seed", str(settings.sim_seed)]
    trainers = [
        cluster.start("trainer", [*sim, "--capacity", "1"], name=f"trainer-{i + 1}")
        for i in range(settings.replicas)
    ]
    latency = [
        cluster.start("latency_cpu", sim, name=f"latency_cpu-{i + 1}") for i in range(settings.replicas)
    ]
    workers = ["--trainer", ",".join(t.address for t in trainers)]
    workers += ["--latency-cpu", ",".join(r.address for r in latency)]
    searcher = cluster.start("searcher", ["--store", store.address, *workers])
    return {"store": store, "searcher": searcher}


def run_scale(settings: ScaleSettings) -> ScaleResult:
    """Start the system, run the searches to their end, measure, stop everything."""
    settings.check()
    plans = plan_searches(settings.evaluations, settings.searches, settings.population)
    expected = sum(p.evaluations for p in plans)
    began = time.monotonic()
    with _workdir(settings) as workdir:
        store_url = settings.store_url or f"sqlite:///{workdir / 'store.db'}"
        with LocalCluster(workdir / "cluster") as cluster:
            processes = _start(cluster, settings, store_url)
            startup_s = time.monotonic() - began
            token = token_from_env(cluster.env)
            stub = searcher_pb2_grpc.SearcherStub(cluster.channel(processes["searcher"].address, token))
            tracker = _Tracker(
                max(1, math.ceil(WARM_FRACTION * expected)), processes["searcher"], processes["store"]
            )
            started = time.monotonic()
            deadline = started + settings.timeout_s
            search_ids = [
                stub.StartSearch(
                    searcher_pb2.StartSearchRequest(
                        config=search_config(
                            plan, settings.sim_seed * 1000 + i, settings.timeout_s, settings.algorithm
                        ),
                        name=f"scale-{i + 1}",
                    ),
                    timeout=READ_TIMEOUT_S,
                ).search.search_id
                for i, plan in enumerate(plans)
            ]
            statuses: list[str] = [""] * len(search_ids)

            def follow(i: int) -> None:
                statuses[i] = _watch(stub, search_ids[i], tracker, deadline)

            threads = [threading.Thread(target=follow, args=(i,)) for i in range(len(search_ids))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall_s = (tracker.ended or time.monotonic()) - started
            warm = tracker.warm or tracker.sample()
            read = _reads(stub, search_ids, settings.read_repeats)
            reads, errors = read.timings, read.errors
            finish_s = [tracker.finished.get(s, math.nan) - started for s in search_ids]
            end = tracker.sample()
            try:
                size = store_size_bytes(store_url)
            except (OSError, SQLAlchemyError) as err:
                errors.append(f"store size: {str(err)[:200]}")
                size = -1
    done = tracker.counts["evaluation"]
    delay = parse_delay(settings.delay)
    ideal = done * delay.a / (2 * settings.replicas) if delay.kind == "fixed" else math.nan
    return ScaleResult(
        evaluations_requested=settings.evaluations,
        evaluations=done,
        evaluations_cached=tracker.counts["evaluation_cached"],
        evaluations_failed=tracker.counts["evaluation_failed"],
        candidates=sum(p.candidates for p in plans),
        searches=len(plans),
        statuses=statuses,
        replicas=settings.replicas,
        delay=settings.delay,
        store="sqlite" if store_url.startswith("sqlite") or "://" not in store_url else "postgresql",
        startup_s=startup_s,
        wall_s=wall_s,
        evaluations_per_s=done / wall_s if wall_s > 0 else math.nan,
        overhead_ms_p50=1e3 * percentile(tracker.overheads, 50),
        overhead_ms_p99=1e3 * percentile(tracker.overheads, 99),
        store_write_ms_p50=1e3 * percentile(tracker.store_writes, 50),
        store_write_ms_p99=1e3 * percentile(tracker.store_writes, 99),
        searcher_rss_mb_warm=warm["searcher"],
        searcher_rss_mb_end=end["searcher"],
        searcher_rss_mb_peak=tracker.peak["searcher"],
        store_rss_mb_warm=warm["store"],
        store_rss_mb_end=end["store"],
        store_rss_mb_peak=tracker.peak["store"],
        reads=reads,
        read_ms_max=max([*(t.max_ms for t in reads.values()), read.export_page_ms], default=math.nan),
        slowest_read=max(
            [*((t.max_ms, name) for name, t in reads.items()), (read.export_page_ms, read.slowest_page)],
            default=(math.nan, ""),
        )[1],
        watch_replay_ms_max=read.replay_ms,
        watch_replay_events=read.replay_events,
        store_bytes=size,
        read_errors=errors,
        export_ms_max=read.export_ms,
        export_page_ms_max=read.export_page_ms,
        export_pages=read.export_pages,
        finish_s=finish_s,
        finish_spread=max(finish_s) / min(finish_s) if finish_s and min(finish_s) > 0 else math.nan,
        ideal_s=ideal,
        over_ideal_pct=100.0 * (wall_s / ideal - 1.0) if ideal > 0 else math.nan,
    )


def report(r: ScaleResult) -> str:
    """The human-readable lines of a result."""
    reads = "; ".join(f"{name} p50 {t.p50_ms:.1f} ms, max {t.max_ms:.1f} ms" for name, t in r.reads.items())
    lines = [
        f"{r.evaluations} evaluations run ({r.evaluations_requested} asked, {r.candidates} candidates, "
        f"{r.evaluations_cached} cached, {r.evaluations_failed} failed) in {r.searches} search(es) "
        f"[{', '.join(r.statuses)}]; {r.replicas} sim trainer(s) + {r.replicas} sim latency_cpu, "
        f"delay {r.delay}, {r.store} store",
        f"  services up in {r.startup_s:.1f} s; searches took {r.wall_s:.1f} s: "
        f"{r.evaluations_per_s:.1f} evaluations/s",
        f"  orchestration overhead per evaluation: p50 {r.overhead_ms_p50:.1f} ms, "
        f"p99 {r.overhead_ms_p99:.1f} ms (the store write, off that path: p50 {r.store_write_ms_p50:.1f} ms, "
        f"p99 {r.store_write_ms_p99:.1f} ms)",
        f"  searcher RSS {r.searcher_rss_mb_warm:.0f} MB after warm-up, {r.searcher_rss_mb_end:.0f} MB at "
        f"the end (peak {r.searcher_rss_mb_peak:.0f}); store RSS {r.store_rss_mb_warm:.0f} MB, "
        f"{r.store_rss_mb_end:.0f} MB (peak {r.store_rss_mb_peak:.0f})",
        f"  reads at the end: {reads} (slowest: {r.slowest_read})",
        f"  ExportSearch: {r.export_pages} page(s), slowest search {r.export_ms_max:.0f} ms, slowest page "
        f"{r.export_page_ms_max:.0f} ms",
        f"  WatchSearch replay: {r.watch_replay_events} events, "
        f"slowest search {r.watch_replay_ms_max:.0f} ms",
        f"  searches finished at {', '.join(f'{t:.0f}' for t in r.finish_s)} s (last/first "
        f"{r.finish_spread:.2f}); ideal {r.ideal_s:.0f} s, {r.over_ideal_pct:+.1f} % over it",
        f"  store on disk: {r.store_bytes / 1e6:.1f} MB",
    ]
    if r.read_errors:
        lines.append(f"  read errors: {'; '.join(r.read_errors)}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--evaluations", type=int, required=True, help="evaluations in all (2 per candidate)")
    p.add_argument("--store-url", help="the store's database (default: a fresh SQLite file)")
    p.add_argument("--replicas", type=int, default=1, help="sim trainers, and as many sim latency_cpu")
    p.add_argument("--delay", default="0", help="each evaluation's --sim-delay (e.g. 0.05, uniform:0,0.1)")
    p.add_argument("--searches", type=int, default=1, help="concurrent searches sharing the evaluations")
    p.add_argument("--population", type=int, default=50, help="candidates per iteration")
    p.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        default="random_search",
        help="random_search (a barrier per iteration) or async_evolution_pareto (none)",
    )
    p.add_argument("--sim-seed", type=int, default=0)
    p.add_argument("--read-repeats", type=int, default=5)
    p.add_argument("--timeout-s", type=float, default=3600.0, help="the searches' deadline")
    p.add_argument("--workdir", type=Path, help="keep the store and the services' logs here")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the report")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = ScaleSettings(
        evaluations=args.evaluations,
        store_url=args.store_url,
        replicas=args.replicas,
        delay=args.delay,
        searches=args.searches,
        population=args.population,
        algorithm=args.algorithm,
        sim_seed=args.sim_seed,
        read_repeats=args.read_repeats,
        timeout_s=args.timeout_s,
        workdir=args.workdir,
    )
    try:
        result = run_scale(settings)
    except InvalidInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
