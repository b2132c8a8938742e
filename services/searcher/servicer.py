"""The Searcher servicer: proto requests in, SearchManager calls, proto replies out."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc

from facenas.errors import ConfigError
from facenas.search.manager import SearchManager
from facenas.search.protoconv import snapshot_to_proto, summary_to_proto
from facenas.store.protoconv import event_to_proto
from facenas.v1 import common_pb2, searcher_pb2, searcher_pb2_grpc, store_pb2

Ctx = grpc.ServicerContext


class SearcherServicer(searcher_pb2_grpc.SearcherServicer):
    """Serves a :class:`SearchManager`; errors map to status codes in the server's interceptor."""

    def __init__(self, manager: SearchManager) -> None:
        self.manager = manager

    def ValidateConfig(self, request: searcher_pb2.StartSearchRequest, context: Ctx) -> Any:
        try:
            self.manager.validate(request.config)
        except ConfigError as err:
            return searcher_pb2.ValidateConfigReply(problems=err.problems)
        return searcher_pb2.ValidateConfigReply()

    def StartSearch(self, request: searcher_pb2.StartSearchRequest, context: Ctx) -> Any:
        record = self.manager.start(request.config, request.name, request.search_id)
        return summary_to_proto(self.manager.summary(record.search_id))

    def GetSearch(self, request: searcher_pb2.SearchRef, context: Ctx) -> Any:
        return summary_to_proto(self.manager.summary(request.search_id))

    def ListSearches(self, request: store_pb2.ListSearchesRequest, context: Ctx) -> Any:
        return searcher_pb2.ListSearchesReply(searches=[summary_to_proto(s) for s in self.manager.list()])

    def WatchSearch(self, request: searcher_pb2.WatchSearchRequest, context: Ctx) -> Iterator[Any]:
        gone = threading.Event()
        context.add_callback(gone.set)
        for event in self.manager.watch(request.search_id, request.after_seq, gone):
            yield event_to_proto(event)

    def GetPareto(self, request: searcher_pb2.SearchRef, context: Ctx) -> Any:
        snapshot = self.manager.snapshot(request.search_id)
        reply = searcher_pb2.ParetoReply(
            search_id=snapshot.search_id, objective_names=[o.name for o in snapshot.objectives]
        )
        if not snapshot.iterations:
            return reply
        last = snapshot.iterations[-1]
        by_id = {c.archid: c for c in snapshot.candidates}
        reply.iteration = last.iteration
        reply.hypervolume = last.hypervolume
        for archid in last.pareto:
            c = by_id[archid]
            reply.points.append(
                searcher_pb2.ParetoPoint(archid=archid, iteration=c.iteration, objectives=dict(c.values))
            )
        return reply

    def GetArchitecture(self, request: searcher_pb2.GetArchitectureRequest, context: Ctx) -> Any:
        c = self.manager.get_candidate(request.search_id, request.archid)
        return searcher_pb2.ArchitectureReply(
            architecture=common_pb2.Architecture(archid=c.archid, json=c.document),
            params=c.params,
            objectives=dict(c.values),
            parents=list(c.parents),
            iteration=c.iteration,
        )

    def CancelSearch(self, request: searcher_pb2.SearchRef, context: Ctx) -> Any:
        self.manager.cancel(request.search_id)
        return summary_to_proto(self.manager.summary(request.search_id))

    def ResumeSearch(self, request: searcher_pb2.SearchRef, context: Ctx) -> Any:
        self.manager.resume(request.search_id)
        return summary_to_proto(self.manager.summary(request.search_id))

    def ExportSearch(self, request: searcher_pb2.SearchRef, context: Ctx) -> Any:
        return snapshot_to_proto(self.manager.snapshot(request.search_id))
