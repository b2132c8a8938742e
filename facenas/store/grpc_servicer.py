"""The Store gRPC servicer: a thin adapter from proto requests to a :class:`Store`.

List replies are pages filled up to ``facenas.limits.REPLY_BUDGET_BYTES`` (see :func:`fill_page`), so
no reply can pass the message limit however large the stored records are.
"""

from __future__ import annotations

from typing import Any

import grpc

from facenas import limits
from facenas.domain import NewEvent
from facenas.errors import InvalidInput
from facenas.limits import Page, fill_page
from facenas.store import protoconv as pc
from facenas.store.base import Store
from facenas.v1 import store_pb2, store_pb2_grpc

Ctx = grpc.ServicerContext


class StoreServicer(store_pb2_grpc.StoreServicer):
    """Serves ``store``; errors map to status codes in the server's interceptor."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def CreateSearch(self, request: store_pb2.CreateSearchRequest, context: Ctx) -> Any:
        return pc.search_to_proto(self.store.create_search(request.search_id, request.name, request.config))

    def GetSearch(self, request: store_pb2.GetSearchRequest, context: Ctx) -> Any:
        return pc.search_to_proto(self.store.get_search(request.search_id))

    def ListSearches(self, request: store_pb2.ListSearchesRequest, context: Ctx) -> Any:
        def fetch(offset: int, n: int) -> Page[store_pb2.SearchRecord]:
            found = self.store.list_searches_page(n, limits.page_token(offset))
            return Page([pc.search_to_proto(s) for s in found.items], found.next_page_token)

        page = fill_page(fetch, _size, request.page_size, request.page_token)
        return store_pb2.ListSearchesResponse(searches=page.items, next_page_token=page.next_page_token)

    def SetSearchStatus(self, request: store_pb2.SetSearchStatusRequest, context: Ctx) -> Any:
        status = pc.status_from_proto(request.status)
        return pc.search_to_proto(self.store.set_search_status(request.search_id, status, request.error))

    def PutArch(self, request: store_pb2.ArchRecord, context: Ctx) -> Any:
        return pc.arch_to_proto(self.store.put_arch(pc.arch_from_proto(request)))

    def GetArch(self, request: store_pb2.GetArchRequest, context: Ctx) -> Any:
        return pc.arch_to_proto(self.store.get_arch(request.archid))

    def AddCandidate(self, request: store_pb2.Candidate, context: Ctx) -> Any:
        return pc.candidate_to_proto(self.store.add_candidate(pc.candidate_from_proto(request)))

    def ListCandidates(self, request: store_pb2.ListCandidatesRequest, context: Ctx) -> Any:
        def fetch(offset: int, n: int) -> Page[store_pb2.Candidate]:
            found = self.store.list_candidates_page(
                request.search_id,
                n,
                limits.page_token(offset),
                request.archid_prefix,
                not request.without_documents,
            )
            return Page([pc.candidate_to_proto(c) for c in found.items], found.next_page_token)

        page = fill_page(fetch, _size, request.page_size, request.page_token)
        return store_pb2.ListCandidatesResponse(candidates=page.items, next_page_token=page.next_page_token)

    def GetCandidates(self, request: store_pb2.GetCandidatesRequest, context: Ctx) -> Any:
        found = self.store.get_candidates(request.search_id, list(request.archids))
        return store_pb2.CandidateList(candidates=[pc.candidate_to_proto(c) for c in found.values()])

    def PutOutcomes(self, request: store_pb2.CandidateOutcomes, context: Ctx) -> Any:
        outcomes = pc.outcomes_from_proto(request)
        stored = self.store.put_outcomes(request.search_id, outcomes)
        return store_pb2.CandidateOutcomes(
            search_id=request.search_id, outcomes={a: o.value for a, o in stored.items()}
        )

    def GetSearchProgress(self, request: store_pb2.GetSearchProgressRequest, context: Ctx) -> Any:
        found = self.store.search_progress(list(request.search_ids))
        return store_pb2.SearchProgressList(progress=[pc.progress_to_proto(p) for p in found.values()])

    def PutEvaluation(self, request: store_pb2.Evaluation, context: Ctx) -> Any:
        return pc.evaluation_to_proto(self.store.put_evaluation(pc.evaluation_from_proto(request)))

    def GetEvaluations(self, request: store_pb2.GetEvaluationsRequest, context: Ctx) -> Any:
        if len(request.keys) > limits.MAX_REQUEST_KEYS:
            raise InvalidInput(
                f"keys: {len(request.keys)} is more than {limits.MAX_REQUEST_KEYS} per request"
            )
        found = self.store.get_evaluations([pc.key_from_proto(k) for k in request.keys])
        return store_pb2.EvaluationList(evaluations=[pc.evaluation_to_proto(e) for e in found.values()])

    def ListEvaluations(self, request: store_pb2.ListEvaluationsRequest, context: Ctx) -> Any:
        archids = list(request.archids)

        def fetch(offset: int, n: int) -> Page[store_pb2.Evaluation]:
            found = self.store.list_evaluations_page(archids, n, limits.page_token(offset))
            return Page([pc.evaluation_to_proto(e) for e in found.items], found.next_page_token)

        page = fill_page(fetch, _size, request.page_size, request.page_token)
        return store_pb2.EvaluationList(evaluations=page.items, next_page_token=page.next_page_token)

    def PutIteration(self, request: store_pb2.IterationRecord, context: Ctx) -> Any:
        return pc.iteration_to_proto(self.store.put_iteration(pc.iteration_from_proto(request)))

    def ListIterations(self, request: store_pb2.ListIterationsRequest, context: Ctx) -> Any:
        def fetch(offset: int, n: int) -> Page[store_pb2.IterationRecord]:
            found = self.store.list_iterations_page(request.search_id, n, limits.page_token(offset))
            return Page([pc.iteration_to_proto(i) for i in found.items], found.next_page_token)

        page = fill_page(fetch, _size, request.page_size, request.page_token)
        return store_pb2.ListIterationsResponse(iterations=page.items, next_page_token=page.next_page_token)

    def AppendEvent(self, request: store_pb2.AppendEventRequest, context: Ctx) -> Any:
        payload = pc.loads_json(request.payload_json, "payload_json")
        event = self.store.append_event(request.search_id, request.kind, payload, request.token)
        return pc.event_to_proto(event)

    def AppendEvents(self, request: store_pb2.AppendEventsRequest, context: Ctx) -> Any:
        drafts = [
            NewEvent(e.kind, pc.loads_json(e.payload_json, "payload_json"), e.token) for e in request.events
        ]
        logged = self.store.append_events(request.search_id, drafts)
        return store_pb2.EventList(events=[pc.event_to_proto(e) for e in logged])

    def PutTargets(self, request: store_pb2.SearchTargets, context: Ctx) -> Any:
        stored = self.store.put_targets(request.search_id, dict(request.targets))
        return store_pb2.SearchTargets(search_id=request.search_id, targets=stored)

    def GetTargets(self, request: store_pb2.GetTargetsRequest, context: Ctx) -> Any:
        found = self.store.get_targets(request.search_id)
        return store_pb2.SearchTargets(search_id=request.search_id, targets=found)

    def PutFailure(self, request: store_pb2.Failure, context: Ctx) -> Any:
        return pc.failure_to_proto(self.store.put_failure(pc.failure_from_proto(request)))

    def ListFailures(self, request: store_pb2.ListFailuresRequest, context: Ctx) -> Any:
        found = self.store.list_failures(request.search_id, list(request.archids) or None)
        return store_pb2.ListFailuresResponse(failures=[pc.failure_to_proto(f) for f in found])

    def ListEvents(self, request: store_pb2.ListEventsRequest, context: Ctx) -> Any:
        """Events after ``after_seq`` (or the page token's seq), at most ``limit``, cut at the byte budget."""
        if request.limit < 0:
            raise InvalidInput(f"limit: {request.limit} must not be negative")
        limit = min(request.limit or limits.MAX_PAGE_SIZE, limits.MAX_PAGE_SIZE)
        seq = limits.page_offset(request.page_token) if request.page_token else request.after_seq
        reply = store_pb2.ListEventsResponse()
        used = 0
        while len(reply.events) < limit:
            want = min(limits.FETCH_CHUNK, limit - len(reply.events))
            chunk = self.store.list_events(request.search_id, seq, want)
            for event in chunk:
                message = pc.event_to_proto(event)
                if reply.events and used + _size(message) > limits.REPLY_BUDGET_BYTES:
                    reply.next_page_token = limits.page_token(seq)
                    return reply
                reply.events.append(message)
                used += _size(message)
                seq = event.seq
            if len(chunk) < want:
                return reply
        reply.next_page_token = limits.page_token(seq)
        return reply


def _size(message: Any) -> int:
    """Bytes a message adds to a reply as a repeated field (its size plus tag and length)."""
    return int(message.ByteSize()) + 8
