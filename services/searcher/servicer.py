"""The Searcher servicer: proto requests in, SearchManager calls, proto replies out."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc

from facenas import limits
from facenas.errors import ConfigError
from facenas.limits import Page, fill_page
from facenas.search.manager import SearchManager
from facenas.search.protoconv import pareto_to_proto, snapshot_to_proto, summary_to_proto
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
        """A page of searches, cut at the reply budget of ``facenas.limits``."""

        def fetch(offset: int, n: int) -> Page[searcher_pb2.SearchSummary]:
            found = self.manager.list_page(n, limits.page_token(offset))
            return Page([summary_to_proto(s) for s in found.items], found.next_page_token)

        page = fill_page(fetch, lambda m: m.ByteSize() + 8, request.page_size, request.page_token)
        return searcher_pb2.ListSearchesReply(searches=page.items, next_page_token=page.next_page_token)

    def WatchSearch(self, request: searcher_pb2.WatchSearchRequest, context: Ctx) -> Iterator[Any]:
        gone = threading.Event()
        context.add_callback(gone.set)
        for event in self.manager.watch(request.search_id, request.after_seq, gone):
            yield event_to_proto(event)

    def GetPareto(self, request: searcher_pb2.SearchRef, context: Ctx) -> Any:
        return pareto_to_proto(self.manager.pareto(request.search_id))

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
        self.manager.cancel(request.search_id, requested_by=context.peer())
        return summary_to_proto(self.manager.summary(request.search_id))

    def ResumeSearch(self, request: searcher_pb2.SearchRef, context: Ctx) -> Any:
        self.manager.resume(request.search_id)
        return summary_to_proto(self.manager.summary(request.search_id))

    def ExportSearch(self, request: searcher_pb2.ExportSearchRequest, context: Ctx) -> Any:
        """A page of the export, cut before the reply passes the budget of ``facenas.limits``."""
        page = self.manager.export_page(
            request.search_id, request.page_size, request.page_token, request.all_documents
        )
        reply = snapshot_to_proto(page.snapshot)
        used = reply.ByteSize() - sum(c.ByteSize() + 8 for c in reply.candidates)
        taken = 0
        for candidate in reply.candidates:
            used += candidate.ByteSize() + 8
            if taken and used > limits.REPLY_BUDGET_BYTES:
                break
            taken += 1
        del reply.candidates[taken:]
        reply.next_page_token = page.token_after(taken)
        return reply
