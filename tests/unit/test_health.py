"""Health tells the truth: the dependency monitor, its probes, the guarded RPCs and the replica pool that
honours NOT_SERVING. In-process servers on free loopback ports; every wait is on an event or a deadline."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from facenas.domain import Budget, EvalKey, EvalSpace, budget_key
from facenas.jobs import JobManager
from facenas.probes import (
    data_cache_probe,
    database_probe,
    dataset_probe,
    directory_problem,
    onnxruntime_probe,
)
from facenas.rpc.evaluator import EvaluatorServicer
from facenas.rpc.health import (
    LIVENESS,
    HealthMonitor,
    Probe,
    RemoteHealth,
    check_health,
)
from facenas.rpc.server import RunningServer, ServerConfig, start
from facenas.search.dispatch import ReplicaPool
from facenas.search.evaluator import EvalTask
from facenas.space import HgnetSearchSpace, ParamRange, SearchSpaceParams
from facenas.store import open_store
from facenas.store.grpc_servicer import StoreServicer
from facenas.v1 import common_pb2, common_pb2_grpc, store_pb2, store_pb2_grpc
from tests.timing import scaled
from tests.tools import PG_URL, postgres_unreachable
from tests.unit.eval_fakes import CPU_LATENCY, FakeLatency

EVALUATOR = "facenas.v1.Evaluator"
STORE = "facenas.v1.Store"
DEADLINE_S = 60.0  # generous: these tests must pass on a loaded machine


class Switch:
    """A dependency a test turns off and on: ``reason`` None while it is there."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        return self.reason


class FakeServer:
    """What the monitor drives, recording every set_serving."""

    def __init__(self) -> None:
        self.health: Any = None
        self.states: list[bool] = []
        self.changed = threading.Condition()

    def set_serving(self, serving: bool) -> None:
        with self.changed:
            self.states.append(serving)
            self.changed.notify_all()

    def wait_for(self, serving: bool) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.states[-1:] == [serving], DEADLINE_S), self.states


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[tuple[str, str | None, str | None]]:
        return [
            (r.getMessage(), getattr(r, "dependency", None), getattr(r, "reason", None)) for r in self.records
        ]


@pytest.fixture
def health_log() -> Iterator[Records]:
    logger = logging.getLogger("facenas.rpc.health")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def up(dependency: str) -> float | None:
    return REGISTRY.get_sample_value("facenas_dependency_up", {"dependency": dependency})


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + scaled(DEADLINE_S)
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# --- the monitor -----------------------------------------------------------------------------------


def test_monitor_follows_its_probes_logs_transitions_and_exports_the_gauge(health_log: Records) -> None:
    disk, boards = Switch(), Switch()
    monitor = HealthMonitor([Probe("unit-disk", disk), Probe("unit-boards", boards)], interval_s=60)
    server = FakeServer()
    assert monitor.check_now() == {}
    monitor.start(server)
    try:
        assert server.states == [True] and up("unit-disk") == 1 and up("unit-boards") == 1

        disk.reason = "disk /x is gone"
        assert monitor.check_now() == {"unit-disk": "disk /x is gone"}
        assert server.states[-1] is False and up("unit-disk") == 0 and up("unit-boards") == 1
        assert monitor.reason() == "unit-disk: disk /x is gone" and not monitor.serving

        boards.reason = "no board"
        monitor.check_now()
        assert monitor.reason() == "unit-disk: disk /x is gone; unit-boards: no board"

        disk.reason = None
        monitor.check_now()
        assert server.states[-1] is False, "still one dependency down"
        boards.reason = None
        monitor.check_now()
        assert server.states[-1] is True and up("unit-disk") == 1 and up("unit-boards") == 1
    finally:
        monitor.stop()
    logged = [m for m in health_log.messages() if m[0] != "health SERVING"]
    disk.reason = "gone while the server drains"
    monitor.check_now()
    assert server.states[-1] is True, "a stopped monitor publishes nothing (the drain owns health)"
    disk.reason = None
    monitor.check_now()
    assert logged == [
        ("dependency down", "unit-disk", "disk /x is gone"),
        ("health NOT_SERVING", None, "unit-disk: disk /x is gone"),
        ("dependency down", "unit-boards", "no board"),
        ("dependency up", "unit-disk", None),
        ("dependency up", "unit-boards", None),
    ]


