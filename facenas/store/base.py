"""The store contract: the only owner of durable state.

Every implementation (SQLite, PostgreSQL via SQLAlchemy; the gRPC client of the store service) must
pass ``tests/contract/test_store_contract.py``. The contract:

* Thread safety: every method may be called concurrently from several threads and processes.
* Idempotence: every ``put_*``/``add_*``/``create_*`` may be repeated with the same data and returns
  what is stored; ``append_event`` with a ``token`` may be repeated and logs once. Re-writing an
  existing key with *different* data is a :class:`StoreConflict` (evaluations, architectures,
  candidates, iterations and targets are immutable once written), except :meth:`set_search_status`,
  which is a state change, and :meth:`put_failure`, where the first write wins.
* Durability: a method that returned has committed; a crash afterwards loses nothing.
* Reads return immutable domain records; unknown ids raise :class:`NotFound`.
* Limits: every write is checked against ``facenas.limits`` before anything is written (sizes of text
  fields, JSON payloads that are objects of bounded depth and size, number ranges); a record over a
  limit is refused with :class:`~facenas.errors.InvalidInput`. Lists are read in pages
  (``*_page(..., page_size, page_token)``; the plain ``list_*`` methods follow every page).
* Reads are queries: what a client shows of a search (:meth:`search_progress`, :meth:`get_candidates`,
  a page of anything) costs a few indexed queries whatever the search's size.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Mapping, Sequence

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
from facenas.errors import Conflict, InvalidInput, NotFound, Unavailable
from facenas.limits import MAX_REQUEST_KEYS, Page, all_pages

__all__ = ["NotFound", "Store", "StoreConflict", "StoreUnavailable"]


class StoreConflict(Conflict):
    """An immutable record was re-written with different data."""


class StoreUnavailable(Unavailable):
    """The backing database cannot be reached."""


class Store(abc.ABC):
    """Durable state of facenas; see the module docstring for the contract."""

    # --- searches -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_search(self, search_id: str, name: str, config: str) -> SearchRecord:
        """Create a search in PENDING state (idempotent for identical name and config)."""

    @abc.abstractmethod
    def get_search(self, search_id: str) -> SearchRecord: ...

    def list_searches(self) -> list[SearchRecord]:
        """All searches, oldest first."""
        return all_pages(lambda token: self.list_searches_page(0, token))

    @abc.abstractmethod
    def list_searches_page(self, page_size: int = 0, page_token: str = "") -> Page[SearchRecord]:
        """A page of searches, oldest first."""

    @abc.abstractmethod
    def set_search_status(self, search_id: str, status: SearchStatus, error: str = "") -> SearchRecord: ...

    # --- architectures and candidates -----------------------------------------------------------------
    @abc.abstractmethod
    def put_arch(self, arch: ArchRecord) -> ArchRecord:
        """Record an archid's document and parameter count. Searches stopped writing these at schema 3:
        one archid can build different models in different spaces, so a candidate keeps its own."""

    @abc.abstractmethod
    def get_arch(self, archid: str) -> ArchRecord: ...

    @abc.abstractmethod
    def add_candidate(self, candidate: Candidate) -> Candidate:
        """Record that ``candidate.archid`` was proposed in a search (once per search and archid), with
        the document, parameter count and model fingerprint the search's space gives it."""

    def list_candidates(self, search_id: str) -> list[Candidate]:
        """Candidates of a search in the order they were first added."""
        return all_pages(lambda token: self.list_candidates_page(search_id, 0, token))

    @abc.abstractmethod
    def list_candidates_page(
        self,
        search_id: str,
        page_size: int = 0,
        page_token: str = "",
        archid_prefix: str = "",
        documents: bool = True,
    ) -> Page[Candidate]:
        """A page of a search's candidates in the order they were first added; with ``archid_prefix``
        only those whose archid starts with it (case-sensitive); without their documents (``""``) unless
        ``documents``."""

    @abc.abstractmethod
    def get_candidates(self, search_id: str, archids: Sequence[str]) -> dict[str, Candidate]:
        """The search's candidates among ``archids`` (at most ``MAX_REQUEST_KEYS``; others are absent)."""

    @abc.abstractmethod
    def put_outcomes(self, search_id: str, outcomes: Mapping[str, Outcome]) -> dict[str, Outcome]:
        """Record how candidates settled (archid -> outcome, at most ``MAX_REQUEST_KEYS``; each archid a
        candidate of the search). The first outcome of a candidate wins and is returned on repeats."""

    def get_all_candidates(self, search_id: str, archids: Sequence[str]) -> dict[str, Candidate]:
        """:meth:`get_candidates` for any number of archids."""
        found: dict[str, Candidate] = {}
        for start in range(0, len(archids), MAX_REQUEST_KEYS):
            found.update(self.get_candidates(search_id, archids[start : start + MAX_REQUEST_KEYS]))
        return found

    def put_all_outcomes(self, search_id: str, outcomes: Mapping[str, Outcome]) -> None:
        """:meth:`put_outcomes` for any number of candidates."""
        items = sorted(outcomes.items())
        for start in range(0, len(items), MAX_REQUEST_KEYS):
            self.put_outcomes(search_id, dict(items[start : start + MAX_REQUEST_KEYS]))

    @abc.abstractmethod
    def search_progress(self, search_ids: Sequence[str]) -> dict[str, SearchProgress]:
        """How far each search is (at most ``MAX_REQUEST_KEYS``; unknown ids are absent): its candidates,
        their recorded outcomes, its last iteration record. A few queries for the whole batch."""

    # --- evaluations -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def put_evaluation(self, evaluation: Evaluation) -> Evaluation:
        """Store a result; the first write of a key wins and is returned on repeats."""

    @abc.abstractmethod
    def get_evaluations(self, keys: Sequence[EvalKey]) -> dict[EvalKey, Evaluation]:
        """The stored subset of ``keys`` (missing keys are simply absent)."""

    def list_evaluations(self, archids: Sequence[str]) -> list[Evaluation]:
        """Every evaluation of the given architectures, any objective, budget or target."""
        wanted = sorted(set(archids))
        found: list[Evaluation] = []
        for start in range(0, len(wanted), MAX_REQUEST_KEYS):
            chunk = wanted[start : start + MAX_REQUEST_KEYS]
            found.extend(all_pages(functools.partial(self.list_evaluations_page, chunk, 0)))
        return found

    @abc.abstractmethod
    def list_evaluations_page(
        self, archids: Sequence[str], page_size: int = 0, page_token: str = ""
    ) -> Page[Evaluation]:
        """A page of the evaluations of at most ``MAX_REQUEST_KEYS`` architectures, oldest first."""

    # --- iterations ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def put_iteration(self, record: IterationRecord) -> IterationRecord: ...

    def list_iterations(self, search_id: str) -> list[IterationRecord]:
        """Iterations of a search by increasing number."""
        return all_pages(lambda token: self.list_iterations_page(search_id, 0, token))

    @abc.abstractmethod
    def list_iterations_page(
        self, search_id: str, page_size: int = 0, page_token: str = ""
    ) -> Page[IterationRecord]:
        """A page of a search's iterations by increasing number."""

    # --- search state: targets and failures ---------------------------------------------------------------
    @abc.abstractmethod
    def put_targets(self, search_id: str, targets: Mapping[str, str]) -> dict[str, str]:
        """Record the target key each objective of a search is measured on (objective -> target); a
        different target for an objective already recorded is a :class:`StoreConflict`. Returns every
        target of the search."""

    @abc.abstractmethod
    def get_targets(self, search_id: str) -> dict[str, str]:
        """The search's recorded targets (empty before the search first connected)."""

    @abc.abstractmethod
    def put_failure(self, failure: Failure) -> Failure:
        """Record that a candidate failed for good (once per search and archid; the first wins)."""

    @abc.abstractmethod
    def list_failures(self, search_id: str, archids: Sequence[str] | None = None) -> list[Failure]:
        """The search's failed candidates in the order they failed; only those among ``archids`` (at most
        ``MAX_REQUEST_KEYS``) when given."""

    # --- events -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def append_event(self, search_id: str, kind: str, payload: dict[str, object], token: str = "") -> Event:
        """Append to a search's log; ``seq`` is assigned by the store (1, 2, ...). With a ``token`` the
        append is idempotent: a repeat returns the event first logged under it."""

    def append_events(self, search_id: str, events: Sequence[NewEvent]) -> list[Event]:
        """Append up to ``MAX_REQUEST_KEYS`` events in order, as :meth:`append_event` does each (an
        implementation may write them in one transaction: all or none)."""
        if len(events) > MAX_REQUEST_KEYS:
            raise InvalidInput(f"events: {len(events)} is more than {MAX_REQUEST_KEYS} per request")
        return [self.append_event(search_id, e.kind, dict(e.payload), e.token) for e in events]

    @abc.abstractmethod
    def list_events(self, search_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
