"""proto <-> domain conversion for the searcher API (used by its servicer and by the CLI client)."""

from __future__ import annotations

from facenas.domain import Direction
from facenas.search.manager import SearchSummaryData
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
