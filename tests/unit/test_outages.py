"""Outages pause a search, they do not fail it: the store, or every replica of a service, out for a
while -- the search waits (saying so), carries on when they are back, and loses nothing."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facenas.domain import SearchStatus
from facenas.errors import Cancelled
from facenas.jobs import JobManager
from facenas.search import metrics
from facenas.search.outages import OutagePolicy, Outages
from facenas.search.patient_store import PatientStore
from facenas.store import SqlStore
from facenas.store.base import StoreUnavailable
from tests.unit.eval_fakes import CPU_LATENCY, FakeLatency, StepTrainer
from tests.unit.test_search_run import (
    Workers,
    config_text,
    drain,
    initial_archids,
    kinds,
    make_workers,
    searcher,
    until,
)

FAST = OutagePolicy(patience_s=60.0, first_backoff_s=0.01, max_backoff_s=0.05)


class SwitchableStore(SqlStore):
    """A SQL store whose link can be cut: every transaction raises StoreUnavailable while ``down``."""

    def __init__(self, engine: Any) -> None:
        self.down = threading.Event()
        self.refused = 0
        super().__init__(engine)

    @contextlib.contextmanager
    def _tx(self, write: bool = False) -> Iterator[Any]:
        if self.down.is_set():
            self.refused += 1
            raise StoreUnavailable("store at 127.0.0.1:1: connection refused")
        with super()._tx(write) as conn:
            yield conn


@pytest.fixture
def sql(tmp_path: Path) -> Iterator[SwitchableStore]:
    opened = SwitchableStore.from_url(f"sqlite:///{tmp_path / 'store.db'}")
    yield opened
    opened.close()


def test_a_patient_store_waits_for_the_store_and_says_so(sql: SqlStore) -> None:
    link = sql
    outages = Outages()
    patient = PatientStore(link, FAST, outages)
    link.down.set()
    done = threading.Event()
    result: list[Any] = []

    def write() -> None:
        result.append(patient.create_search("s", "s", ""))
        done.set()

    threading.Thread(target=write, daemon=True).start()
    until(lambda: link.refused >= 3)
    assert not done.is_set()
    assert outages.describe().startswith("waiting for store (")
    assert metrics.WAITING.labels("store")._value.get() == 1
    link.down.clear()
    assert done.wait(30)
    assert result[0].search_id == "s" and link.get_search("s").search_id == "s"
    assert outages.describe() == "" and metrics.WAITING.labels("store")._value.get() == 0


def test_a_waiter_that_outlives_an_outage_shows_the_next_one(sql: SqlStore) -> None:
    """A caller still backing off from an outage that another caller saw end meets the store down again:
    that is a new outage, shown as one (the searcher says it waits) and with its own patience."""
    link = sql
    outages = Outages()
    patient = PatientStore(link, FAST, outages)
    link.down.set()
    done = threading.Event()
    threading.Thread(target=lambda: (patient.list_searches(), done.set()), daemon=True).start()
    until(lambda: link.refused >= 2)
    outages.begin("store", "another caller")  # ...which then sees the store answer: the outage ends
    outages.end("store", recovered=True)
    assert metrics.WAITING.labels("store")._value.get() == 0
    seen = link.refused
    until(lambda: link.refused >= seen + 2)  # the first caller fails again: the store is down anew
    assert metrics.WAITING.labels("store")._value.get() == 1
    assert outages.describe().startswith("waiting for store (")
    link.down.clear()
    assert done.wait(30)
    assert outages.describe() == "" and metrics.WAITING.labels("store")._value.get() == 0


def test_patience_ends_and_closing_interrupts(sql: SqlStore) -> None:
    link = sql
    link.down.set()
    short = OutagePolicy(patience_s=0.2, first_backoff_s=0.01, max_backoff_s=0.05)
    with pytest.raises(StoreUnavailable, match=r"unreachable for \d+ s \(patience 0 s\)"):
        PatientStore(link, short).list_searches()
    closing = threading.Event()
    closing.set()
    with pytest.raises(Cancelled):
        PatientStore(link, FAST, closing=closing).list_searches()


@pytest.fixture
def workers() -> Iterator[Workers]:
    made = make_workers(StepTrainer(steps=6, hold_at=3))
    yield made
    made.trainer.released.set()
    for manager in made.managers.values():
        manager.close()


@pytest.mark.slow
def test_a_store_outage_pauses_the_search_and_loses_no_result(sql: SqlStore, workers: Workers) -> None:
    link = sql
    manager = searcher(link, workers.evaluators(), patience=FAST)
    manager.start(config_text(iters=2), search_id="s1")
    workers.trainer.wait_held(2)
    link.down.set()  # the store goes away while two trainings run
    workers.trainer.released.set()
    until(lambda: manager.outages.describe().startswith("waiting for store"))
    assert manager.waiting("s1").startswith("waiting for store")
    link.down.clear()
    events = drain(manager, "s1")
    assert events[-1].kind == "completed", events[-1]
    summary = manager.summary("s1")
    assert summary.record.status == SearchStatus.COMPLETED and summary.iterations_done == 2
    assert summary.evaluations_done == summary.candidates  # every result landed
    assert all(n == 1 for n in workers.trainer.started.values()), workers.trainer.started
    evaluated = [(p["archid"], p["objective"]) for p in kinds(events, "evaluation")]
    assert len(evaluated) == len(set(evaluated))  # none twice (events carry tokens)


@pytest.mark.slow
def test_the_final_status_lands_when_the_store_returns(sql: SqlStore) -> None:
    made = make_workers(StepTrainer(steps=2))
    try:
        link = sql
        short = OutagePolicy(patience_s=0.3, first_backoff_s=0.01, max_backoff_s=0.05)
        manager = searcher(link, made.evaluators(), patience=short, supervise_s=0.05)
        manager.start(config_text(iters=1), search_id="s2")
        link.down.set()  # out past the patience: the run fails, and cannot even say so
        until(lambda: not manager._is_running("s2"))
        view = SqlStore.from_url(sql.url)  # another client of the same database, not cut off
        try:
            assert view.get_search("s2").status == SearchStatus.RUNNING
            link.down.clear()
            until(lambda: view.get_search("s2").status == SearchStatus.FAILED)
            assert "store stayed unreachable" in view.get_search("s2").error
        finally:
            view.close()
        assert manager.resume("s2").status == SearchStatus.RUNNING  # and it can be resumed
        assert drain(manager, "s2")[-1].kind == "completed"
    finally:
        for m in made.managers.values():
            m.close()


@pytest.mark.slow
def test_a_service_outage_pauses_the_search_and_no_candidate_fails(sql: SqlStore) -> None:
    made = make_workers(StepTrainer(steps=2))
    evaluators = made.evaluators()
    try:
        manager = searcher(sql, evaluators)
        evaluators["latency_cpu"].kill("cpu")  # latency_cpu down before the search starts measuring
        manager.start(config_text(iters=2), search_id="s3")
        until(lambda: "latency_cpu" in manager.waiting("s3"))
        revived = JobManager(FakeLatency(), "latency_cpu", ["cpu"])
        made.managers["cpu"] = revived
        evaluators["latency_cpu"].revive("cpu", revived)
        events = drain(manager, "s3")
    finally:
        for m in made.managers.values():
            m.close()
    assert events[-1].kind == "completed"
    assert not kinds(events, "evaluation_failed") and not sql.list_failures("s3")
    waits = kinds(events, "waiting")
    assert waits and {w["for"] for w in waits} == {"latency_cpu"}
    assert {w["for"] for w in kinds(events, "waited")} == {"latency_cpu"}
    measured = {p["archid"] for p in kinds(events, "evaluation") if p["objective"] == CPU_LATENCY}
    assert len(measured) == manager.summary("s3").candidates


WRITE_KINDS = (  # every kind of write a search makes (a candidate carries its own arch document)
    "put_targets",
    "add_candidate",
    "put_evaluation",
    "put_iteration",
    "put_failure",
    "append_event",
    "set_search_status",
)


class CutOnce(SwitchableStore):
    """The link is cut once during the first call of each kind of write: before the write reaches the
    database (``lands=False``), or after it landed, losing only the reply (``lands=True``)."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.lands = False
        self.cut: set[str] = set()

    def __getattribute__(self, name: str) -> Any:
        attr = object.__getattribute__(self, name)
        if name not in WRITE_KINDS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if name in self.cut:
                return attr(*args, **kwargs)
            self.cut.add(name)
            if self.lands:
                attr(*args, **kwargs)
            raise StoreUnavailable(f"link cut during {name}")

        return call


