"""proto <-> domain conversion for the searcher API (used by its servicer and by the CLI client)."""

from __future__ import annotations

from collections.abc import Callable

from facenas.domain import Direction
from facenas.search.manager import ParetoData, SearchSummaryData
from facenas.search.snapshot import CandidateState, IterationState, ObjectiveInfo, SearchSnapshot
from facenas.store.protoconv import search_to_proto
from facenas.v1 import searcher_pb2


def summary_to_proto(s: SearchSummaryData) -> searcher_pb2.SearchSummary:
    return searcher_pb2.SearchSummary(
        search=search_to_proto(s.record),
        iterations_done=s.iterations_done,
        evaluations_done=s.evaluations_done,
        candidates=s.candidates,
        hypervolume=s.hypervolume,
        waiting=s.waiting,
        cache_hits=s.cache_hits,
    )


def objective_to_proto(o: ObjectiveInfo) -> searcher_pb2.Objective:
    lo, hi = o.constraint or (0.0, 0.0)
    return searcher_pb2.Objective(
        name=o.name,
        direction=o.direction.value,
        unit=o.unit,
        has_constraint=o.constraint is not None,
        constraint_min=lo,
        constraint_max=hi,
    )


def objective_from_proto(m: searcher_pb2.Objective) -> ObjectiveInfo:
    constraint = (m.constraint_min, m.constraint_max) if m.has_constraint else None
    return ObjectiveInfo(m.name, Direction(m.direction), m.unit, constraint)


def snapshot_to_proto(s: SearchSnapshot) -> searcher_pb2.SearchExport:
    return searcher_pb2.SearchExport(
        search_id=s.search_id,
        name=s.name,
        objectives=[objective_to_proto(o) for o in s.objectives],
        candidates=[
            searcher_pb2.CandidateState(
                archid=c.archid,
                iteration=c.iteration,
                parents=list(c.parents),
                params=c.params,
                document=c.document,
                values=dict(c.values),
                feasible=c.feasible,
                failed=c.failed,
                cv=dict(c.cv),
                stable=dict(c.stable),
            )
            for c in s.candidates
        ],
        iterations=[
            searcher_pb2.IterationState(
                iteration=i.iteration,
                pareto=list(i.pareto),
                hypervolume=i.hypervolume,
                walltime_s=i.walltime_s,
            )
            for i in s.iterations
        ],
    )


def snapshot_from_proto(m: searcher_pb2.SearchExport) -> SearchSnapshot:
    return SearchSnapshot(
        m.search_id,
        m.name,
        tuple(objective_from_proto(o) for o in m.objectives),
        tuple(
            CandidateState(
                c.archid,
                c.iteration,
                tuple(c.parents),
                c.params,
                c.document,
                dict(c.values),
                c.feasible,
                c.failed,
                dict(c.cv),
                dict(c.stable),
            )
            for c in m.candidates
        ),
        tuple(
            IterationState(i.iteration, tuple(i.pareto), i.hypervolume, i.walltime_s) for i in m.iterations
        ),
    )


def pareto_to_proto(p: ParetoData) -> searcher_pb2.ParetoReply:
    reply = searcher_pb2.ParetoReply(search_id=p.search_id, objective_names=[o.name for o in p.objectives])
    if p.iteration < 0:
        return reply
    reply.iteration = p.iteration
    reply.hypervolume = p.hypervolume
    for c in p.points:
        reply.points.append(
            searcher_pb2.ParetoPoint(archid=c.archid, iteration=c.iteration, objectives=dict(c.values))
        )
    return reply


def export_search(
    fetch: Callable[[searcher_pb2.ExportSearchRequest], searcher_pb2.SearchExport],
    search_id: str,
    all_documents: bool = False,
    page_size: int = 0,
) -> searcher_pb2.SearchExport:
    """Every page of a search's export as one message (for use here, not for sending); ``fetch`` calls
    ExportSearch, e.g. ``lambda r: stub.ExportSearch(r, timeout=60)``."""
    request = searcher_pb2.ExportSearchRequest(
        search_id=search_id, page_size=page_size, all_documents=all_documents
    )
    whole = fetch(request)
    token = whole.next_page_token
    while token:
        request.page_token = token
        page = fetch(request)
        whole.candidates.extend(page.candidates)
        token = page.next_page_token
    whole.next_page_token = ""
    return whole
