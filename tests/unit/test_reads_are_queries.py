"""Reads are queries: what the searcher answers about a search (GetSearch, ListSearches, GetPareto,
GetArchitecture) costs the same store calls whatever the search's size, no call reads the whole search,
and ExportSearch comes in pages that each stay under the reply budget."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from facenas import limits
from facenas.domain import Candidate, EvalKey, Evaluation, Failure, IterationRecord, Outcome, budget_key
from facenas.search.config import parse_search_config
from facenas.search.history import violation
from facenas.search.manager import SearchManager
from facenas.search.protoconv import export_search, snapshot_from_proto
from facenas.space.hgnet import HgnetSearchSpace
from facenas.store import SqlStore
from facenas.v1 import searcher_pb2
from services.searcher.servicer import SearcherServicer
from tests.integration.conftest import tiny_search

TARGET = "cpu/test/t1/64x64"
#: calls that read every candidate, evaluation, failure or record of a search
WHOLE = {"list_candidates", "list_failures_all", "list_evaluations", "list_iterations"}


class CountingStore(SqlStore):
    """Counts the store calls made through it (by name; ``list_failures`` without archids is
    ``list_failures_all``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattribute__(self, name: str) -> Any:
        found = super().__getattribute__(name)
        if name.startswith("_") or not callable(found) or name in ("calls", "from_url", "url"):
            return found
        calls: collections.Counter[str] = super().__getattribute__("calls")

        def counted(*args: Any, **kwargs: Any) -> Any:
            archids = args[1] if len(args) > 1 else kwargs.get("archids")
            calls[f"{name}_all" if name == "list_failures" and archids is None else name] += 1
            return found(*args, **kwargs)

        return counted


def fill(store: SqlStore, search_id: str, n: int, algorithm: str = "evolution_pareto") -> list[str]:
    """A finished search of ``n`` candidates in the shapes the engine writes (two objectives each,
    outcomes, one iteration record per 10 candidates, every 7th failed)."""
    text = tiny_search(algorithm=algorithm)
    config = parse_search_config(text)
    store.create_search(search_id, search_id, text)
    space = HgnetSearchSpace(config.space, seed=1)
    document = space.random_sample().to_json()
    targets = {o.name: TARGET for o in config.objectives}
    store.put_targets(search_id, targets)
    archids = [f"{search_id}-{i:036d}" for i in range(n)]
    outcomes: dict[str, Outcome] = {}
    for i, archid in enumerate(archids):
        store.add_candidate(Candidate(search_id, archid, i // 10, (), 0.0, document, 1000 + i, "m"))
        if i % 7 == 3:
            store.put_failure(Failure(search_id, archid, config.objectives[0].name, "boom"))
            outcomes[archid] = Outcome.FAILED
            continue
        values: dict[str, float] = {}
        for j, objective in enumerate(config.objectives):
            budget = budget_key(objective.name, config.budget, config.img_size)
            values[objective.name] = 0.01 * (i + 1) if j else 1.0 / (i + 1)
            key = EvalKey(archid, objective.name, budget, TARGET, "m")
            store.put_evaluation(Evaluation(key, values[objective.name], "s"))
        infeasible = violation(values, config.objectives)
        outcomes[archid] = Outcome.INFEASIBLE if infeasible else Outcome.COMPLETE
    store.put_all_outcomes(search_id, outcomes)
    for k in range((n + 9) // 10):
        members = archids[k * 10 : (k + 1) * 10]
        front = tuple(a for a in members if outcomes[a] == Outcome.COMPLETE)[:3]
        state = {"rng": [], "reference": None, "cache_hits": k, "evaluated": members}
        store.put_iteration(IterationRecord(search_id, k, front, 0.5 + k, state, float(k)))
    return archids


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    opened = CountingStore.from_url(f"sqlite:///{tmp_path / 'store.db'}")
    yield opened
    opened.close()


def _calls(store: CountingStore, read: Callable[[], Any]) -> collections.Counter[str]:
    store.calls.clear()
    read()
    return collections.Counter(store.calls)


@pytest.mark.parametrize("algorithm", ["evolution_pareto", "random_search"])
def test_each_read_costs_the_same_calls_for_a_small_and_a_large_search(
    store: CountingStore, algorithm: str
) -> None:
    small, large = fill(store, "small", 20, algorithm), fill(store, "large", 400, algorithm)
    manager = SearchManager(store, {})
    reads: dict[str, Callable[[str, list[str]], Any]] = {
        "summary": lambda s, _: manager.summary(s),
        "pareto": lambda s, _: manager.pareto(s),
        "architecture": lambda s, a: manager.get_candidate(s, a[-1]),
        "export page": lambda s, _: manager.export_page(s, 10),
    }
    for name, read in reads.items():
        on_small = _calls(store, lambda r=read: r("small", small))  # type: ignore[misc]
        on_large = _calls(store, lambda r=read: r("large", large))  # type: ignore[misc]
        assert on_small == on_large, name
        assert not WHOLE & set(on_large) - {"list_iterations"}, (name, on_large)
    assert not WHOLE & set(_calls(store, lambda: manager.summary("large")))
    assert not WHOLE & set(_calls(store, lambda: manager.pareto("large")))


def test_a_page_of_searches_costs_one_progress_query(store: CountingStore) -> None:
    for i in range(12):
        fill(store, f"s{i:02d}", 5 + i)
    manager = SearchManager(store, {})
    calls = _calls(store, lambda: manager.list_page(10))
    assert calls == {"list_searches_page": 1, "search_progress": 1}, calls
    page = manager.list_page(10)
    assert [s.candidates for s in page.items] == [5 + i for i in range(10)]
    whole = manager.snapshot("s03")
    assert page.items[3].evaluations_done == sum(c.complete(whole.objectives) for c in whole.candidates)
    assert page.items[3].iterations_done == 1 and page.items[3].cache_hits == 0
    assert len(manager.list_page(10, page.next_page_token).items) == 2


def test_counts_and_front_match_the_whole_search(store: CountingStore) -> None:
    archids = fill(store, "s1", 95)
    manager = SearchManager(store, {})
    summary = manager.summary("s1")
    snapshot = manager.snapshot("s1")
    complete = [c for c in snapshot.candidates if c.complete(snapshot.objectives)]
    assert (summary.candidates, summary.evaluations_done) == (95, len(complete))
    assert (summary.iterations_done, summary.hypervolume, summary.cache_hits) == (10, 9.5, 9)
    pareto = manager.pareto("s1")
    assert [p.archid for p in pareto.points] == list(snapshot.iterations[-1].pareto)
    by_id = {c.archid: c for c in snapshot.candidates}
    assert all(p.values == by_id[p.archid].values for p in pareto.points)
    assert archids[-1] in by_id


def test_a_search_stored_before_outcomes_is_counted_once_then_by_query(store: CountingStore) -> None:
    fill(store, "old", 30)
    with store._tx(write=True) as conn:  # schema 3 kept no outcomes
        from facenas.store.sql import outcomes

        conn.execute(outcomes.delete())
    manager = SearchManager(store, {})
    whole = manager.snapshot("old")
    complete = sum(c.complete(whole.objectives) for c in whole.candidates)
    assert 0 < complete < 30 and manager.summary("old").evaluations_done == complete
    calls = _calls(store, lambda: manager.summary("old"))
    assert not WHOLE & set(calls), calls
    assert store.search_progress(["old"])["old"].failed == sum(1 for i in range(30) if i % 7 == 3)


def test_export_pages_stay_under_the_reply_budget(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store, "s1", 120)
    manager = SearchManager(store, {})
    servicer = SearcherServicer(manager)
    budget = 40_000
    monkeypatch.setattr(limits, "REPLY_BUDGET_BYTES", budget)
    sizes: list[int] = []

    def fetch(request: searcher_pb2.ExportSearchRequest) -> searcher_pb2.SearchExport:
        reply = servicer.ExportSearch(request, None)  # type: ignore[arg-type]
        sizes.append(reply.ByteSize())
        return reply

    whole = export_search(fetch, "s1", all_documents=True, page_size=1000)
    assert len(sizes) > 3 and max(sizes) <= budget + 200, sizes
    snapshot = manager.snapshot("s1")
    assert snapshot_from_proto(whole) == snapshot
    # by default only the candidates on some front carry their document
    lean = export_search(fetch, "s1")
    fronts = {a for i in snapshot.iterations for a in i.pareto}
    assert {c.archid for c in lean.candidates if c.document} == fronts
    assert len(lean.candidates) == 120


def test_an_export_counts_every_page_by_the_records_of_its_first(store: CountingStore) -> None:
    """Records written while an export is read do not change the iterations of its later pages."""
    fill(store, "s1", 40, "async_evolution_pareto")
    manager = SearchManager(store, {})
    first = manager.export_page("s1", 20)
    assert first.more and [i.iteration for i in first.snapshot.iterations] == [0, 1, 2, 3]
    store.create_search("other", "o", tiny_search())  # unrelated writes
    second = manager.export_page("s1", 20, first.token_after(20))
    assert not second.more and second.snapshot.iterations == ()
    assert [c.iteration for c in second.snapshot.candidates] == [2] * 10 + [3] * 10
    assert second.token_after(len(second.snapshot.candidates)) == ""


def test_an_export_reads_only_the_records_this_searcher_does_not_know(store: CountingStore) -> None:
    fill(store, "s1", 95)
    manager = SearchManager(store, {})
    read: list[int] = []
    listed = store.list_iterations_page

    def counted(search_id: str, page_size: int = 0, page_token: str = "") -> Any:
        page = listed(search_id, page_size, page_token)
        read.append(len(page.items))
        return page

    store.list_iterations_page = counted  # type: ignore[method-assign]
    first = manager.export_page("s1", 50)
    assert sum(read) == 10 and len(first.snapshot.iterations) == 10
    manager.export_page("s1", 50, first.token_after(50))  # later pages: none read
    assert sum(read) == 10
    record = IterationRecord("s1", 10, (), 0.0, {"evaluated": []}, 1.0)
    manager._recorded(store.put_iteration(record))  # as a run of this searcher tells it
    again = manager.export_page("s1", 50)
    assert sum(read) == 10 and [i.iteration for i in again.snapshot.iterations] == list(range(11))
    store.put_iteration(IterationRecord("s1", 11, (), 0.0, {"evaluated": []}, 1.0))  # written elsewhere
    assert len(manager.export_page("s1", 50).snapshot.iterations) == 12 and sum(read) == 11


def test_reads_of_an_asynchronous_search_take_its_records_from_the_searchers_cache(
    store: CountingStore,
) -> None:
    """GetPareto and GetArchitecture of an asynchronous search count candidates by its iteration records:
    after the first read they ask the store only for records newer than those this searcher holds (they
    read every record, RNG states included, on every call: 250 ms at 10,000 evaluations on our VM)."""
    archids = fill(store, "async", 400, "async_evolution_pareto")
    manager = SearchManager(store, {})
    manager.pareto("async")
    for read in (lambda: manager.pareto("async"), lambda: manager.get_candidate("async", archids[-1])):
        calls = _calls(store, read)
        assert "list_iterations" not in calls and calls["list_iterations_page"] == 1, calls
