"""The Store gRPC servicer: a thin adapter from proto requests to a :class:`Store`."""

from __future__ import annotations

from typing import Any

import grpc

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
        return store_pb2.ListSearchesResponse(
            searches=[pc.search_to_proto(s) for s in self.store.list_searches()]
        )

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
        found = self.store.list_candidates(request.search_id)
        return store_pb2.ListCandidatesResponse(candidates=[pc.candidate_to_proto(c) for c in found])

    def PutEvaluation(self, request: store_pb2.Evaluation, context: Ctx) -> Any:
        return pc.evaluation_to_proto(self.store.put_evaluation(pc.evaluation_from_proto(request)))

    def GetEvaluations(self, request: store_pb2.GetEvaluationsRequest, context: Ctx) -> Any:
        found = self.store.get_evaluations([pc.key_from_proto(k) for k in request.keys])
        return store_pb2.EvaluationList(evaluations=[pc.evaluation_to_proto(e) for e in found.values()])

    def ListEvaluations(self, request: store_pb2.ListEvaluationsRequest, context: Ctx) -> Any:
        found = self.store.list_evaluations(list(request.archids))
        return store_pb2.EvaluationList(evaluations=[pc.evaluation_to_proto(e) for e in found])

    def PutIteration(self, request: store_pb2.IterationRecord, context: Ctx) -> Any:
        return pc.iteration_to_proto(self.store.put_iteration(pc.iteration_from_proto(request)))

    def ListIterations(self, request: store_pb2.ListIterationsRequest, context: Ctx) -> Any:
        found = self.store.list_iterations(request.search_id)
        return store_pb2.ListIterationsResponse(iterations=[pc.iteration_to_proto(i) for i in found])

    def AppendEvent(self, request: store_pb2.AppendEventRequest, context: Ctx) -> Any:
        payload = pc.loads_json(request.payload_json, "payload_json")
        return pc.event_to_proto(self.store.append_event(request.search_id, request.kind, payload))

    def ListEvents(self, request: store_pb2.ListEventsRequest, context: Ctx) -> Any:
        limit = request.limit or 1000
        found = self.store.list_events(request.search_id, request.after_seq, limit)
        return store_pb2.ListEventsResponse(events=[pc.event_to_proto(e) for e in found])