@pytest.mark.parametrize("lands", [False, True], ids=["cut-before-write", "reply-lost"])
@pytest.mark.slow
def test_a_link_cut_during_each_kind_of_write_loses_nothing(tmp_path: Path, lands: bool) -> None:
    store = CutOnce.from_url(f"sqlite:///{tmp_path / 'store.db'}")
    store.lands = lands
    made = make_workers(StepTrainer(steps=2), FakeLatency(invalid=set()))
    try:
        text = config_text(iters=2)
        bad = initial_archids(store, text)[1]
        made.latency.invalid.add(bad)  # one candidate fails, so that a failure record is written too
        manager = searcher(store, made.evaluators(), patience=FAST)
        for attempt in range(2):  # a client repeats a StartSearch cut off by the link (it is idempotent)
            try:
                manager.start(text, search_id="s4")
                break
            except StoreUnavailable:
                assert attempt == 0
        events = drain(manager, "s4")
        summary = manager.summary("s4")
        snapshot = manager.snapshot("s4")
    finally:
        for m in made.managers.values():
            m.close()
        store.close()
    assert set(WRITE_KINDS) - {"set_search_status"} <= store.cut  # each kind was cut once
    assert events[-1].kind == "completed" and summary.iterations_done == 2
    assert [c.archid for c in snapshot.candidates if c.failed] == [bad]
    complete = [c for c in snapshot.candidates if c.complete(snapshot.objectives)]
    assert len(complete) == summary.candidates - 1 == summary.evaluations_done
    assert all(n == 1 for n in made.trainer.started.values())
    logged = [(e.seq, e.kind, tuple(sorted(map(str, e.payload.items())))) for e in events]
    assert len({entry[1:] for entry in logged if entry[1] == "evaluation"}) == len(
        [entry for entry in logged if entry[1] == "evaluation"]
    )  # a write retried after its reply was lost is logged once


def test_an_architecture_that_cannot_be_evaluated_fails_once_with_its_reason(sql: SwitchableStore) -> None:
    text = config_text(iters=1)
    bad = initial_archids(sql, text)[0]
    made = make_workers(StepTrainer(steps=2), FakeLatency(not_evaluable={bad}))
    try:
        manager = searcher(sql, made.evaluators())
        manager.start(text, search_id="s5")
        events = drain(manager, "s5")
        snapshot = manager.snapshot("s5")
    finally:
        for m in made.managers.values():
            m.close()
    assert events[-1].kind == "completed"
    assert made.latency.calls[bad] == 1 and not kinds(events, "evaluation_retry")
    [failure] = sql.list_failures("s5")
    assert (failure.archid, failure.kind) == (bad, "not_evaluable")
    assert "onnxruntime rejects the model" in failure.reason
    assert [c.failed for c in snapshot.candidates if c.archid == bad] == [failure.reason]  # the CSV's reason
