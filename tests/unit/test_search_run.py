"""The search engine against the in-process Evaluator: measuring, retries, resume, cancel, unstable and
invalid results -- the same job semantics as over gRPC, without processes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy import text as sql_text

from facenas.domain import Candidate, EvalKey, Evaluation, Event, JobState, SearchStatus
from facenas.errors import Cancelled
from facenas.jobs import JobManager
from facenas.rpc.evaluator import EvaluatorServicer
from facenas.search.config import parse_search_config
from facenas.search.engine import SearchRun
from facenas.search.evaluator import Evaluator
from facenas.search.local import LocalEvaluator
from facenas.search.manager import SearchManager
from facenas.space.hgnet import HgnetSearchSpace
from facenas.space.params import SearchSpaceParams
from facenas.store import SqlStore
from facenas.store.base import StoreUnavailable
from facenas.v1 import common_pb2
from tests.integration.conftest import tiny_search
from tests.timing import scaled
from tests.unit.eval_fakes import CPU_LATENCY, IOU, FakeLatency, StepTrainer


def config_text(algorithm: str = "async_evolution_pareto", iters: int = 2, seed: int = 42) -> str:
    return tiny_search(algorithm=algorithm, iters=iters, seed=seed).replace(
        "timeout_s: 300", "timeout_s: 300\n  unstable_delay_s: 0.01"
    )


@dataclass
class Workers:
    """Two trainer replicas and one latency replica, as job managers that outlive any searcher."""

    trainer: StepTrainer
    latency: FakeLatency
    managers: dict[str, JobManager]

    def evaluators(self) -> dict[str, LocalEvaluator]:
        """Fresh adapters over the same workers, as a newly started searcher would have."""
        trainers = {n: m for n, m in self.managers.items() if n.startswith("trainer")}
        return {
            "trainer": LocalEvaluator("trainer", trainers),
            "latency_cpu": LocalEvaluator("latency_cpu", {"cpu": self.managers["cpu"]}),
        }

    def steps(self) -> Counter[str]:
        return self.trainer.steps_done


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = SqlStore.from_url(f"sqlite:///{tmp_path / 'store.db'}")
    yield opened
    opened.close()


def make_workers(trainer: StepTrainer, latency: FakeLatency | None = None) -> Workers:
    latency = latency or FakeLatency()
    managers = {
        "trainer-1": JobManager(trainer, "trainer", ["cpu"]),
        "trainer-2": JobManager(trainer, "trainer", ["cpu"]),
        "cpu": JobManager(latency, "latency_cpu", ["cpu"]),
    }
    return Workers(trainer, latency, managers)


@pytest.fixture
def workers() -> Iterator[Workers]:
    made = make_workers(StepTrainer(steps=8, hold_at=4))
    yield made
    made.trainer.released.set()
    for manager in made.managers.values():
        manager.close()


def searcher(store: SqlStore, evaluators: dict[str, LocalEvaluator], **options: Any) -> SearchManager:
    typed: dict[str, Evaluator] = dict(evaluators)
    return SearchManager(store, typed, progress_interval_s=0.05, heartbeat_s=0.2, **options)


def drain(manager: SearchManager, search_id: str) -> list[Event]:
    return list(manager.watch(search_id, 0))


def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for a state other threads bring about (polled; the deadline only bounds a failure)."""
    deadline = time.monotonic() + scaled(timeout)
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def kinds(events: list[Event], kind: str) -> list[dict[str, object]]:
    return [dict(e.payload) for e in events if e.kind == kind]


def initial_archids(store: SqlStore, text: str) -> list[str]:
    run = SearchRun("probe", parse_search_config(text), store, {}, threading.Event())
    return [a.archid for a in run.strategy.initial_population()]


