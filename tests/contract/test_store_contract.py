"""The store contract (see ``facenas/store/base.py``), run against every backend in ``conftest.BACKENDS``."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    text,
)

from facenas.domain import (
    ArchRecord,
    Candidate,
    EvalKey,
    Evaluation,
    Failure,
    IterationRecord,
    SearchStatus,
)
from facenas.errors import InvalidInput
from facenas.store import (
    NotFound,
    SchemaVersionError,
    SqlStore,
    Store,
    StoreConflict,
    StoreUnavailable,
    open_store,
)
from facenas.store.sql import normalise_url
from tests.contract.conftest import Backend

T = TypeVar("T")


def _key(
    archid: str = "a1",
    objective: str = "CPU ONNX Latency (s)",
    budget: str = "b",
    target: str = "t",
    model: str = "m1",
) -> EvalKey:
    return EvalKey(archid, objective, budget, target, model)


def _evaluation(key: EvalKey | None = None, value: float = 0.125) -> Evaluation:
    return Evaluation(
        key=key or _key(),
        value=value,
        unit="s",
        details={"runs": [0.1, 0.2], "host": {"cpu": "x86"}, "ok": True},
        worker="w1",
        seconds=1.5,
    )


def _iteration(search_id: str = "s1", iteration: int = 0) -> IterationRecord:
    return IterationRecord(
        search_id=search_id,
        iteration=iteration,
        pareto=("a1", "a2"),
        hypervolume=0.3333333333333333,
        state={"rng": [1, 2, 3], "population": ["a1", "a2"], "t": 0.1},
        walltime_s=12.25,
    )


def _run_threads(n: int, fn: Callable[[int], T]) -> list[T | BaseException]:
    """Run ``fn(i)`` for i in range(n) in n threads released together; results or raised exceptions."""
    barrier = threading.Barrier(n)
    results: list[T | BaseException] = [RuntimeError("not run")] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# --- searches ---
def test_search_round_trip_and_idempotent(store: Store) -> None:
    created = store.create_search("s1", "first", "objectives: []\n")
    assert (created.search_id, created.name, created.config) == ("s1", "first", "objectives: []\n")
    assert created.status is SearchStatus.PENDING and created.error == ""
    assert created.created_at > 0 and created.updated_at >= created.created_at
    assert store.get_search("s1") == created
    assert store.create_search("s1", "first", "objectives: []\n") == created
    assert store.list_searches() == [created]


@pytest.mark.parametrize("name, config", [("other", "c"), ("n", "other")])
def test_create_search_conflict(store: Store, name: str, config: str) -> None:
    store.create_search("s1", "n", "c")
    with pytest.raises(StoreConflict, match="s1"):
        store.create_search("s1", name, config)
    assert store.get_search("s1").name == "n"


def test_search_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_search("nope")
    with pytest.raises(NotFound):
        store.set_search_status("nope", SearchStatus.RUNNING)
    assert store.list_searches() == []


def test_list_searches_oldest_first(store: Store) -> None:
    ids = ["s3", "s1", "s5", "s2", "s4"]
    for search_id in ids:
        store.create_search(search_id, search_id, "c")
    assert [s.search_id for s in store.list_searches()] == ids


def test_status_transitions(store: Store) -> None:
    created = store.create_search("s1", "n", "c")
    running = store.set_search_status("s1", SearchStatus.RUNNING)
    assert running.status is SearchStatus.RUNNING and running.updated_at >= created.updated_at
    assert running.created_at == created.created_at
    failed = store.set_search_status("s1", SearchStatus.FAILED, error="boom")
    assert (failed.status, failed.error) == (SearchStatus.FAILED, "boom")
    assert store.get_search("s1") == failed
    resumed = store.set_search_status("s1", SearchStatus.RUNNING)
    assert (resumed.status, resumed.error) == (SearchStatus.RUNNING, "")
    done = store.set_search_status("s1", SearchStatus.COMPLETED)
    assert store.get_search("s1") == done and done.status.finished
    # create_search repeats return the current state, not PENDING
    assert store.create_search("s1", "n", "c") == done


# --- architectures ---
def test_arch_round_trip_idempotent_conflict(store: Store) -> None:
    arch = ArchRecord("a1", '{"stem": 16}', 12345)
    assert store.put_arch(arch) == arch
    assert store.put_arch(arch) == arch
    assert store.get_arch("a1") == arch
    for changed in (dataclasses.replace(arch, document="{}"), dataclasses.replace(arch, params=1)):
        with pytest.raises(StoreConflict, match="a1"):
            store.put_arch(changed)
    assert store.get_arch("a1") == arch
    with pytest.raises(NotFound):
        store.get_arch("a2")


# --- candidates ---
def test_candidates_order_idempotence_conflicts(store: Store) -> None:
    store.create_search("s1", "n", "c")
    store.create_search("s2", "n", "c")
    archids = ["z", "a", "m", "b"]
    added = [
        store.add_candidate(Candidate("s1", a, i // 2, parents=("p",) * i)) for i, a in enumerate(archids)
    ]
    assert all(c.proposed_at > 0 for c in added)
    assert store.list_candidates("s1") == added
    assert store.add_candidate(Candidate("s1", "m", 1, parents=("p", "p"))) == added[2]
    for changed in (Candidate("s1", "m", 9, ("p", "p")), Candidate("s1", "m", 1, ("q", "p"))):
        with pytest.raises(StoreConflict, match="m"):
            store.add_candidate(changed)
    other = store.add_candidate(Candidate("s2", "z", 3, proposed_at=100.5))
    assert other.proposed_at == 100.5
    assert store.list_candidates("s2") == [other]
    assert store.list_candidates("s1") == added


def test_candidates_by_archid_prefix(store: Store) -> None:
    store.create_search("s1", "n", "c")
    store.create_search("s2", "n", "c")
    for archid in ("ab12", "ab34", "Ab56", "cd78", "a%b", "a_c"):
        store.add_candidate(Candidate("s1", archid, 0))
    store.add_candidate(Candidate("s2", "ab99", 0))

    def found(prefix: str, page_size: int = 0) -> list[str]:
        return [c.archid for c in store.list_candidates_page("s1", page_size, "", prefix).items]

    assert found("ab") == ["ab12", "ab34"]  # in order, this search only, case-sensitive
    assert found("ab3") == ["ab34"]
    assert found("ab12") == ["ab12"]
    assert found("ab123") == []
    assert found("x") == []
    assert found("a%") == ["a%b"] and found("a_") == ["a_c"]  # no wildcards
    assert found("") == ["ab12", "ab34", "Ab56", "cd78", "a%b", "a_c"]
    first = store.list_candidates_page("s1", 1, "", "ab")
    assert [c.archid for c in first.items] == ["ab12"] and first.next_page_token
    rest = store.list_candidates_page("s1", 1, first.next_page_token, "ab")
    assert [c.archid for c in rest.items] == ["ab34"] and not rest.next_page_token
    with pytest.raises(NotFound):
        store.list_candidates_page("nope", 0, "", "ab")


def test_a_candidate_keeps_the_model_its_search_builds(store: Store) -> None:
    """Two searches may build different models under one archid (Archai's leaves the widths out)."""
    store.create_search("s1", "n", "c")
    store.create_search("s2", "n", "c")
    document = '{"stem_stride": 2}'
    first = store.add_candidate(Candidate("s1", "a", 0, (), 0.0, document, 1_000_018, "m18"))
    second = store.add_candidate(Candidate("s2", "a", 0, (), 0.0, document, 1_000_007, "m7"))
    assert (first.document, first.params, first.model) == (document, 1_000_018, "m18")
    assert store.list_candidates("s2") == [second] and second.params == 1_000_007
    for change in ({"document": "{}"}, {"params": 1}, {"model": "m7"}):
        with pytest.raises(StoreConflict, match="a"):
            store.add_candidate(dataclasses.replace(first, **change))
    with pytest.raises(InvalidInput, match="document"):
        store.add_candidate(Candidate("s1", "b", 0, (), 0.0, "[1, 2]", 1, "m"))


def test_candidates_unknown_search(store: Store) -> None:
    with pytest.raises(NotFound):
        store.add_candidate(Candidate("nope", "a", 0))
    with pytest.raises(NotFound):
        store.list_candidates("nope")


# --- evaluations ---
def test_evaluation_round_trip_and_idempotent(store: Store) -> None:
    ev = _evaluation()
    stored = store.put_evaluation(ev)
    assert stored.created_at > 0
    assert stored == dataclasses.replace(ev, created_at=stored.created_at)
    assert store.put_evaluation(ev) == stored  # first write wins, timestamp included
    assert store.put_evaluation(dataclasses.replace(ev, created_at=5.0)) == stored
    assert store.get_evaluations([ev.key]) == {ev.key: stored}
    explicit = store.put_evaluation(dataclasses.replace(_evaluation(_key("a2")), created_at=7.5))
    assert explicit.created_at == 7.5


@pytest.mark.parametrize(
    "change",
    [
        {"value": 0.5},
        {"unit": "ms"},
        {"details": {"runs": [0.1, 0.2]}},
        {"worker": "w2"},
        {"seconds": 1.25},
        {"value": 0.125 + 1e-15},
    ],
)
def test_evaluation_conflicts(store: Store, change: dict[str, Any]) -> None:
    ev = store.put_evaluation(_evaluation())
    with pytest.raises(StoreConflict, match="a1"):
        store.put_evaluation(dataclasses.replace(ev, **change))
    assert store.get_evaluations([ev.key]) == {ev.key: ev}


def test_evaluation_key_parts_are_distinct(store: Store) -> None:
    keys = [_key(), _key(objective="Partial Training Val. IOU"), _key(budget="b2"), _key(target="t2")]
    keys += [_key(model="m2"), _key(model="")]  # another built model; one stored before keys named it
    stored = [store.put_evaluation(_evaluation(k, value=float(i))) for i, k in enumerate(keys)]
    assert store.get_evaluations(keys) == {s.key: s for s in stored}
    assert store.get_evaluations([_key(model="m3")]) == {}
    assert len(store.list_evaluations(["a1"])) == 6


def test_evaluation_nan_value(store: Store) -> None:
    ev = dataclasses.replace(_evaluation(), value=math.nan)
    stored = store.put_evaluation(ev)
    assert math.isnan(stored.value)
    again = store.put_evaluation(ev)
    assert math.isnan(again.value) and again.created_at == stored.created_at
    with pytest.raises(StoreConflict):
        store.put_evaluation(dataclasses.replace(ev, value=1.0))


def test_get_evaluations_subset_many_keys(store: Store) -> None:
    stored = {}
    for i in range(60):
        for objective in ("o1", "o2"):
            ev = store.put_evaluation(_evaluation(_key(f"arch{i:04d}", objective), value=i / 7))
            stored[ev.key] = ev
    wanted = [_key(f"arch{i:04d}", o) for i in range(0, 700) for o in ("o1", "o2")]
    wanted += [_key("arch0001", "o1", budget="other"), _key("arch0002", "o1", target="other")]
    wanted += wanted[:10]  # duplicates are harmless
    assert len(wanted) > 1000
    assert store.get_evaluations(wanted) == stored
    assert store.get_evaluations([]) == {}
    assert store.get_evaluations([_key("missing")]) == {}


def test_list_evaluations(store: Store) -> None:
    evs = [
        store.put_evaluation(_evaluation(_key(a, o, b, t)))
        for a in ("a1", "a2", "a3")
        for o, b, t in (("o1", "b1", "t1"), ("o2", "b2", "t2"))
    ]

    def keys(found: list[Evaluation]) -> set[EvalKey]:
        return {e.key for e in found}

    assert keys(store.list_evaluations(["a1", "a3", "missing"])) == {
        e.key for e in evs if e.key.archid != "a2"
    }
    assert sorted(store.list_evaluations(["a2"]), key=lambda e: e.key.objective) == evs[2:4]
    assert store.list_evaluations([]) == []
    assert store.list_evaluations(["missing"]) == []


# --- iterations ---
def test_iterations_round_trip_order_idempotence(store: Store) -> None:
    store.create_search("s1", "n", "c")
    stored = {i: store.put_iteration(_iteration(iteration=i)) for i in (2, 0, 1)}
    assert all(r.created_at > 0 for r in stored.values())
    assert stored[0] == dataclasses.replace(_iteration(), created_at=stored[0].created_at)
    assert store.list_iterations("s1") == [stored[0], stored[1], stored[2]]
    assert store.put_iteration(_iteration(iteration=1)) == stored[1]


@pytest.mark.parametrize(
    "change",
    [{"pareto": ("a1",)}, {"hypervolume": 0.5}, {"state": {"rng": [1]}}, {"walltime_s": 1.0}],
)
def test_iteration_conflicts(store: Store, change: dict[str, Any]) -> None:
    store.create_search("s1", "n", "c")
    stored = store.put_iteration(_iteration())
    with pytest.raises(StoreConflict, match="s1"):
        store.put_iteration(dataclasses.replace(_iteration(), **change))
    assert store.list_iterations("s1") == [stored]


def test_iterations_unknown_search(store: Store) -> None:
    with pytest.raises(NotFound):
        store.put_iteration(_iteration("nope"))
    with pytest.raises(NotFound):
        store.list_iterations("nope")


# --- events ---
def test_events_order_paging(store: Store) -> None:
    store.create_search("s1", "n", "c")
    store.create_search("s2", "n", "c")
    appended = [store.append_event("s1", f"k{i}", {"i": i, "nested": {"x": [i]}}) for i in range(1, 8)]
    assert [e.seq for e in appended] == list(range(1, 8))
    assert appended[0].payload == {"i": 1, "nested": {"x": [1]}} and appended[0].created_at > 0
    assert store.append_event("s2", "other", {}).seq == 1
    assert store.list_events("s1") == appended
    assert store.list_events("s1", after_seq=2) == appended[2:]
    assert store.list_events("s1", after_seq=2, limit=3) == appended[2:5]
    assert store.list_events("s1", limit=1) == appended[:1]
    assert store.list_events("s1", after_seq=7) == []
    assert [e.seq for e in store.list_events("s2")] == [1]


def test_events_unknown_search(store: Store) -> None:
    with pytest.raises(NotFound):
        store.append_event("nope", "k", {})
    with pytest.raises(NotFound):
        store.list_events("nope")


def test_a_tokened_event_is_logged_once(store: Store) -> None:
    store.create_search("s1", "n", "c")
    first = store.append_event("s1", "evaluation", {"v": 1}, token="t-1")
    again = store.append_event("s1", "evaluation", {"v": 1}, token="t-1")  # a retry after a lost reply
    other = store.append_event("s1", "evaluation", {"v": 2}, token="t-2")
    untokened = store.append_event("s1", "note", {})
    assert again == first and (first.seq, other.seq, untokened.seq) == (1, 2, 3)
    assert [e.seq for e in store.list_events("s1")] == [1, 2, 3]


def test_concurrent_tokened_appends_log_once(store: Store) -> None:
    store.create_search("s1", "n", "c")
    results = _run_threads(8, lambda i: store.append_event("s1", "k", {"n": i % 2}, token=f"t{i % 2}"))
    seqs = {_ok(r).seq for r in results}
    assert seqs == {1, 2} and [e.seq for e in store.list_events("s1")] == [1, 2]


# --- search state: targets and failures ---
def test_targets_are_recorded_once_per_objective(store: Store) -> None:
    store.create_search("s1", "n", "c")
    assert store.get_targets("s1") == {}
    assert store.put_targets("s1", {"lat": "cpu/x86/t1", "iou": "train/gpu"}) == {
        "iou": "train/gpu",
        "lat": "cpu/x86/t1",
    }
    assert store.put_targets("s1", {"lat": "cpu/x86/t1"}) == {"iou": "train/gpu", "lat": "cpu/x86/t1"}
    with pytest.raises(StoreConflict, match="target"):
        store.put_targets("s1", {"lat": "cpu/arm/t4"})  # a search's results never mix two targets
    assert store.get_targets("s1") == {"iou": "train/gpu", "lat": "cpu/x86/t1"}
    with pytest.raises(NotFound):
        store.put_targets("nope", {"lat": "x"})
    with pytest.raises(NotFound):
        store.get_targets("nope")


def test_failures_first_wins_in_order(store: Store) -> None:
    store.create_search("s1", "n", "c")
    first = store.put_failure(Failure("s1", "a2", "lat", "cannot be exported", "not_evaluable"))
    store.put_failure(Failure("s1", "a1", "iou", "gave up after 4 attempts", "attempts"))
    again = store.put_failure(Failure("s1", "a2", "lat", "another reason", "error"))
    assert again == first and first.created_at > 0
    assert [(f.archid, f.reason, f.kind) for f in store.list_failures("s1")] == [
        ("a2", "cannot be exported", "not_evaluable"),
        ("a1", "gave up after 4 attempts", "attempts"),
    ]
    with pytest.raises(NotFound):
        store.put_failure(Failure("nope", "a1", "lat", "x"))
    with pytest.raises(NotFound):
        store.list_failures("nope")


# --- durability ---
def test_durability_close_and_reopen(backend: Backend) -> None:
    first = backend.open()
    search = first.create_search("s1", "n", "c")
    search = first.set_search_status("s1", SearchStatus.RUNNING)
    arch = first.put_arch(ArchRecord("a1", "{}", 10))
    cand = first.add_candidate(Candidate("s1", "a1", 0))
    ev = first.put_evaluation(_evaluation())
    it = first.put_iteration(_iteration())
    events = [first.append_event("s1", "k", {"i": i}) for i in range(3)]
    first.close()

    second = backend.open()
    try:
        assert second.get_search("s1") == search
        assert second.get_arch("a1") == arch
        assert second.list_candidates("s1") == [cand]
        assert second.get_evaluations([ev.key]) == {ev.key: ev}
        assert second.list_iterations("s1") == [it]
        assert second.list_events("s1") == events
        assert second.append_event("s1", "k", {}).seq == 4
    finally:
        second.close()


# --- concurrency ---
def test_concurrent_append_event_is_gap_free(store: Store) -> None:
    store.create_search("s1", "n", "c")

    def append(i: int) -> list[int]:
        return [store.append_event("s1", "k", {"thread": i, "n": n}).seq for n in range(25)]

    results = _run_threads(8, append)
    seqs = [seq for r in results for seq in _ok(r)]
    assert sorted(seqs) == list(range(1, 201))
    listed = store.list_events("s1", limit=1000)
    assert [e.seq for e in listed] == list(range(1, 201))
    assert sorted((e.payload["thread"], e.payload["n"]) for e in listed) == [
        (t, n) for t in range(8) for n in range(25)
    ]


def test_concurrent_idempotent_put_evaluation(store: Store) -> None:
    results = _run_threads(8, lambda _i: store.put_evaluation(_evaluation()))
    stored = [_ok(r) for r in results]
    assert all(s == stored[0] for s in stored)
    assert store.list_evaluations(["a1"]) == [stored[0]]


def test_concurrent_conflicting_put_evaluation_first_wins(store: Store) -> None:
    results = _run_threads(8, lambda i: store.put_evaluation(_evaluation(value=float(i))))
    winners = [r for r in results if isinstance(r, Evaluation)]
    assert len(winners) == 1, results
    assert all(isinstance(r, StoreConflict) for r in results if r is not winners[0])
    assert store.list_evaluations(["a1"]) == winners


def test_concurrent_create_search(store: Store) -> None:
    results = _run_threads(8, lambda _i: store.create_search("s1", "n", "c"))
    created = [_ok(r) for r in results]
    assert all(c == created[0] for c in created)
    assert store.list_searches() == [created[0]]


def _ok(result: T | BaseException) -> T:
    if isinstance(result, BaseException):
        raise result
    return result


def _append_in_process(url: str, count: int) -> list[int]:
    """Child-process body: open the store by URL and append ``count`` events."""
    child = open_store(url)
    try:
        return [child.append_event("s1", "proc", {"n": n}).seq for n in range(count)]
    finally:
        child.close()


def test_multiprocess_append_event(sql_backend: Backend) -> None:
    assert sql_backend.url is not None
    store = sql_backend.open()
    store.create_search("s1", "n", "c")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pending = [pool.apply_async(_append_in_process, (sql_backend.url, 100)) for _ in range(2)]
        mine = [store.append_event("s1", "parent", {"n": n}).seq for n in range(20)]
        seqs = mine + [seq for p in pending for seq in p.get(timeout=60)]
    assert sorted(seqs) == list(range(1, 221))
    assert [e.seq for e in store.list_events("s1")] == list(range(1, 221))
    store.close()


# --- SQL specifics: schema version, URLs, unavailability ---
def test_a_v1_store_is_migrated_with_its_targets_and_failures(sql_backend: Backend) -> None:
    """Schema 1 kept a search's targets and failures only as events: opening it copies them to records."""
    assert sql_backend.url is not None
    store = sql_backend.open()
    store.create_search("s1", "n", "c")
    store.append_event("s1", "targets", {"targets": {"lat": "old"}})
    store.append_event("s1", "targets", {"targets": {"lat": "cpu/x86", "iou": "train"}})
    store.append_event("s1", "evaluation_failed", {"archid": "a1", "objective": "lat", "error": "bad"})
    store.append_event("s1", "other", {"archid": "a2"})
    store.close()
    engine = create_engine(normalise_url(sql_backend.url))
    with engine.begin() as conn:  # back to what schema 1 held
        conn.execute(text("DELETE FROM targets"))
        conn.execute(text("DELETE FROM failures"))
        conn.execute(text("UPDATE schema_version SET version = 1"))
    engine.dispose()
    migrated = SqlStore.from_url(sql_backend.url)
    try:
        assert migrated.get_targets("s1") == {"iou": "train", "lat": "cpu/x86"}
        assert [(f.archid, f.objective, f.reason) for f in migrated.list_failures("s1")] == [
            ("a1", "lat", "bad")
        ]
    finally:
        migrated.close()


_V2 = MetaData()
_V2_CANDIDATES = Table(  # schema 2's candidates and evaluations, as facenas wrote them
    "candidates",
    _V2,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("search_id", Text, nullable=False),
    Column("archid", Text, nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("parents", Text, nullable=False),
    Column("proposed_at", Double, nullable=False),
    UniqueConstraint("search_id", "archid", name="uq_candidates_search_arch"),
)
_V2_EVALUATIONS = Table(
    "evaluations",
    _V2,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    *(Column(c, Text, nullable=False) for c in ("archid", "objective", "budget", "target")),
    Column("value", Double),
    Column("unit", Text, nullable=False),
    Column("details", Text, nullable=False),
    Column("worker", Text, nullable=False),
    Column("seconds", Double),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("archid", "objective", "budget", "target", name="uq_evaluations_key"),
)


def test_a_v2_store_keeps_its_results_apart_from_keys_that_name_the_model(sql_backend: Backend) -> None:
    """Schema 2's evaluation keys named no model: they stay readable under model "" (as do their
    searches' candidates, which get their archid's document and params) and never match a new key."""
    assert sql_backend.url is not None
    store = sql_backend.open()
    store.create_search("s1", "n", "c")
    store.put_arch(ArchRecord("a1", '{"base_ch": 16}', 123_456))
    store.close()
    engine = create_engine(normalise_url(sql_backend.url))
    with engine.begin() as conn:  # back to what schema 2 held
        conn.execute(text("DROP TABLE candidates"))
        conn.execute(text("DROP TABLE evaluations"))
        _V2.create_all(conn)
        conn.execute(
            _V2_CANDIDATES.insert().values(
                search_id="s1", archid="a1", iteration=0, parents="[]", proposed_at=1.0
            )
        )
        old = {"archid": "a1", "objective": "lat", "budget": "b", "target": "t", "value": 0.25}
        extra = {"unit": "s", "details": "{}", "worker": "w", "seconds": 1.0, "created_at": 2.0}
        conn.execute(_V2_EVALUATIONS.insert().values(**old, **extra))
        conn.execute(text("UPDATE schema_version SET version = 2"))
    engine.dispose()
    migrated = SqlStore.from_url(sql_backend.url)
    try:
        [candidate] = migrated.list_candidates("s1")
        assert (candidate.document, candidate.params, candidate.model) == ('{"base_ch": 16}', 123_456, "")
        legacy, new = EvalKey("a1", "lat", "b", "t"), EvalKey("a1", "lat", "b", "t", "m1")
        assert migrated.get_evaluations([legacy])[legacy].value == 0.25
        assert migrated.get_evaluations([new]) == {}
        stored = migrated.put_evaluation(Evaluation(new, 0.5, "s"))
        assert migrated.get_evaluations([legacy, new]) == {
            legacy: migrated.get_evaluations([legacy])[legacy],
            new: stored,
        }
        with pytest.raises(StoreConflict):
            migrated.put_evaluation(Evaluation(legacy, 0.75, "s"))
    finally:
        migrated.close()
    SqlStore.from_url(sql_backend.url).close()  # opening it again changes nothing


def test_newer_schema_version_is_refused(sql_backend: Backend) -> None:
    assert sql_backend.url is not None
    sql_backend.open().close()  # creates the schema
    engine = create_engine(normalise_url(sql_backend.url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = 999"))
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="999"):
        SqlStore.from_url(sql_backend.url)


def test_open_store_forms(tmp_path: Path) -> None:
    bare = open_store(str(tmp_path / "sub" / "bare.db"))
    bare.create_search("s1", "n", "c")
    bare.close()
    assert (tmp_path / "sub" / "bare.db").exists()
    again = open_store(f"sqlite:///{tmp_path / 'sub' / 'bare.db'}")
    assert again.get_search("s1").name == "n"
    again.close()
    assert normalise_url("postgresql://u@h:5432/db").drivername == "postgresql+psycopg"


@pytest.mark.parametrize("url", ["", "mysql://u@h/db", "sqlite://", "sqlite:///:memory:", "http://x"])
def test_open_store_rejects(url: str) -> None:
    with pytest.raises(InvalidInput, match="sqlite:///"):
        open_store(url)


def test_unreachable_postgres_is_unavailable() -> None:
    with pytest.raises(StoreUnavailable) as raised:
        open_store("postgresql://someone:s3cret@127.0.0.1:1/nothing")
    assert "127.0.0.1:1" in str(raised.value) and "s3cret" not in str(raised.value)
