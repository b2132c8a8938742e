"""The store contract: the only owner of durable state.

Every implementation (SQLite, PostgreSQL via SQLAlchemy; the gRPC client of the store service) must
pass ``tests/contract/test_store_contract.py``. The contract:

* Thread safety: every method may be called concurrently from several threads and processes.
* Idempotence: every ``put_*``/``add_*``/``create_*`` may be repeated with the same data and returns
  what is stored. Re-writing an existing key with *different* data is a :class:`StoreConflict`
  (evaluations, architectures, candidates and iterations are immutable once written), except
  :meth:`set_search_status`, which is a state change.
* Durability: a method that returned has committed; a crash afterwards loses nothing.
* Reads return immutable domain records; unknown ids raise :class:`NotFound`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from facenas.domain import (
    ArchRecord,
    Candidate,
    EvalKey,
    Evaluation,
    Event,
    IterationRecord,
    SearchRecord,
    SearchStatus,
)
from facenas.errors import Conflict, NotFound, Unavailable

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

    @abc.abstractmethod
    def list_searches(self) -> list[SearchRecord]:
        """All searches, oldest first."""

    @abc.abstractmethod
    def set_search_status(self, search_id: str, status: SearchStatus, error: str = "") -> SearchRecord: ...

    # --- architectures and candidates -----------------------------------------------------------------
    @abc.abstractmethod
    def put_arch(self, arch: ArchRecord) -> ArchRecord: ...

    @abc.abstractmethod
    def get_arch(self, archid: str) -> ArchRecord: ...

    @abc.abstractmethod
    def add_candidate(self, candidate: Candidate) -> Candidate:
        """Record that ``candidate.archid`` was proposed in a search (once per search and archid)."""

    @abc.abstractmethod
    def list_candidates(self, search_id: str) -> list[Candidate]:
        """Candidates of a search in the order they were first added."""

    # --- evaluations -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def put_evaluation(self, evaluation: Evaluation) -> Evaluation:
        """Store a result; the first write of a key wins and is returned on repeats."""

    @abc.abstractmethod
    def get_evaluations(self, keys: Sequence[EvalKey]) -> dict[EvalKey, Evaluation]:
        """The stored subset of ``keys`` (missing keys are simply absent)."""

    @abc.abstractmethod
    def list_evaluations(self, archids: Sequence[str]) -> list[Evaluation]:
        """Every evaluation of the given architectures, any objective, budget or target."""

    # --- iterations ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def put_iteration(self, record: IterationRecord) -> IterationRecord: ...

    @abc.abstractmethod
    def list_iterations(self, search_id: str) -> list[IterationRecord]:
        """Iterations of a search by increasing number."""

    # --- events -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def append_event(self, search_id: str, kind: str, payload: dict[str, object]) -> Event:
        """Append to a search's log; ``seq`` is assigned by the store (1, 2, ...)."""

    @abc.abstractmethod
    def list_events(self, search_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