@pytest.mark.slow
def test_a_search_runs_through_the_evaluator_with_live_progress(store: SqlStore, workers: Workers) -> None:
    manager = searcher(store, workers.evaluators())
    record = manager.start(config_text(), search_id="s1")
    events = []
    for event in manager.watch(record.search_id, 0):  # trainings hold at step 4 until one is seen
        events.append(event)
        running = event.payload.get("running", []) if event.kind == "progress" else []
        if any(r["objective"] == IOU and r["step"] == 3 for r in running):
            workers.trainer.released.set()
    assert events[-1].kind == "completed"
    summary = manager.summary("s1")
    assert summary.iterations_done == 2 and summary.candidates == 4 + 3
    evaluated = [(p["archid"], p["objective"]) for p in kinds(events, "evaluation")]
    assert len(evaluated) == len(set(evaluated)) == summary.evaluations_done * 2
    assert all(n == 1 for n in workers.trainer.started.values())
    assert all(n == 8 for n in workers.steps().values())
    running = [r for p in kinds(events, "progress") for r in p["running"]]  # type: ignore[attr-defined]
    training = [r for r in running if r["objective"] == IOU and r["state"] == "running"]
    assert training, "no progress event showed a training"
    assert {"step", "total", "loss", "eta_s", "replica", "phase"} <= set(training[-1])
    assert {r["replica"] for r in training} <= {"trainer-1", "trainer-2"}
    assert all(e.seq == 0 for e in events if e.kind == "progress")
    snapshot = manager.snapshot("s1")
    progress = store.search_progress(["s1"])["s1"]  # the run recorded how each candidate settled
    assert progress.settled == summary.candidates
    assert progress.complete == sum(c.complete(snapshot.objectives) for c in snapshot.candidates)
    latencies = [c for c in snapshot.candidates if CPU_LATENCY in c.values]
    assert latencies and all(c.cv == {CPU_LATENCY: 0.02} for c in latencies)  # for the CSVs
    assert all(c.stable == {CPU_LATENCY: True} for c in latencies)


def test_the_searcher_keeps_iteration_records_for_reads_without_their_rng_state(
    store: SqlStore, workers: Workers
) -> None:
    """An RNG state is about 25 KB a record: a searcher holding a long search's records for its reads keeps
    only what the reads use; the store keeps the whole record, which a resumed run reads."""
    workers.trainer.released.set()
    manager = searcher(store, workers.evaluators())
    manager.start(config_text(algorithm="evolution_pareto"), search_id="lean")
    assert drain(manager, "lean")[-1].kind == "completed"
    assert manager._running["lean"].run is None  # a finished run's history is the store's, not held here
    snapshot = manager.snapshot("lean")
    kept = manager._records_known["lean"]
    stored = store.list_iterations("lean")
    assert [r.iteration for r in kept] == [r.iteration for r in stored] == [0, 1]
    assert all("rng" in r.state for r in stored) and not any("rng" in r.state for r in kept)
    for lean, full in zip(kept, stored, strict=True):
        assert (lean.pareto, lean.hypervolume, lean.walltime_s) == (
            full.pareto,
            full.hypervolume,
            full.walltime_s,
        )
        assert {k: v for k, v in full.state.items() if k != "rng"} == dict(lean.state)
    assert [i.pareto for i in snapshot.iterations] == [r.pareto for r in stored]


def test_a_lost_worker_is_retried_elsewhere(store: SqlStore, workers: Workers) -> None:
    evaluators = workers.evaluators()
    manager = searcher(store, evaluators)
    manager.start(config_text(iters=1), search_id="s2")
    workers.trainer.wait_held(2)
    evaluators["trainer"].kill("trainer-1")
    before = dict(workers.trainer.started)  # held trainings started; a job queued on trainer-1 had not
    workers.trainer.released.set()
    events = drain(manager, "s2")
    assert events[-1].kind == "completed"
    retries = kinds(events, "evaluation_retry")
    assert retries and all(r["replica"] == "trainer-1" for r in retries)
    assert manager.summary("s2").evaluations_done == 4
    moved = {str(r["archid"]) for r in retries}
    # each moved job ran once more elsewhere: a held training twice in all, a job only queued there once
    assert all(workers.trainer.started[a] == before.get(a, 0) + 1 for a in moved)
    assert any(before.get(a, 0) == 1 for a in moved)  # a training was under way on the dead replica


@pytest.mark.slow
def test_a_restarted_searcher_joins_running_jobs_instead_of_training_again(
    store: SqlStore, workers: Workers
) -> None:
    first = searcher(store, workers.evaluators())
    first.start(config_text(iters=1), search_id="s3")
    workers.trainer.wait_held(2)
    half_done = {a for a, n in workers.steps().items() if n == 3}
    assert len(half_done) == 2
    first.shutdown()  # the searcher goes away; its jobs keep running on the workers
    assert all(m.list("s3", active_only=True) for n, m in workers.managers.items() if n != "cpu")

    second = searcher(store, workers.evaluators())
    second.resume("s3")
    workers.trainer.released.set()
    events = drain(second, "s3")
    assert events[-1].kind == "completed"
    assert all(workers.trainer.started[a] == 1 for a in workers.trainer.started)
    assert all(n == 8 for n in workers.steps().values()), workers.steps()
    joined = {
        str(p["archid"]) for p in kinds(events, "evaluation") if p["attached"] and p["objective"] == IOU
    }
    assert half_done <= joined  # (a third training may have been queued, and joined, too)
    evaluated = [(p["archid"], p["objective"]) for p in kinds(events, "evaluation")]
    assert len(evaluated) == len(set(evaluated)) and len(evaluated) == 4 * 2


