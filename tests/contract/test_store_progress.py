"""The store's query contract (schema 4): candidates by archid, outcomes, search progress in a few queries,
failures of given candidates, and arch documents stored once. Run against every backend."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import create_engine, func, select, text

from facenas.domain import Candidate, Failure, IterationRecord, NewEvent, Outcome, SearchProgress
from facenas.errors import InvalidInput, NotFound
from facenas.limits import MAX_REQUEST_KEYS
from facenas.store import SqlStore, Store
from facenas.store.sql import candidates, documents, normalise_url
from tests.contract.conftest import Backend

DOCUMENT = '{\n    "stem_stride": 2,\n    "base_ch": 48,\n    "hourglasses": []\n}'


def _search(store: Store, search_id: str, n: int) -> list[str]:
    store.create_search(search_id, search_id, "c")
    archids = [f"{search_id}-a{i:03d}" for i in range(n)]
    for i, archid in enumerate(archids):
        store.add_candidate(Candidate(search_id, archid, i // 10, (), 0.0, DOCUMENT + " " * i, 1000 + i, "m"))
    return archids


def test_candidates_by_archid_in_request_order(store: Store) -> None:
    archids = _search(store, "s1", 5)
    found = store.get_candidates("s1", [archids[3], "nope", archids[0]])
    assert list(found) == [archids[3], archids[0]]
    assert found[archids[3]] == store.list_candidates("s1")[3]
    assert found[archids[3]].document == DOCUMENT + "   "
    assert store.get_candidates("s1", []) == {}
    with pytest.raises(NotFound):
        store.get_candidates("nope", [archids[0]])
    with pytest.raises(InvalidInput, match="per request"):
        store.get_candidates("s1", [f"a{i}" for i in range(MAX_REQUEST_KEYS + 1)])


def test_outcomes_first_wins_and_count_in_progress(store: Store) -> None:
    archids = _search(store, "s1", 6)
    first = {archids[0]: Outcome.COMPLETE, archids[1]: Outcome.INFEASIBLE, archids[2]: Outcome.FAILED}
    assert store.put_outcomes("s1", first) == first
    again = store.put_outcomes("s1", {archids[0]: Outcome.FAILED, archids[3]: Outcome.COMPLETE})
    assert again == {archids[0]: Outcome.COMPLETE, archids[3]: Outcome.COMPLETE}
    progress = store.search_progress(["s1"])["s1"]
    assert progress == SearchProgress("s1", candidates=6, complete=2, infeasible=1, failed=1)
    assert progress.settled == 4


def test_outcomes_are_checked(store: Store) -> None:
    archids = _search(store, "s1", 1)
    with pytest.raises(InvalidInput, match="not one of"):
        store.put_outcomes("s1", {archids[0]: "done"})  # type: ignore[dict-item]
    with pytest.raises(NotFound, match="no candidate"):
        store.put_outcomes("s1", {"not-a-candidate": Outcome.COMPLETE})
    with pytest.raises(NotFound):
        store.put_outcomes("nope", {archids[0]: Outcome.COMPLETE})
    assert store.search_progress(["s1"])["s1"].settled == 0


def test_progress_of_many_searches_with_their_last_iteration(store: Store) -> None:
    _search(store, "s1", 3)
    _search(store, "s2", 12)
    store.create_search("empty", "empty", "c")
    for k in range(3):
        store.put_iteration(IterationRecord("s2", k, (f"s2-a00{k}",), 0.5 + k, {"cache_hits": k}, 10.0 * k))
    found = store.search_progress(["s2", "unknown", "empty", "s1"])
    assert list(found) == ["s2", "empty", "s1"]
    assert found["s1"] == SearchProgress("s1", candidates=3)
    assert found["empty"] == SearchProgress("empty")
    last = found["s2"].last_iteration
    assert found["s2"].candidates == 12
    assert last is not None and (last.iteration, last.pareto, last.hypervolume) == (2, ("s2-a002",), 2.5)
    assert last.state == {"cache_hits": 2}
    assert store.search_progress([]) == {}
    with pytest.raises(InvalidInput, match="per request"):
        store.search_progress([f"s{i}" for i in range(MAX_REQUEST_KEYS + 1)])


def test_failures_of_given_candidates(store: Store) -> None:
    archids = _search(store, "s1", 4)
    for archid in archids[:3]:
        store.put_failure(Failure("s1", archid, "lat", f"boom {archid}"))
    assert [f.archid for f in store.list_failures("s1", [archids[2], archids[0], archids[3]])] == [
        archids[0],
        archids[2],
    ]
    assert store.list_failures("s1", []) == []
    assert len(store.list_failures("s1")) == 3


def test_a_document_is_stored_once_and_deflated(sql_backend: Backend) -> None:
    """Two searches proposing the same arch keep one copy of its document, deflated."""
    assert sql_backend.url is not None
    store = sql_backend.open()
    try:
        big = (
            "{\n"
            + ",\n".join(f'    "k{i}": {{"_config_type": "config_list", "v": {i}}}' for i in range(400))
            + "\n}"
        )
        for search_id in ("s1", "s2"):
            store.create_search(search_id, search_id, "c")
            store.add_candidate(Candidate(search_id, "a1", 0, (), 0.0, big, 10, "m"))
            assert store.add_candidate(Candidate(search_id, "a1", 0, (), 0.0, big, 10, "m")).document == big
        assert store.get_candidates("s2", ["a1"])["a1"].document == big
    finally:
        store.close()
    engine = create_engine(normalise_url(sql_backend.url))
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(documents)).scalar_one() == 1
            body = conn.execute(select(documents.c.body)).scalar_one()
            assert len(body) * 10 < len(big)
            assert set(conn.execute(select(candidates.c.document)).scalars()) == {""}
    finally:
        engine.dispose()


def test_a_v3_store_moves_its_documents(sql_backend: Backend) -> None:
    """Schema 3 kept a document in each candidate row: schema 4 moves them to ``documents``, once each."""
    assert sql_backend.url is not None
    store = sql_backend.open()
    store.create_search("s1", "n", "c")
    store.create_search("s2", "n", "c")
    for search_id in ("s1", "s2"):
        store.add_candidate(Candidate(search_id, "a1", 0, (), 0.0, DOCUMENT, 10, "m"))
    store.close()
    engine = create_engine(normalise_url(sql_backend.url))
    with engine.begin() as conn:  # back to what schema 3 held
        conn.execute(text("DELETE FROM documents"))
        conn.execute(text(f"UPDATE candidates SET document = '{DOCUMENT}', document_digest = ''"))
        conn.execute(text("UPDATE schema_version SET version = 3"))
    engine.dispose()
    migrated = SqlStore.from_url(sql_backend.url)
    try:
        assert [c.document for s in ("s1", "s2") for c in migrated.list_candidates(s)] == [DOCUMENT] * 2
        assert migrated.search_progress(["s1"])["s1"] == SearchProgress("s1", candidates=1)
    finally:
        migrated.close()
    engine = create_engine(normalise_url(sql_backend.url))
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(documents)).scalar_one() == 1
    finally:
        engine.dispose()


def test_events_appended_in_batches_in_order_and_once_per_token(store: Store) -> None:
    store.create_search("s1", "s1", "c")
    first = store.append_events("s1", [NewEvent("a", {"i": 1}, "t1"), NewEvent("b", {"i": 2})])
    assert [(e.seq, e.kind) for e in first] == [(1, "a"), (2, "b")]
    again = store.append_events("s1", [NewEvent("a", {"i": 1}, "t1"), NewEvent("c", {"i": 3}, "t3")])
    assert [(e.seq, e.kind) for e in again] == [(1, "a"), (3, "c")]
    assert [e.kind for e in store.list_events("s1")] == ["a", "b", "c"]
    assert store.append_events("s1", []) == []
    with pytest.raises(InvalidInput, match="per request"):
        store.append_events("s1", [NewEvent("k", {})] * (MAX_REQUEST_KEYS + 1))
    with pytest.raises(InvalidInput):  # checked before anything is written
        store.append_events("s1", [NewEvent("d", {"i": 4}), NewEvent("", {})])
    assert [e.kind for e in store.list_events("s1")] == ["a", "b", "c"]
    with pytest.raises(NotFound):
        store.append_events("nope", [NewEvent("a", {})])
    # a token twice in one batch is logged once; a batch of logged tokens logs nothing
    twice = store.append_events("s1", [NewEvent("d", {}, "t4"), NewEvent("e", {}), NewEvent("d", {}, "t4")])
    assert [(e.seq, e.kind) for e in twice] == [(4, "d"), (5, "e"), (4, "d")]
    assert [e.seq for e in store.append_events("s1", [NewEvent("a", {}, "t1"), NewEvent("d", {}, "t4")])] == [
        1,
        4,
    ]
    assert [e.seq for e in store.list_events("s1")] == [1, 2, 3, 4, 5]


def test_a_page_of_candidates_without_their_documents(store: Store) -> None:
    archids = _search(store, "s1", 3)
    lean = store.list_candidates_page("s1", 10, "", documents=False).items
    full = store.list_candidates("s1")
    assert [c.archid for c in lean] == archids and all(c.document == "" for c in lean)
    assert [dataclasses.replace(c, document="") for c in full] == lean