def test_background_monitor_flips_health_without_being_asked() -> None:
    dataset = Switch()
    monitor = HealthMonitor([Probe("unit-dataset", dataset)], interval_s=0.05)
    server = FakeServer()
    monitor.check_now()
    monitor.start(server)
    try:
        dataset.reason = "dataset dir /d is missing"
        server.wait_for(False)
        assert monitor.failing() == {"unit-dataset": "dataset dir /d is missing"}
        dataset.reason = None
        server.wait_for(True)
    finally:
        monitor.stop()
    calls = dataset.calls
    time.sleep(0.2)  # stopped: no check runs any more (a bound on nothing happening needs some time)
    assert dataset.calls == calls


def test_a_probe_that_raises_or_hangs_counts_as_failed() -> None:
    release = threading.Event()

    def broken() -> str | None:
        raise OSError("stale file handle")

    def hangs() -> str | None:
        release.wait(DEADLINE_S)
        return None

    monitor = HealthMonitor([Probe("unit-broken", broken), Probe("unit-hangs", hangs, timeout_s=0.1)])
    failing = monitor.check_now()
    assert failing["unit-broken"] == "the check failed: OSError: stale file handle"
    assert failing["unit-hangs"] == "the check did not answer within 0.1 s"
    assert "has not answered" in monitor.check_now()["unit-hangs"], "no second check piles up"
    release.set()
    wait_until(lambda: "unit-hangs" not in monitor.check_now(), "the hung check to come back")


def test_monitor_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        HealthMonitor([], interval_s=0)
    with pytest.raises(ValueError, match="unique"):
        HealthMonitor([Probe("a", Switch()), Probe("a", Switch())])


# --- a real server: health names, reasons and guarded calls --------------------------------------


@pytest.fixture
def store_server(tmp_path: Path) -> Iterator[tuple[RunningServer, HealthMonitor, Path]]:
    """The store servicer over SQLite in tmp_path/db, with its database probe, as the service wires it."""
    url = f"sqlite:///{tmp_path / 'db' / 'store.db'}"
    store = open_store(url)
    monitor = HealthMonitor([database_probe(url, [STORE])], interval_s=60)
    monitor.check_now()
    registrations = [(store_pb2_grpc.add_StoreServicer_to_server, StoreServicer(store), STORE)]
    running = start(monitor.guard(registrations), ServerConfig(port=0, metrics_port=None))
    monitor.start(running)
    yield running, monitor, tmp_path / "db"
    monitor.stop()
    running.stop(0)
    store.close()


