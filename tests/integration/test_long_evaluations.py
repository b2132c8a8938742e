"""Evaluations outlive their connections, with real processes: a job silent for many ping windows
completes without its stream breaking, and a searcher killed while two trainings are under way joins
them when it comes back -- each training runs once (the trainers' step counters say so)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from facenas.launcher import LocalCluster, ServiceProcess
from facenas.store import open_store
from facenas.v1 import common_pb2, common_pb2_grpc, searcher_pb2, searcher_pb2_grpc
from tests.integration.conftest import metric, tiny_search
from tests.timing import scaled

pytestmark = pytest.mark.integration

IOU = "Partial Training Val. IOU"


def two_candidates(steps: int) -> str:
    """Two architectures, one iteration: two trainings that run side by side on two trainers."""
    return tiny_search(iters=1, steps=steps).replace("init_num_models: 4", "init_num_models: 2")


def until(condition: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    """Wait for a state the services bring about (polled; the deadline only bounds a failure)."""
    deadline = time.monotonic() + scaled(timeout)
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def watch_to_end(searcher: ServiceProcess, search_id: str) -> list[tuple[str, dict[str, object]]]:
    stub = searcher_pb2_grpc.SearcherStub(grpc.insecure_channel(searcher.address))
    request = searcher_pb2.WatchSearchRequest(search_id=search_id)
    return [
        (e.kind, json.loads(e.payload_json or "{}")) for e in stub.WatchSearch(request, timeout=scaled(900))
    ]


def stored_evaluations(store_db: Path, search_id: str) -> list[dict[str, object]]:
    store = open_store(f"sqlite:///{store_db}")
    try:
        return [dict(e.payload) for e in store.list_events(search_id, 0, 100_000) if e.kind == "evaluation"]
    finally:
        store.close()


def test_an_evaluation_silent_past_many_ping_windows_completes(
    tmp_path: Path, dataset: Path, record_property: Callable[[str, object], None]
) -> None:
    """Every process pings every 0.5 s; the latency job's stream carries no data for its whole
    measurement (the searcher asks for heartbeats every 60 s). It must complete without a re-attach."""
    keepalive_s = 0.5
    with LocalCluster(tmp_path / "cluster", env={"FACENAS_KEEPALIVE_S": str(keepalive_s)}) as cluster:
        store = cluster.start("store", ["--url", f"sqlite:///{cluster.workdir / 'store.db'}"])
        trainer = cluster.start(
            "trainer", ["--dataset-dir", str(dataset), "--val-fraction", "0.2", "--threads", "1"]
        )
        latency = cluster.start("latency_cpu", ["--rounds", "150", "--max-cv", "1"])  # long, not judged
        searcher = cluster.start(
            "searcher",
            [
                "--store", store.address,
                "--trainer", trainer.address,
                "--latency-cpu", latency.address,
                "--job-heartbeat-s", "60",
                "--job-silence-s", "120",
            ],
        )  # fmt: skip
        stub = searcher_pb2_grpc.SearcherStub(grpc.insecure_channel(searcher.address))
        config = two_candidates(steps=2).replace("init_num_models: 2", "init_num_models: 1")
        search_id = stub.StartSearch(
            searcher_pb2.StartSearchRequest(config=config), timeout=60
        ).search.search_id
        events = watch_to_end(searcher, search_id)
        assert events[-1][0] == "completed", events[-3:]
        measured = [p for k, p in events if k == "evaluation" and p["objective"] != IOU]
        record_property("silent_evaluation_s", measured[0]["seconds"])
        assert measured and float(measured[0]["seconds"]) > 10 * keepalive_s  # silent for >= 10 windows
        assert metric(searcher, "facenas_search_job_reattaches_total") == 0


def test_a_killed_searcher_joins_the_trainings_it_left_running(
    tmp_path: Path, dataset: Path, record_property: Callable[[str, object], None]
) -> None:
    steps = 400
    with LocalCluster(tmp_path / "cluster") as cluster:
        db = cluster.workdir / "store.db"
        store = cluster.start("store", ["--url", f"sqlite:///{db}"])
        args = ["--dataset-dir", str(dataset), "--val-fraction", "0.2", "--threads", "1"]
        trainers = [cluster.start("trainer", args, name=f"trainer-{i}") for i in (1, 2)]
        # two latency replicas that never refuse a figure (a busy host's figures are refused and measured
        # again later): both candidates are measured at once, so both trainings start together
        quick = ["--rounds", "2", "--max-cv", "1", "--min-cpu-fraction", "0"]
        latency = [cluster.start("latency_cpu", quick, name=f"latency-{i}") for i in (1, 2)]
        workers = [
            "--trainer", ",".join(t.address for t in trainers),
            "--latency-cpu", ",".join(lat.address for lat in latency),
        ]  # fmt: skip
        searcher_args = ["--store", store.address, *workers, "--auto-resume"]
        searcher = cluster.start("searcher", searcher_args)
        stub = searcher_pb2_grpc.SearcherStub(grpc.insecure_channel(searcher.address))
        request = searcher_pb2.StartSearchRequest(config=two_candidates(steps))
        search_id = stub.StartSearch(request, timeout=60).search.search_id

        def under_way() -> list[common_pb2.Job]:
            """The search's trainings past a quarter of their steps (the two archs train at different
            speeds: the faster one is done by the time the slower one is half way)."""
            jobs = []
            for trainer in trainers:
                evaluator = common_pb2_grpc.EvaluatorStub(grpc.insecure_channel(trainer.address))
                listed = evaluator.ListJobs(common_pb2.ListJobsRequest(owner=search_id), timeout=10).jobs
                jobs += [j for j in listed if j.progress.phase == "train" and 4 * j.progress.step >= steps]
            return jobs

        until(lambda: len(under_way()) == 2, "two trainings under way")
        searcher.kill()  # kill -9: no goodbye, no cancel
        left = {j.archid: j.progress.step for j in under_way() if j.progress.step < steps}
        assert len(left) == 2, f"both trainings should still be running after the kill: {left}"
        record_property("steps_done_at_kill", sorted(left.values()))

        restarted = cluster.start("searcher", searcher_args, name="searcher-2")  # --auto-resume
        events = watch_to_end(restarted, search_id)
        assert events[-1][0] == "completed", events[-3:]
        trained = sum(metric(t, 'facenas_job_steps_total{phase="train"') for t in trainers)
        record_property("trainer_steps_total", trained)
        assert trained == 2 * steps, f"the trainers made {trained} steps for 2 trainings of {steps}"
        runs = sum(
            metric(t, 'facenas_evaluations_total{objective="Partial Training Val. IOU"') for t in trainers
        )
        assert runs == 2
        evaluations = stored_evaluations(db, search_id)
        keys = [(p["archid"], p["objective"]) for p in evaluations]
        assert len(keys) == len(set(keys)) == 4  # 2 candidates x 2 objectives, none lost or repeated
        joined = {p["archid"] for p in evaluations if p["objective"] == IOU and p["attached"]}
        assert joined == set(left)
