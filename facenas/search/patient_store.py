"""``PatientStore``: the searcher's view of the store, which waits out outages instead of failing.

Every call is retried while the store is unreachable (:class:`StoreUnavailable`), with backoff, for up
to :attr:`OutagePolicy.patience_s` (30 minutes by default); every store write is idempotent, so a retry
never duplicates anything (events carry a token). A result that arrives meanwhile waits in its caller
and lands when the store is back. While it waits, :class:`Outages` reports ``waiting for store``.
``closing`` (the searcher shutting down) ends a wait with :class:`Cancelled`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from facenas.domain import (
    ArchRecord,
    Candidate,
    EvalKey,
    Evaluation,
    Event,
    Failure,
    IterationRecord,
    NewEvent,
    Outcome,
    SearchProgress,
    SearchRecord,
    SearchStatus,
)
from facenas.errors import Cancelled
from facenas.limits import Page
from facenas.search.outages import Outage, OutagePolicy, Outages
from facenas.store.base import Store, StoreUnavailable

T = TypeVar("T")

STORE = "store"


class PatientStore(Store):
    """Delegates to ``inner``; waits out its outages (see the module docstring)."""

    def __init__(
        self,
        inner: Store,
        policy: OutagePolicy | None = None,
        outages: Outages | None = None,
        closing: threading.Event | None = None,
    ) -> None:
        self.inner = inner
        self.policy = policy or OutagePolicy()
        self.outages = outages or Outages()
        self.closing = closing or threading.Event()

    def _patient(self, call: Callable[[], T]) -> T:
        began: float | None = None
        joined: Outage | None = None
        attempt = 0
        try:
            while True:
                try:
                    result = call()
                except StoreUnavailable as err:
                    now = time.monotonic()
                    if joined is not None and not self.outages.ongoing(joined):
                        # the store answered another caller since: this is a new outage, with its own
                        # patience and shown as one (a caller backing off may miss the store's return)
                        self.outages.end(STORE, recovered=False)
                        began = None
                    if began is None:
                        began = now
                        joined = self.outages.begin(STORE, str(err))
                    if now - began >= self.policy.patience_s:
                        raise StoreUnavailable(
                            f"the store stayed unreachable for {now - began:.0f} s "
                            f"(patience {self.policy.patience_s:.0f} s): {err}"
                        ) from None
                    if self.closing.wait(self.policy.backoff(attempt)):
                        raise Cancelled("searcher shutting down while waiting for the store") from None
                    attempt += 1
                    continue
                if began is not None:
                    self.outages.end(STORE, recovered=True)
                    began, joined = None, None
                return result
        finally:
            if began is not None:
                self.outages.end(STORE, recovered=False)

    # --- delegation (every call patient) ------------------------------------------------------------
    def create_search(self, search_id: str, name: str, config: str) -> SearchRecord:
        return self._patient(lambda: self.inner.create_search(search_id, name, config))

    def get_search(self, search_id: str) -> SearchRecord:
        return self._patient(lambda: self.inner.get_search(search_id))

    def list_searches_page(self, page_size: int = 0, page_token: str = "") -> Page[SearchRecord]:
        return self._patient(lambda: self.inner.list_searches_page(page_size, page_token))

    def set_search_status(self, search_id: str, status: SearchStatus, error: str = "") -> SearchRecord:
        return self._patient(lambda: self.inner.set_search_status(search_id, status, error))

    def put_arch(self, arch: ArchRecord) -> ArchRecord:
        return self._patient(lambda: self.inner.put_arch(arch))

    def get_arch(self, archid: str) -> ArchRecord:
        return self._patient(lambda: self.inner.get_arch(archid))

    def add_candidate(self, candidate: Candidate) -> Candidate:
        return self._patient(lambda: self.inner.add_candidate(candidate))

    def list_candidates_page(
        self,
        search_id: str,
        page_size: int = 0,
        page_token: str = "",
        archid_prefix: str = "",
        documents: bool = True,
    ) -> Page[Candidate]:
        return self._patient(
            lambda: self.inner.list_candidates_page(
                search_id, page_size, page_token, archid_prefix, documents
            )
        )

    def get_candidates(self, search_id: str, archids: Sequence[str]) -> dict[str, Candidate]:
        return self._patient(lambda: self.inner.get_candidates(search_id, archids))

    def put_outcomes(self, search_id: str, outcomes: Mapping[str, Outcome]) -> dict[str, Outcome]:
        return self._patient(lambda: self.inner.put_outcomes(search_id, outcomes))

    def search_progress(self, search_ids: Sequence[str]) -> dict[str, SearchProgress]:
        return self._patient(lambda: self.inner.search_progress(search_ids))

    def put_evaluation(self, evaluation: Evaluation) -> Evaluation:
        return self._patient(lambda: self.inner.put_evaluation(evaluation))

    def get_evaluations(self, keys: Sequence[EvalKey]) -> dict[EvalKey, Evaluation]:
        return self._patient(lambda: self.inner.get_evaluations(keys))

    def list_evaluations_page(
        self, archids: Sequence[str], page_size: int = 0, page_token: str = ""
    ) -> Page[Evaluation]:
        return self._patient(lambda: self.inner.list_evaluations_page(archids, page_size, page_token))

    def put_iteration(self, record: IterationRecord) -> IterationRecord:
        return self._patient(lambda: self.inner.put_iteration(record))

    def list_iterations_page(
        self, search_id: str, page_size: int = 0, page_token: str = ""
    ) -> Page[IterationRecord]:
        return self._patient(lambda: self.inner.list_iterations_page(search_id, page_size, page_token))

    def put_targets(self, search_id: str, targets: Mapping[str, str]) -> dict[str, str]:
        return self._patient(lambda: self.inner.put_targets(search_id, targets))

    def get_targets(self, search_id: str) -> dict[str, str]:
        return self._patient(lambda: self.inner.get_targets(search_id))

    def put_failure(self, failure: Failure) -> Failure:
        return self._patient(lambda: self.inner.put_failure(failure))

    def list_failures(self, search_id: str, archids: Sequence[str] | None = None) -> list[Failure]:
        return self._patient(lambda: self.inner.list_failures(search_id, archids))

    def append_event(self, search_id: str, kind: str, payload: dict[str, object], token: str = "") -> Event:
        return self._patient(lambda: self.inner.append_event(search_id, kind, payload, token))

    def append_events(self, search_id: str, events: Sequence[NewEvent]) -> list[Event]:
        return self._patient(lambda: self.inner.append_events(search_id, events))

    def list_events(self, search_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        return self._patient(lambda: self.inner.list_events(search_id, after_seq, limit))

    def close(self) -> None:
        self.inner.close()