def test_store_health_and_calls_follow_its_database(
    store_server: tuple[RunningServer, HealthMonitor, Path],
) -> None:
    running, monitor, db_dir = store_server
    channel = grpc.insecure_channel(running.address)
    stub = store_pb2_grpc.StoreStub(channel)
    for name in ("", STORE, LIVENESS):
        assert check_health(channel, name).serving

    moved = db_dir.with_name("db-away")
    db_dir.rename(moved)
    monitor.check_now()
    for name in ("", STORE):
        health = check_health(channel, name)
        assert health == RemoteHealth("NOT_SERVING", f"database: the database directory {db_dir} is gone")
    assert check_health(channel, LIVENESS).serving, "liveness does not depend on the database"
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetSearch(store_pb2.GetSearchRequest(search_id="s"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == f"database unavailable: the database directory {db_dir} is gone"

    moved.rename(db_dir)
    monitor.check_now()
    assert check_health(channel, "").serving and check_health(channel, STORE).serving
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetSearch(store_pb2.GetSearchRequest(search_id="s"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND, "the call reaches the store again"
    channel.close()


@pytest.mark.slow
def test_only_the_calls_that_need_a_dependency_are_refused() -> None:
    dataset = Switch()
    monitor = HealthMonitor([Probe("unit-data", dataset, (f"{EVALUATOR}/SubmitJob",))])
    servicer = EvaluatorServicer(JobManager(FakeLatency(), "latency_cpu"))
    registrations = [(common_pb2_grpc.add_EvaluatorServicer_to_server, servicer, EVALUATOR)]
    running = start(monitor.guard(registrations), ServerConfig(port=0, metrics_port=None))
    monitor.start(running)
    channel = grpc.insecure_channel(running.address)
    try:
        stub = common_pb2_grpc.EvaluatorStub(channel)
        dataset.reason = "dataset dir /d is missing"
        monitor.check_now()
        assert stub.ListJobs(common_pb2.ListJobsRequest(), timeout=10).jobs == []
        with pytest.raises(grpc.RpcError) as refused:
            stub.SubmitJob(common_pb2.SubmitJobRequest(request=_request(1)), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == "unit-data unavailable: dataset dir /d is missing"
        dataset.reason = None
        monitor.check_now()
        assert stub.SubmitJob(common_pb2.SubmitJobRequest(request=_request(1)), timeout=10).job.job_id
    finally:
        channel.close()
        monitor.stop()
        running.stop(0)


# --- the probes ------------------------------------------------------------------------------------


def test_directory_probes(tmp_path: Path) -> None:
    data = tmp_path / "faces"
    assert directory_problem(data, "dataset dir") == f"dataset dir {data} is missing"
    data.mkdir()
    assert directory_problem(data, "dataset dir") == f"dataset dir {data} is empty"
    (data / "000000.png").write_bytes(b"")
    assert directory_problem(data, "dataset dir") is None
    assert (
        directory_problem(data / "000000.png", "dataset dir")
        == f"dataset dir {data}/000000.png is not a directory"
    )
    assert dataset_probe(data, ()).check() is None
    assert data_cache_probe("auto", ()) is None and data_cache_probe("none", ()) is None
    cache = data_cache_probe(str(tmp_path / "cache"), ())
    assert cache is not None and cache.check() == f"data cache {tmp_path / 'cache'} is missing"


def test_onnxruntime_probe_runs_a_session() -> None:
    assert onnxruntime_probe(()).check() is None


def test_sqlite_probe_sees_the_file_go_and_never_creates_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    try:
        probe = database_probe(url, ())
        assert probe.check() is None
        (tmp_path / "store.db").rename(tmp_path / "elsewhere.db")
        assert probe.check() == f"the database file {tmp_path / 'store.db'} is gone"
        assert not (tmp_path / "store.db").exists()
        (tmp_path / "elsewhere.db").rename(tmp_path / "store.db")
        assert probe.check() is None
        (tmp_path / "store.db").rename(tmp_path / "old.db")
        (tmp_path / "store.db").write_bytes((tmp_path / "old.db").read_bytes())  # a copy is another file
        assert "was replaced after the store opened it" in (probe.check() or "")
    finally:
        store.close()


def test_postgresql_probe(pg_url: str) -> None:
    assert database_probe(pg_url, ()).check() is None
    dead = pg_url.replace(":5432/", f":{_free_port()}/")
    reason = database_probe(dead, (), timeout_s=2).check()
    assert (
        reason is not None
        and reason.startswith("database postgresql+psycopg://")
        and "does not answer" in reason
    )


@pytest.fixture
def pg_url() -> str:
    from sqlalchemy import create_engine, text

    url = PG_URL
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:
        postgres_unreachable(err)
    finally:
        engine.dispose()
    return url


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the searcher's replica pool honours NOT_SERVING --------------------------------------------------

SPACE = EvalSpace(img_size=(64, 64))


def _arch(seed: int) -> Any:
    return HgnetSearchSpace(SearchSpaceParams(img_size=(64, 64)), seed=seed).sample_valid(
        ParamRange(1e5, 5e5)
    )


def _request(seed: int) -> common_pb2.EvaluateRequest:
    arch = _arch(seed)
    return common_pb2.EvaluateRequest(
        architecture=common_pb2.Architecture(archid=arch.archid, json=arch.to_json()),
        objective=CPU_LATENCY,
        space=common_pb2.SearchSpace(num_classes=18, in_channels=3, img_width=64, img_height=64),
    )


def _task(seed: int) -> EvalTask:
    arch = _arch(seed)
    key = EvalKey(
        arch.archid, CPU_LATENCY, budget_key(CPU_LATENCY, Budget(), SPACE.img_size), "cpu/fake/t1/64x64"
    )
    return EvalTask(key, arch.to_json(), SPACE, Budget(), "search-1")


class Replica:
    """A latency replica on loopback whose one dependency a test can take away."""

    def __init__(self) -> None:
        self.backend = FakeLatency()
        self.dependency = Switch()
        self.monitor = HealthMonitor(
            [Probe("unit-replica-dep", self.dependency, (f"{EVALUATOR}/SubmitJob",))]
        )
        servicer = EvaluatorServicer(JobManager(self.backend, "latency_cpu"))
        registrations = [(common_pb2_grpc.add_EvaluatorServicer_to_server, servicer, EVALUATOR)]
        self.running = start(self.monitor.guard(registrations), ServerConfig(port=0, metrics_port=None))
        self.monitor.start(self.running)

    def set(self, reason: str | None) -> None:
        self.dependency.reason = reason
        self.monitor.check_now()

    def close(self) -> None:
        self.monitor.stop()
        self.running.stop(0)


@pytest.mark.slow
def test_replica_pool_places_no_job_on_a_not_serving_replica() -> None:
    a, b = Replica(), Replica()
    pool = ReplicaPool("latency_cpu", [a.running.address, b.running.address])
    pool.health.ttl_s = 0.05
    stop = threading.Event()
    try:
        b.set("no board attached")
        wait_until(lambda: _said(pool, b, "NOT_SERVING"), "the pool to hear B is NOT_SERVING")
        health = pool.health.status(b.running.address)
        assert health is not None and health.reason == "unit-replica-dep: no board attached"
        for seed in range(4):  # B would be picked about half of the time if it were considered
            result = pool.evaluate(_task(seed), lambda _: None, stop)
            assert result.replica == a.running.address
        assert sum(b.backend.calls.values()) == 0

        a.set("dataset dir /d is missing")
        b.set(None)
        wait_until(
            lambda: _said(pool, a, "NOT_SERVING") and _said(pool, b, "SERVING"), "the pool to hear both"
        )
        assert pool.evaluate(_task(10), lambda _: None, stop).replica == b.running.address

        a.set("dataset dir /d is missing")
        b.set("no board attached")
        wait_until(lambda: _said(pool, b, "NOT_SERVING"), "the pool to hear B is NOT_SERVING again")
        results: list[str] = []
        waiting = threading.Thread(
            target=lambda: results.append(pool.evaluate(_task(11), lambda _: None, stop).replica)
        )
        waiting.start()
        wait_until(lambda: pool.demand() == 1, "the job to wait for a serving replica")
        assert not results, "no replica serves: the job waits instead of failing"
        b.set(None)
        waiting.join(DEADLINE_S)
        assert results == [b.running.address]
    finally:
        stop.set()
        pool.close()
        a.close()
        b.close()


def _said(pool: ReplicaPool, replica: Replica, status: str) -> bool:
    pool.health.placeable(replica.running.address, _channel_of(pool, replica))
    health = pool.health.status(replica.running.address)
    return health is not None and health.status == status


def _channel_of(pool: ReplicaPool, replica: Replica) -> grpc.Channel:
    return next(r.channel for r in pool.replicas if r.address == replica.running.address)
