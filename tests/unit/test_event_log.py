"""The run's event log (QueuedEventLog): appends never wait on the store, land in order, and are all
written before close() returns (a run's events before its end status)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from facenas.domain import Event, NewEvent
from facenas.errors import Unavailable
from facenas.search.recorder import QueuedEventLog
from facenas.store import SqlStore


class HeldStore(SqlStore):
    """append_event waits for ``open`` (a slow or unreachable store)."""

    open: threading.Event
    refuse = False
    calls = 0

    def append_events(self, search_id: str, events: Sequence[NewEvent]) -> list[Event]:
        self.open.wait()
        if self.refuse:
            raise Unavailable("store out")
        self.calls += 1
        return super().append_events(search_id, events)


@pytest.fixture
def store(tmp_path: Path) -> HeldStore:
    opened = HeldStore.from_url(f"sqlite:///{tmp_path / 'store.db'}")
    opened.open = threading.Event()
    opened.create_search("s1", "s1", "c")
    return opened


def test_appends_do_not_wait_and_land_in_order(store: HeldStore) -> None:
    log = QueuedEventLog(store, "s1")
    for i in range(50):
        log("evaluation", {"i": i})  # returns although the store holds every write
    assert store.list_events("s1") == []
    store.open.set()
    assert log.flush(timeout=30)
    assert [e.payload["i"] for e in store.list_events("s1")] == list(range(50))
    assert store.calls <= 2  # in batches, not one store call each
    log.close()
    log("completed", {})  # after close: written at once
    assert store.list_events("s1")[-1].kind == "completed"


def test_close_writes_what_is_queued_first(store: HeldStore) -> None:
    log = QueuedEventLog(store, "s1")
    log("evaluation", {"i": 1})
    log("evaluation", {"i": 2})
    threading.Timer(0.2, store.open.set).start()
    log.close()
    assert [e.payload.get("i") for e in store.list_events("s1")] == [1, 2]


def test_a_store_that_never_takes_them_loses_them_at_close_not_the_run(store: HeldStore) -> None:
    store.refuse = True
    store.open.set()
    log = QueuedEventLog(store, "s1", limit=3)
    for i in range(5):  # 2 over the limit are dropped at once
        log("evaluation", {"i": i})
    log.close(timeout=5)  # each refused write is dropped: close returns
    store.refuse = False
    assert store.list_events("s1") == []
