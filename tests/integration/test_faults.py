"""The fault suite: what a cluster does to a search, with real processes on loopback.

store, two trainers, latency_cpu and the searcher run as processes; the searcher reaches the store
through a link-cutting proxy (``tests/faults/proxy.py``). Time constants are shortened by the same
factor as the outages: the searcher's store patience is 60 s here (1800 s by default), so the issue's
outages of 3 s, 60 s and 10 min become 3 s, 6 s and 20 s (10 min is a third of the default patience,
20 s a third of 60 s). Each case ends COMPLETED with all its iterations, every candidate complete (no
result lost), no evaluation run twice (the trainers' step counters and the event log say so), and
outputs that can be written.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from facenas.launcher import LocalCluster, ServiceProcess
from facenas.search.outputs import write_outputs
from facenas.search.protoconv import export_search, snapshot_from_proto
from facenas.store import open_store
from facenas.v1 import searcher_pb2, searcher_pb2_grpc, store_pb2
from tests.faults.proxy import Proxy
from tests.integration.conftest import metric, tiny_search
from tests.timing import scaled

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IOU = "Partial Training Val. IOU"
STEPS = 12
STORE_PATIENCE_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def until(
    condition: Callable[[], bool],
    what: str,
    timeout: float = 300.0,
    detail: Callable[[], str] = lambda: "",
) -> None:
    """Wait for a state the services bring about (polled; the deadline only bounds a failure, whose
    message ends with ``detail()``)."""
    deadline = time.monotonic() + scaled(timeout)
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{detail()}"
        time.sleep(0.1)


@dataclass
class Faulty:
    """The system, with handles to break it."""

    cluster: LocalCluster
    db: Path
    store_port: int
    store: ServiceProcess
    proxy: Proxy
    trainers: list[ServiceProcess]
    latency_port: int
    latency: ServiceProcess
    searcher: ServiceProcess

    def stub(self) -> searcher_pb2_grpc.SearcherStub:
        return searcher_pb2_grpc.SearcherStub(grpc.insecure_channel(self.searcher.address))

    def start_store(self, port: int, name: str = "store") -> ServiceProcess:
        self.store = self.cluster.start(
            "store", ["--url", f"sqlite:///{self.db}", "--port", str(port)], name=name
        )
        return self.store

    def start_latency(self) -> ServiceProcess:
        # a figure's stability is not what these tests are about: a loaded CI host must not refuse one
        # ("host busy") until its candidate fails, which they assert never happens
        args = ["--rounds", "2", "--max-cv", "1", "--min-cpu-fraction", "0", "--port", str(self.latency_port)]
        self.latency = self.cluster.start("latency_cpu", args, name="latency_cpu")
        return self.latency

    def start_searcher(self, name: str = "searcher") -> ServiceProcess:
        args = [
            "--store", self.proxy.address,
            "--store-patience-s", str(STORE_PATIENCE_S),
            "--trainer", ",".join(t.address for t in self.trainers),
            "--latency-cpu", f"127.0.0.1:{self.latency_port}",
            "--reattach-s", "5",
            "--auto-resume",
        ]  # fmt: skip
        self.searcher = self.cluster.start("searcher", args, name=name)
        return self.searcher

    def start_search(self, config: str) -> str:
        request = searcher_pb2.StartSearchRequest(config=config)
        return str(self.stub().StartSearch(request, timeout=60).search.search_id)

    def events(self, search_id: str) -> list[tuple[str, dict[str, object]]]:
        """The event log, read from the database file (works while the store process is down)."""
        store = open_store(f"sqlite:///{self.db}")
        try:
            return [(e.kind, dict(e.payload)) for e in store.list_events(search_id, 0, 100_000)]
        finally:
            store.close()

    def evaluated(self, search_id: str, objective: str = IOU) -> int:
        return sum(1 for k, p in self.events(search_id) if k == "evaluation" and p["objective"] == objective)

    def trained(self) -> int:
        """Trainings the trainers have run through, from their step counters (independent of the store
        and of the event log, which is for watching: an event may be dropped, a record is not)."""
        steps = sum(metric(t, 'facenas_job_steps_total{phase="train"') for t in self.trainers)
        return int(steps // STEPS)

    def state(self, search_id: str) -> str:
        """What a failed wait reports: the search's status, its last events and the searcher's log."""
        events = self.events(search_id)[-8:]
        log = self.searcher.log_path.read_text(errors="replace")[-4000:]
        return f"status {self.status(search_id)}; last events {events}\nsearcher log:\n{log}"

    def status(self, search_id: str) -> str:
        store = open_store(f"sqlite:///{self.db}")
        try:
            return str(store.get_search(search_id).status)
        finally:
            store.close()

    def waiting_for(self, dependency: str) -> bool:
        return metric(self.searcher, f'facenas_search_waiting{{dependency="{dependency}"}}') == 1


@pytest.fixture
def faulty(tmp_path: Path, dataset: Path) -> Iterator[Faulty]:
    with LocalCluster(tmp_path / "cluster") as cluster:
        db = cluster.workdir / "store.db"
        store_port = free_port()
        store = cluster.start("store", ["--url", f"sqlite:///{db}", "--port", str(store_port)])
        with Proxy("127.0.0.1", store_port) as proxy:
            args = ["--dataset-dir", str(dataset), "--val-fraction", "0.2", "--threads", "1"]
            trainers = [cluster.start("trainer", args, name=f"trainer-{i}") for i in (1, 2)]
            latency_port = free_port()
            system = Faulty(cluster, db, store_port, store, proxy, trainers, latency_port, store, store)
            system.start_latency()
            system.start_searcher()
            yield system
            system.searcher.terminate()


def finish(system: Faulty, search_id: str, iterations: int, out: Path) -> None:
    """The search completes, with every iteration, every result once, and complete outputs."""
    request = searcher_pb2.WatchSearchRequest(search_id=search_id)
    kinds = [e.kind for e in system.stub().WatchSearch(request, timeout=scaled(900))]
    assert kinds[-1] == "completed", (kinds[-5:], system.status(search_id))
    summary = system.stub().GetSearch(searcher_pb2.SearchRef(search_id=search_id), timeout=60)
    assert summary.search.status == store_pb2.SEARCH_STATUS_COMPLETED, summary
    assert summary.iterations_done == iterations, summary
    export = export_search(lambda r: system.stub().ExportSearch(r, timeout=60), search_id)
    names = {o.name for o in export.objectives}
    for candidate in export.candidates:
        assert candidate.failed == "", (candidate.archid, candidate.failed)
        if candidate.feasible:
            assert set(candidate.values) == names, (candidate.archid, dict(candidate.values))
    events = system.events(search_id)
    stored = [(p["archid"], p["objective"]) for k, p in events if k == "evaluation"]
    assert len(stored) == len(set(stored)), "an evaluation was stored (or logged) twice"
    # the records, not the log: a run killed between storing a value and logging it logs no event for it
    trained = {c.archid for c in export.candidates if IOU in c.values}
    steps = sum(metric(t, 'facenas_job_steps_total{phase="train"') for t in system.trainers)
    assert steps == STEPS * len(trained), f"{steps} training steps for {len(trained)} trainings of {STEPS}"
    written = {p.name for p in write_outputs(snapshot_from_proto(export), out)}
    assert {f"search_state_{iterations - 1}.csv", "hypervolume.png"} <= written


def config(iters: int = 3) -> str:
    return tiny_search(algorithm="evolution_pareto", iters=iters, steps=STEPS)


def test_store_outages_pause_the_search(
    faulty: Faulty, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """Down 3 s and 6 s, back on its port; down 20 s, back on a new address (the proxy moves to it)."""
    search_id = faulty.start_search(config())
    outages = [(1, 3.0, False), (3, 6.0, False), (5, 20.0, True)]
    waited = []
    for after, seconds, moves in outages:
        until(
            lambda a=after: faulty.trained() >= a,  # type: ignore[misc]
            f"{after} trainings",
            detail=lambda: faulty.state(search_id),
        )
        faulty.store.kill()
        began = time.monotonic()
        until(lambda: faulty.waiting_for("store"), "the searcher to wait for the store", timeout=120)
        time.sleep(max(0.0, seconds - (time.monotonic() - began)))  # the outage itself is the fault
        port = free_port() if moves else faulty.store_port
        faulty.start_store(port, name=f"store-{after}")
        if moves:
            faulty.proxy.retarget("127.0.0.1", port, cut_existing=True)
        until(
            lambda: not faulty.waiting_for("store"),
            "the searcher to carry on",
            detail=lambda: faulty.state(search_id),
        )
        waited.append(round(time.monotonic() - began, 1))
    record_property("store_outages_s", waited)  # from the kill to the searcher carrying on
    finish(faulty, search_id, 3, tmp_path / "out")
    kinds = [k for k, _ in faulty.events(search_id)]
    assert "failed" not in kinds


def test_a_flapping_link_to_the_store(
    faulty: Faulty, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """The link is cut for 1 s every 2 s for the whole search (every kind of write meets a cut)."""
    search_id = faulty.start_search(config(iters=2))
    faulty.proxy.flap(on_s=1.0, off_s=1.0)
    try:
        until(lambda: faulty.status(search_id) != "running", "the search to end", timeout=900)
    finally:
        faulty.proxy.stop_flap()
        faulty.proxy.restore()
    stats = faulty.proxy.stats()
    record_property("link_cuts", stats.cuts)
    record_property("connections_reset", stats.reset + stats.refused)
    assert stats.cuts >= 3
    finish(faulty, search_id, 2, tmp_path / "out")


def test_latency_cpu_down_for_a_while(faulty: Faulty, tmp_path: Path) -> None:
    """latency_cpu killed mid-search and back 8 s later on its port: the search waits, nothing fails."""
    search_id = faulty.start_search(config(iters=2))
    until(lambda: faulty.evaluated(search_id, "CPU ONNX Latency (s)") >= 2, "two latencies")
    faulty.latency.kill()
    until(lambda: faulty.waiting_for("latency_cpu"), "the searcher to wait for latency_cpu", timeout=120)
    time.sleep(8.0)  # the outage
    faulty.start_latency()
    finish(faulty, search_id, 2, tmp_path / "out")
    events = faulty.events(search_id)
    assert [p["for"] for k, p in events if k == "waiting"] and not [
        k for k, _ in events if k == "evaluation_failed"
    ]
    assert any(k == "waited" and p["for"] == "latency_cpu" for k, p in events)


def test_the_searcher_killed_at_five_points_then_resumed(faulty: Faulty, tmp_path: Path) -> None:
    search_id = faulty.start_search(config(iters=3))
    for n, after in enumerate((1, 2, 4, 5, 7)):
        until(lambda a=after: faulty.evaluated(search_id) >= a, f"{after} trainings")  # type: ignore[misc]
        faulty.searcher.kill()  # kill -9
        faulty.start_searcher(name=f"searcher-{n + 2}")  # --auto-resume
    finish(faulty, search_id, 3, tmp_path / "out")
    kinds = [k for k, _ in faulty.events(search_id)]
    assert kinds.count("resumed") >= 5
