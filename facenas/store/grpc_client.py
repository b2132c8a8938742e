"""``GrpcStore``: the :class:`Store` interface over the store service (what the searcher uses)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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
from facenas.errors import Conflict, Unavailable
from facenas.rpc.client import call, make_channel
from facenas.store import protoconv as pc
from facenas.store.base import Store, StoreConflict, StoreUnavailable
from facenas.v1 import store_pb2, store_pb2_grpc

T = TypeVar("T")


class GrpcStore(Store):
    """Every call has a deadline and is retried on UNAVAILABLE (all store writes are idempotent)."""

    def __init__(self, target: str, timeout: float = 30.0, attempts: int = 5) -> None:
        self.target = target
        self.timeout = timeout
        self.attempts = attempts
        self._channel = make_channel(target)
        self._stub = store_pb2_grpc.StoreStub(self._channel)

    def _call(self, method: Callable[..., T], request: Any) -> T:
        try:
            return call(method, request, self.timeout, self.attempts)
        except Conflict as err:
            raise StoreConflict(str(err)) from None
        except Unavailable as err:
            raise StoreUnavailable(f"store at {self.target}: {err}") from None

    def create_search(self, search_id: str, name: str, config: str) -> SearchRecord:
        req = store_pb2.CreateSearchRequest(search_id=search_id, name=name, config=config)
        return pc.search_from_proto(self._call(self._stub.CreateSearch, req))

    def get_search(self, search_id: str) -> SearchRecord:
        req = store_pb2.GetSearchRequest(search_id=search_id)
        return pc.search_from_proto(self._call(self._stub.GetSearch, req))

    def list_searches(self) -> list[SearchRecord]:
        resp = self._call(self._stub.ListSearches, store_pb2.ListSearchesRequest())
        return [pc.search_from_proto(s) for s in resp.searches]

    def set_search_status(self, search_id: str, status: SearchStatus, error: str = "") -> SearchRecord:
        req = store_pb2.SetSearchStatusRequest(
            search_id=search_id, status=pc.status_to_proto(status), error=error
        )
        return pc.search_from_proto(self._call(self._stub.SetSearchStatus, req))

    def put_arch(self, arch: ArchRecord) -> ArchRecord:
        return pc.arch_from_proto(self._call(self._stub.PutArch, pc.arch_to_proto(arch)))

    def get_arch(self, archid: str) -> ArchRecord:
        return pc.arch_from_proto(self._call(self._stub.GetArch, store_pb2.GetArchRequest(archid=archid)))

    def add_candidate(self, candidate: Candidate) -> Candidate:
        return pc.candidate_from_proto(self._call(self._stub.AddCandidate, pc.candidate_to_proto(candidate)))

    def list_candidates(self, search_id: str) -> list[Candidate]:
        resp = self._call(self._stub.ListCandidates, store_pb2.ListCandidatesRequest(search_id=search_id))
        return [pc.candidate_from_proto(c) for c in resp.candidates]

    def put_evaluation(self, evaluation: Evaluation) -> Evaluation:
        return pc.evaluation_from_proto(
            self._call(self._stub.PutEvaluation, pc.evaluation_to_proto(evaluation))
        )

    def get_evaluations(self, keys: Sequence[EvalKey]) -> dict[EvalKey, Evaluation]:
        req = store_pb2.GetEvaluationsRequest(keys=[pc.key_to_proto(k) for k in keys])
        found = (pc.evaluation_from_proto(e) for e in self._call(self._stub.GetEvaluations, req).evaluations)
        return {e.key: e for e in found}

    def list_evaluations(self, archids: Sequence[str]) -> list[Evaluation]:
        req = store_pb2.ListEvaluationsRequest(archids=list(archids))
        return [pc.evaluation_from_proto(e) for e in self._call(self._stub.ListEvaluations, req).evaluations]

    def put_iteration(self, record: IterationRecord) -> IterationRecord:
        return pc.iteration_from_proto(self._call(self._stub.PutIteration, pc.iteration_to_proto(record)))

    def list_iterations(self, search_id: str) -> list[IterationRecord]:
        resp = self._call(self._stub.ListIterations, store_pb2.ListIterationsRequest(search_id=search_id))
        return [pc.iteration_from_proto(i) for i in resp.iterations]

    def append_event(self, search_id: str, kind: str, payload: dict[str, object]) -> Event:
        req = store_pb2.AppendEventRequest(
            search_id=search_id, kind=kind, payload_json=json.dumps(payload, default=str)
        )
        # not idempotent: a retried append could log twice, so no retries here
        try:
            return pc.event_from_proto(call(self._stub.AppendEvent, req, self.timeout, attempts=1))
        except Unavailable as err:
            raise StoreUnavailable(f"store at {self.target}: {err}") from None

    def list_events(self, search_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        req = store_pb2.ListEventsRequest(search_id=search_id, after_seq=after_seq, limit=limit)
        return [pc.event_from_proto(e) for e in self._call(self._stub.ListEvents, req).events]

    def close(self) -> None:
        self._channel.close()
