"""proto <-> domain conversion for store records (used by the store servicer and its client)."""

from __future__ import annotations

import json
from typing import Any

from facenas import limits
from facenas.domain import (
    ArchRecord,
    Candidate,
    EvalKey,
    Evaluation,
    Event,
    Failure,
    IterationRecord,
    Outcome,
    SearchProgress,
    SearchRecord,
    SearchStatus,
)
from facenas.errors import InvalidInput
from facenas.limits import MAX_PAYLOAD_JSON_BYTES, MAX_STATE_JSON_BYTES, parse_json_object
from facenas.v1 import store_pb2

_STATUS_TO_PROTO = {
    SearchStatus.PENDING: store_pb2.SEARCH_STATUS_PENDING,
    SearchStatus.RUNNING: store_pb2.SEARCH_STATUS_RUNNING,
    SearchStatus.COMPLETED: store_pb2.SEARCH_STATUS_COMPLETED,
    SearchStatus.CANCELLED: store_pb2.SEARCH_STATUS_CANCELLED,
    SearchStatus.FAILED: store_pb2.SEARCH_STATUS_FAILED,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}


def loads_json(text: str, field: str, max_bytes: int = MAX_PAYLOAD_JSON_BYTES) -> dict[str, Any]:
    """JSON text of a message field (empty = {}): an object within the limits of ``facenas.limits``;
    InvalidInput naming the field otherwise."""
    return parse_json_object(text, field, max_bytes)


def status_to_proto(status: SearchStatus) -> store_pb2.SearchStatus.ValueType:
    return _STATUS_TO_PROTO[status]


def status_from_proto(value: int) -> SearchStatus:
    try:
        return _STATUS_FROM_PROTO[value]  # type: ignore[index]
    except KeyError:
        raise InvalidInput(f"status: {value} is not a search status") from None


def search_to_proto(r: SearchRecord) -> store_pb2.SearchRecord:
    return store_pb2.SearchRecord(
        search_id=r.search_id,
        name=r.name,
        config=r.config,
        status=status_to_proto(r.status),
        created_at=r.created_at,
        updated_at=r.updated_at,
        error=r.error,
    )


def search_from_proto(m: store_pb2.SearchRecord) -> SearchRecord:
    return SearchRecord(
        m.search_id, m.name, m.config, status_from_proto(m.status), m.created_at, m.updated_at, m.error
    )


def arch_to_proto(r: ArchRecord) -> store_pb2.ArchRecord:
    return store_pb2.ArchRecord(archid=r.archid, document=r.document, params=r.params)


def arch_from_proto(m: store_pb2.ArchRecord) -> ArchRecord:
    return ArchRecord(m.archid, m.document, m.params)


def candidate_to_proto(r: Candidate) -> store_pb2.Candidate:
    return store_pb2.Candidate(
        search_id=r.search_id,
        archid=r.archid,
        iteration=r.iteration,
        parents=list(r.parents),
        proposed_at=r.proposed_at,
        document=r.document,
        params=r.params,
        model=r.model,
    )


def candidate_from_proto(m: store_pb2.Candidate) -> Candidate:
    return Candidate(
        m.search_id, m.archid, m.iteration, tuple(m.parents), m.proposed_at, m.document, m.params, m.model
    )


def key_to_proto(k: EvalKey) -> store_pb2.EvalKey:
    return store_pb2.EvalKey(
        archid=k.archid, objective=k.objective, budget=k.budget, target=k.target, model=k.model
    )


def key_from_proto(m: store_pb2.EvalKey) -> EvalKey:
    return EvalKey(m.archid, m.objective, m.budget, m.target, m.model)


def evaluation_to_proto(r: Evaluation) -> store_pb2.Evaluation:
    return store_pb2.Evaluation(
        key=key_to_proto(r.key),
        value=r.value,
        unit=r.unit,
        details_json=json.dumps(dict(r.details), sort_keys=True, default=str),
        worker=r.worker,
        seconds=r.seconds,
        created_at=r.created_at,
    )


def evaluation_from_proto(m: store_pb2.Evaluation) -> Evaluation:
    return Evaluation(
        key_from_proto(m.key),
        m.value,
        m.unit,
        loads_json(m.details_json, "details_json"),
        m.worker,
        m.seconds,
        m.created_at,
    )


def iteration_to_proto(r: IterationRecord) -> store_pb2.IterationRecord:
    return store_pb2.IterationRecord(
        search_id=r.search_id,
        iteration=r.iteration,
        pareto=list(r.pareto),
        hypervolume=r.hypervolume,
        state_json=json.dumps(dict(r.state), sort_keys=True),
        walltime_s=r.walltime_s,
        created_at=r.created_at,
    )


def iteration_from_proto(m: store_pb2.IterationRecord) -> IterationRecord:
    return IterationRecord(
        m.search_id,
        m.iteration,
        tuple(m.pareto),
        m.hypervolume,
        loads_json(m.state_json, "state_json", MAX_STATE_JSON_BYTES),
        m.walltime_s,
        m.created_at,
    )


def event_to_proto(r: Event) -> store_pb2.Event:
    return store_pb2.Event(
        search_id=r.search_id,
        seq=r.seq,
        kind=r.kind,
        payload_json=json.dumps(dict(r.payload), sort_keys=True, default=str),
        created_at=r.created_at,
    )


def event_from_proto(m: store_pb2.Event) -> Event:
    return Event(m.search_id, m.seq, m.kind, loads_json(m.payload_json, "payload_json"), m.created_at)


def failure_to_proto(f: Failure) -> store_pb2.Failure:
    return store_pb2.Failure(
        search_id=f.search_id,
        archid=f.archid,
        objective=f.objective,
        reason=f.reason,
        kind=f.kind,
        created_at=f.created_at,
    )


def failure_from_proto(m: store_pb2.Failure) -> Failure:
    return Failure(m.search_id, m.archid, m.objective, m.reason, m.kind, m.created_at)


def outcomes_from_proto(message: store_pb2.CandidateOutcomes) -> dict[str, Outcome]:
    """archid -> Outcome; an unknown outcome is InvalidInput naming the known ones."""
    checked = limits.check_outcomes(message.search_id, dict(message.outcomes))
    return {a: Outcome(o) for a, o in checked.items()}


def progress_to_proto(progress: SearchProgress) -> store_pb2.SearchProgress:
    message = store_pb2.SearchProgress(
        search_id=progress.search_id,
        candidates=progress.candidates,
        complete=progress.complete,
        infeasible=progress.infeasible,
        failed=progress.failed,
    )
    if progress.last_iteration is not None:
        message.last_iteration.CopyFrom(iteration_to_proto(progress.last_iteration))
    return message


def progress_from_proto(message: store_pb2.SearchProgress) -> SearchProgress:
    last = iteration_from_proto(message.last_iteration) if message.HasField("last_iteration") else None
    return SearchProgress(
        message.search_id,
        candidates=message.candidates,
        complete=message.complete,
        infeasible=message.infeasible,
        failed=message.failed,
        last_iteration=last,
    )