def test_results_not_yet_written_when_the_searcher_stops_are_collected_again_not_measured(
    store: SqlStore, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result reaches the search before its store write lands (the writer thread makes it durable):
    when the searcher goes away in between, the resumed search finds no stored value, submits the key
    again and collects the finished job its worker kept, without measuring it again."""
    put, refused = store.put_evaluation, threading.Event()

    def store_out(evaluation: Evaluation) -> Evaluation:
        refused.set()
        raise StoreUnavailable("store out for evaluations")

    monkeypatch.setattr(store, "put_evaluation", store_out)
    workers.trainer.released.set()
    first = searcher(store, workers.evaluators())
    first.start(config_text(iters=1), search_id="w1")
    until(refused.is_set)
    until(lambda: sum(len(m.list("w1")) for m in workers.managers.values()) >= 3)
    first.shutdown()  # results in hand, none of them in the store
    keys = [(c.archid, o) for c in store.list_candidates("w1") for o in (IOU, CPU_LATENCY)]
    assert not store.list_evaluations_page([a for a, _ in keys]).items
    started = Counter(workers.trainer.started)
    measured = Counter(workers.latency.calls)
    assert started

    monkeypatch.setattr(store, "put_evaluation", put)
    second = searcher(store, workers.evaluators())
    second.resume("w1")
    events = drain(second, "w1")
    assert events[-1].kind == "completed"
    evaluations = kinds(events, "evaluation")
    collected = {str(p["archid"]) for p in evaluations if p["attached"]}
    assert collected >= set(started) | set(measured)  # every result the first run had was collected...
    for archid, count in started.items():
        assert workers.trainer.started[archid] == count == 1  # ...not measured again
    for archid, count in measured.items():
        assert workers.latency.calls[archid] == count == 1
    assert second.summary("w1").evaluations_done == 4


def test_what_the_store_already_measured_is_a_cache_hit(store: SqlStore, workers: Workers) -> None:
    manager = searcher(store, workers.evaluators())
    # a barrier algorithm: its proposals do not depend on the order results arrive in (cached ones at once)
    text = config_text("evolution_pareto", iters=2)
    workers.trainer.released.set()
    manager.start(text, search_id="first")
    first = drain(manager, "first")
    assert first[-1].kind == "completed" and not kinds(first, "evaluation_cached")
    measured = {(p["archid"], p["objective"]) for p in kinds(first, "evaluation")}
    started = Counter(workers.trainer.started)

    manager.start(text, search_id="again")  # same seed: the same candidates, measured under the same keys
    events = drain(manager, "again")
    assert events[-1].kind == "completed"
    assert Counter(workers.trainer.started) == started  # nothing ran again
    cached = kinds(events, "evaluation_cached")
    assert not kinds(events, "evaluation")
    assert {(p["archid"], p["objective"]) for p in cached} == measured and len(cached) == len(measured)
    assert sorted(int(str(p["cache_hits"])) for p in cached) == list(range(1, len(measured) + 1))
    assert kinds(events, "iteration")[-1]["cache_hits"] == len(measured)
    assert kinds(first, "iteration")[-1]["cache_hits"] == 0
    assert manager.summary("again").cache_hits == len(measured)
    assert manager.summary("first").cache_hits == 0

    # another searcher reads the counts from the store
    restarted = searcher(store, workers.evaluators())
    assert {s.record.search_id: s.cache_hits for s in restarted.list()} == {
        "first": 0,
        "again": len(measured),
    }
    # and a resumed run goes on counting from the hits its event log holds
    run = SearchRun("again", parse_search_config(text), store, {}, threading.Event())
    run.coordinator.targets = store.get_targets("again")
    run.load()
    assert run.cache_hits == len(measured)


def test_cancelling_a_search_cancels_its_jobs(store: SqlStore, workers: Workers) -> None:
    manager = searcher(store, workers.evaluators())
    manager.start(config_text(), search_id="s4")
    workers.trainer.wait_held(2)
    assert manager.cancel("s4").status == SearchStatus.CANCELLED
    jobs = [j for m in workers.managers.values() for j in m.list("s4")]
    assert {j.state for j in jobs if j.key.objective == IOU} == {JobState.CANCELLED}
    before = sum(workers.steps().values())
    workers.trainer.released.set()
    assert drain(manager, "s4")[-1].kind == "cancelled"
    assert sum(workers.steps().values()) == before  # nothing trained on for a cancelled search


def test_a_cancel_is_recorded_as_a_users_request_and_a_shutdown_as_one(
    store: SqlStore, workers: Workers
) -> None:
    manager = searcher(store, workers.evaluators())
    manager.start(config_text(), search_id="c1")
    workers.trainer.wait_held(2)
    manager.cancel("c1", requested_by="ipv4:10.0.0.7:51234")
    events = drain(manager, "c1")
    assert kinds(events, "interrupted") == []  # the searcher did not shut down
    assert kinds(events, "cancelled") == [
        {"reason": "cancelled by a user request", "requested_by": "ipv4:10.0.0.7:51234"}
    ]

    manager.resume("c1")
    until(lambda: any(m.list("c1", active_only=True) for m in workers.managers.values()))
    manager.shutdown()
    events = store.list_events("c1", 0, 1000)
    assert events[-1].kind == "interrupted" and "searcher shutting down" in str(events[-1].payload["reason"])
    assert store.get_search("c1").status == SearchStatus.RUNNING  # to be resumed by the next searcher


def test_a_run_stopped_by_neither_a_user_nor_a_shutdown_fails_with_the_cause(
    store: SqlStore, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Cancelled from a dependency (the store's gRPC CANCELLED) ends the run; the search must not stay
    "running" with no run behind it in a searcher that keeps running, nor claim a shutdown."""
    add, raised = store.add_candidate, threading.Event()

    def cancelled_once(candidate: Candidate) -> Candidate:
        if not raised.is_set():
            raised.set()
            raise Cancelled("the store cancelled the call")
        return add(candidate)

    monkeypatch.setattr(store, "add_candidate", cancelled_once)
    manager = searcher(store, workers.evaluators())
    manager.start(config_text(), search_id="c2")
    workers.trainer.released.set()
    until(lambda: store.get_search("c2").status.finished)  # (not drain: it would wait forever)
    events = drain(manager, "c2")
    assert kinds(events, "interrupted") == []
    assert events[-1].kind == "failed" and "the store cancelled the call" in str(events[-1].payload["error"])
    assert store.get_search("c2").status == SearchStatus.FAILED  # resumable, and says why


@pytest.mark.slow
def test_a_job_two_searches_share_survives_one_cancel(store: SqlStore, workers: Workers) -> None:
    evaluators = workers.evaluators()
    manager = searcher(store, evaluators)
    text = config_text(iters=1)
    manager.start(text, search_id="a")
    workers.trainer.wait_held(2)
    manager.start(text, search_id="b")  # same seed: same candidates, same keys
    trainings = [m for n, m in workers.managers.items() if n != "cpu"]
    held = {j.job_id for m in trainings for j in m.list("a") if j.state == JobState.RUNNING}
    assert len(held) == 2  # (a third may wait in a queue)
    until(lambda: held <= {j.job_id for m in trainings for j in m.list("b", active_only=True)})
    manager.cancel("a")
    workers.trainer.released.set()
    assert drain(manager, "b")[-1].kind == "completed"
    assert all(n == 1 for n in workers.trainer.started.values())
    assert manager.summary("b").evaluations_done == 4


@pytest.mark.slow
def test_unstable_figures_are_measured_again_then_given_up(store: SqlStore) -> None:
    text = config_text(iters=1)
    flaky, hopeless, *_ = initial_archids(store, text)
    made = make_workers(StepTrainer(steps=2), FakeLatency(unstable={flaky: 1, hopeless: 99}))
    try:
        manager = searcher(store, made.evaluators())
        manager.start(text, search_id="s5")
        events = drain(manager, "s5")
    finally:
        for m in made.managers.values():
            m.close()
    assert events[-1].kind == "completed"
    assert made.latency.calls[flaky] == 2 and made.latency.calls[hopeless] == 4  # 1 + max_unstable 3
    unstable = Counter(str(p["archid"]) for p in kinds(events, "evaluation_unstable"))
    assert unstable == {flaky: 1, hopeless: 3}
    failed = {str(p["archid"]): str(p["error"]) for p in kinds(events, "evaluation_failed")}
    assert set(failed) == {hopeless} and "would not settle after 4 measurement(s)" in failed[hopeless]
    stored = {str(p["archid"]) for p in kinds(events, "evaluation") if p["objective"] == CPU_LATENCY}
    assert flaky in stored and hopeless not in stored


def test_an_invalid_model_fails_its_candidate_without_retries(store: SqlStore) -> None:
    text = config_text(iters=1)
    bad = initial_archids(store, text)[0]
    made = make_workers(StepTrainer(steps=2), FakeLatency(invalid={bad}))
    try:
        manager = searcher(store, made.evaluators())
        manager.start(text, search_id="s6")
        events = drain(manager, "s6")
    finally:
        for m in made.managers.values():
            m.close()
    assert events[-1].kind == "completed"
    assert made.latency.calls[bad] == 1 and not kinds(events, "evaluation_retry")
    failed = kinds(events, "evaluation_failed")
    assert [p["archid"] for p in failed] == [bad] and "cannot be exported" in str(failed[0]["error"])
    assert made.trainer.started[bad] == 0  # the cheap objective failed first: no training was paid for


def test_spaces_that_differ_only_in_num_classes_share_no_results(store: SqlStore) -> None:
    """The archid leaves num_classes out, so both searches propose the same archids: each builds its
    own model under them, and neither is served the other's results."""
    text = config_text(algorithm="evolution_pareto", iters=1)
    assert "num_classes: 18" in text
    made = make_workers(StepTrainer(steps=2))
    try:
        manager = searcher(store, made.evaluators())
        manager.start(text, search_id="classes-18")
        assert drain(manager, "classes-18")[-1].kind == "completed"
        manager.start(text.replace("num_classes: 18", "num_classes: 7"), search_id="classes-7")
        events = drain(manager, "classes-7")
    finally:
        for m in made.managers.values():
            m.close()
    assert events[-1].kind == "completed", events[-1].payload
    first, second = manager.snapshot("classes-18"), manager.snapshot("classes-7")
    shared = {c.archid for c in first.candidates} & {c.archid for c in second.candidates}
    assert len(shared) == 4
    params = {c.archid: c.params for c in first.candidates}
    assert all(c.params < params[c.archid] for c in second.candidates)  # a narrower head
    assert all(made.trainer.started[a] == 2 and made.latency.calls[a] == 2 for a in shared)
    assert all(c.complete(second.objectives) for c in second.candidates)
    evaluated = {str(p["archid"]) for p in kinds(events, "evaluation")}
    assert evaluated == shared  # measured for this search, none taken from the other's


def test_workers_key_jobs_by_the_model_the_searcher_names() -> None:
    """The worker's key names the model it builds, computed as the searcher computes it, so a job is
    joined only by searches of the same model."""
    servicer = EvaluatorServicer(JobManager(FakeLatency(), "latency_cpu"))
    arch = HgnetSearchSpace(seed=3).random_sample()

    def key(num_classes: int, in_channels: int = 3) -> EvalKey:
        space = common_pb2.SearchSpace(
            num_classes=num_classes, in_channels=in_channels, img_width=64, img_height=64
        )
        architecture = common_pb2.Architecture(archid=arch.archid, json=arch.to_json())
        request = common_pb2.EvaluateRequest(architecture=architecture, objective=CPU_LATENCY, space=space)
        return servicer.spec(request).key

    searcher_side = HgnetSearchSpace(SearchSpaceParams(num_classes=18)).fingerprint(arch)
    assert key(18).model == searcher_side and key(18) == key(18)
    assert len({key(18).job_id, key(7).job_id, key(18, in_channels=1).job_id}) == 3


def test_a_search_begun_before_keys_named_the_model_keeps_its_own_results(
    store: SqlStore, tmp_path: Path
) -> None:
    """A migrated store's search: its candidates and evaluations name no model (""); it still reads its
    results, and a resumed run finds them instead of measuring again."""
    text = config_text(algorithm="evolution_pareto", iters=1)
    made = make_workers(StepTrainer(steps=2))
    try:
        manager = searcher(store, made.evaluators())
        manager.start(text, search_id="old")
        assert drain(manager, "old")[-1].kind == "completed"
        engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
        with engine.begin() as conn:  # as the migration to schema 3 leaves them
            conn.execute(sql_text("UPDATE candidates SET model = ''"))
            conn.execute(sql_text("UPDATE evaluations SET model = ''"))
        engine.dispose()
        snapshot = manager.snapshot("old")
        assert len(snapshot.candidates) == 4
        assert all(c.complete(snapshot.objectives) for c in snapshot.candidates)
        run = SearchRun("old", parse_search_config(text), store, made.evaluators(), threading.Event())
        run.coordinator.connect()
        run.load()
        assert set(run.history.model_of.values()) == {""}
        assert all(run.history.finished(a) for a in run.history.archs)
    finally:
        for m in made.managers.values():
            m.close()
