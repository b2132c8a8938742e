"""``GrpcStore``: the :class:`Store` interface over the store service (what the searcher uses).

List methods follow the service's pages (``next_page_token``) transparently; requests with many keys are
sent in chunks of ``facenas.limits.MAX_REQUEST_KEYS``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from facenas import limits
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
from facenas.errors import Conflict, InvalidInput, Unavailable
from facenas.limits import Page
from facenas.rpc.client import call, make_channel
from facenas.rpc.resolve import DNS_PREFIX, resolve, split_dns
from facenas.store import protoconv as pc
from facenas.store.base import Store, StoreConflict, StoreUnavailable
from facenas.v1 import store_pb2, store_pb2_grpc

log = logging.getLogger(__name__)

#: payload bytes per AppendEvents request (well under the message limit)
APPEND_BATCH_BYTES = 1 << 20


class GrpcStore(Store):
    """Every call has a deadline and is retried on UNAVAILABLE (all store writes are idempotent; events
    carry a token). A store that stops answering for ``reconnect_after_s`` gets a new channel: a
    ``dns:///NAME:PORT`` target is resolved again (the store came back on a new address), a
    ``host:port`` one reconnects through gRPC's own resolver. Writes are checked against
    ``facenas.limits`` before they are sent, as the service checks them."""

    def __init__(
        self, target: str, timeout: float = 30.0, attempts: int = 5, reconnect_after_s: float = 5.0
    ) -> None:
        if target.startswith(DNS_PREFIX):
            split_dns(target)  # ConfigError now rather than at the first call
        self.target = target
        self.timeout = timeout
        self.attempts = attempts
        self.reconnect_after_s = reconnect_after_s
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self.address = ""
        self._retired: list[tuple[float, grpc.Channel]] = []
        self._channel, self._stub = self._connect()

    def _connect(self) -> tuple[grpc.Channel, store_pb2_grpc.StoreStub]:
        address = self.target
        authority: str | None = None
        if self.target.startswith(DNS_PREFIX):
            found = resolve(self.target)
            address = found[0] if found else self.target  # unresolvable now: gRPC keeps trying the name
            authority = split_dns(self.target)[0]
        self.address = address
        channel = make_channel(address, authority=authority, fresh=True)  # a renewal reconnects at once
        return channel, store_pb2_grpc.StoreStub(channel)

    def _reconnect_if_stale(self, stub: store_pb2_grpc.StoreStub) -> None:
        """Called after a call failed as unavailable: a new channel once it has failed long enough."""
        with self._lock:
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
                return
            if now - self._failing_since < self.reconnect_after_s or stub is not self._stub:
                return
            # other threads may be calling through the old channel right now: it is closed once every
            # call it could carry has passed its deadline
            self._retired.append((now, self._channel))
            done = [c for at, c in self._retired if now - at > self.timeout + 1]
            self._retired = [(at, c) for at, c in self._retired if now - at <= self.timeout + 1]
            for channel in done:
                channel.close()
            self._channel, self._stub = self._connect()
            self._failing_since = now
        log.info("store channel renewed", extra={"target": self.target, "address": self.address})

    def _call(self, name: str, request: Any, attempts: int | None = None) -> Any:
        stub = self._stub
        try:
            reply = call(getattr(stub, name), request, self.timeout, attempts or self.attempts)
        except Conflict as err:
            raise StoreConflict(str(err)) from None
        except Unavailable as err:
            self._reconnect_if_stale(stub)
            raise StoreUnavailable(f"store at {self.target}: {err}") from None
        self._failing_since = None
        return reply

    def create_search(self, search_id: str, name: str, config: str) -> SearchRecord:
        limits.check_search(search_id, name, config)
        req = store_pb2.CreateSearchRequest(search_id=search_id, name=name, config=config)
        return pc.search_from_proto(self._call("CreateSearch", req))

    def get_search(self, search_id: str) -> SearchRecord:
        req = store_pb2.GetSearchRequest(search_id=search_id)
        return pc.search_from_proto(self._call("GetSearch", req))

    def list_searches_page(self, page_size: int = 0, page_token: str = "") -> Page[SearchRecord]:
        req = store_pb2.ListSearchesRequest(page_size=page_size, page_token=page_token)
        resp = self._call("ListSearches", req)
        return Page([pc.search_from_proto(s) for s in resp.searches], resp.next_page_token)

    def set_search_status(self, search_id: str, status: SearchStatus, error: str = "") -> SearchRecord:
        error = limits.clip_error(error)
        req = store_pb2.SetSearchStatusRequest(
            search_id=search_id, status=pc.status_to_proto(status), error=error
        )
        return pc.search_from_proto(self._call("SetSearchStatus", req))

    def put_arch(self, arch: ArchRecord) -> ArchRecord:
        limits.check_arch(arch)
        return pc.arch_from_proto(self._call("PutArch", pc.arch_to_proto(arch)))

    def get_arch(self, archid: str) -> ArchRecord:
        return pc.arch_from_proto(self._call("GetArch", store_pb2.GetArchRequest(archid=archid)))

    def add_candidate(self, candidate: Candidate) -> Candidate:
        limits.check_candidate(candidate)
        return pc.candidate_from_proto(self._call("AddCandidate", pc.candidate_to_proto(candidate)))

    def list_candidates_page(
        self,
        search_id: str,
        page_size: int = 0,
        page_token: str = "",
        archid_prefix: str = "",
        documents: bool = True,
    ) -> Page[Candidate]:
        limits.check_text(archid_prefix, "archid_prefix", limits.MAX_ID_BYTES)
        req = store_pb2.ListCandidatesRequest(
            search_id=search_id,
            page_size=page_size,
            page_token=page_token,
            archid_prefix=archid_prefix,
            without_documents=not documents,
        )
        resp = self._call("ListCandidates", req)
        return Page([pc.candidate_from_proto(c) for c in resp.candidates], resp.next_page_token)

    def get_candidates(self, search_id: str, archids: Sequence[str]) -> dict[str, Candidate]:
        wanted = limits.check_ids(archids, "archids")
        req = store_pb2.GetCandidatesRequest(search_id=search_id, archids=wanted)
        found = {c.archid: pc.candidate_from_proto(c) for c in self._call("GetCandidates", req).candidates}
        return {a: found[a] for a in wanted if a in found}

    def put_outcomes(self, search_id: str, outcomes: Mapping[str, Outcome]) -> dict[str, Outcome]:
        checked = limits.check_outcomes(search_id, outcomes)
        req = store_pb2.CandidateOutcomes(search_id=search_id, outcomes=checked)
        return {a: Outcome(o) for a, o in self._call("PutOutcomes", req).outcomes.items()}

    def search_progress(self, search_ids: Sequence[str]) -> dict[str, SearchProgress]:
        wanted = limits.check_ids(search_ids, "search_ids")
        if not wanted:
            return {}
        req = store_pb2.GetSearchProgressRequest(search_ids=wanted)
        found = {
            p.search_id: pc.progress_from_proto(p) for p in self._call("GetSearchProgress", req).progress
        }
        return {s: found[s] for s in wanted if s in found}

    def put_evaluation(self, evaluation: Evaluation) -> Evaluation:
        limits.check_evaluation(evaluation)
        return pc.evaluation_from_proto(self._call("PutEvaluation", pc.evaluation_to_proto(evaluation)))

    def get_evaluations(self, keys: Sequence[EvalKey]) -> dict[EvalKey, Evaluation]:
        wanted = list(dict.fromkeys(keys))
        found: dict[EvalKey, Evaluation] = {}
        for start in range(0, len(wanted), limits.MAX_REQUEST_KEYS):
            chunk = wanted[start : start + limits.MAX_REQUEST_KEYS]
            req = store_pb2.GetEvaluationsRequest(keys=[pc.key_to_proto(k) for k in chunk])
            for message in self._call("GetEvaluations", req).evaluations:
                evaluation = pc.evaluation_from_proto(message)
                found[evaluation.key] = evaluation
        return found

    def list_evaluations_page(
        self, archids: Sequence[str], page_size: int = 0, page_token: str = ""
    ) -> Page[Evaluation]:
        req = store_pb2.ListEvaluationsRequest(
            archids=list(archids), page_size=page_size, page_token=page_token
        )
        resp = self._call("ListEvaluations", req)
        return Page([pc.evaluation_from_proto(e) for e in resp.evaluations], resp.next_page_token)

    def put_iteration(self, record: IterationRecord) -> IterationRecord:
        limits.check_iteration(record)
        return pc.iteration_from_proto(self._call("PutIteration", pc.iteration_to_proto(record)))

    def list_iterations_page(
        self, search_id: str, page_size: int = 0, page_token: str = ""
    ) -> Page[IterationRecord]:
        req = store_pb2.ListIterationsRequest(search_id=search_id, page_size=page_size, page_token=page_token)
        resp = self._call("ListIterations", req)
        return Page([pc.iteration_from_proto(i) for i in resp.iterations], resp.next_page_token)

    def put_targets(self, search_id: str, targets: Mapping[str, str]) -> dict[str, str]:
        limits.check_targets(search_id, targets)
        req = store_pb2.SearchTargets(search_id=search_id, targets=dict(targets))
        return dict(self._call("PutTargets", req).targets)

    def get_targets(self, search_id: str) -> dict[str, str]:
        return dict(self._call("GetTargets", store_pb2.GetTargetsRequest(search_id=search_id)).targets)

    def put_failure(self, failure: Failure) -> Failure:
        failure = limits.check_failure(failure)
        return pc.failure_from_proto(self._call("PutFailure", pc.failure_to_proto(failure)))

    def list_failures(self, search_id: str, archids: Sequence[str] | None = None) -> list[Failure]:
        wanted = None if archids is None else limits.check_ids(archids, "archids")
        if wanted == []:
            return []
        req = store_pb2.ListFailuresRequest(search_id=search_id, archids=wanted or [])
        resp = self._call("ListFailures", req)
        return [pc.failure_from_proto(f) for f in resp.failures]

    def append_event(self, search_id: str, kind: str, payload: dict[str, object], token: str = "") -> Event:
        limits.check_event(search_id, kind, payload)
        req = store_pb2.AppendEventRequest(
            search_id=search_id, kind=kind, payload_json=json.dumps(payload, default=str), token=token
        )
        # only a tokened append is idempotent: an untokened one is tried once (a retry could log twice)
        return pc.event_from_proto(self._call("AppendEvent", req, attempts=None if token else 1))

    def append_events(self, search_id: str, events: Sequence[NewEvent]) -> list[Event]:
        """In requests of at most ``MAX_REQUEST_KEYS`` events and ``APPEND_BATCH_BYTES`` of payload, each
        all or none; retried only when every event carries a token."""
        if len(events) > limits.MAX_REQUEST_KEYS:
            raise InvalidInput(f"events: {len(events)} is more than {limits.MAX_REQUEST_KEYS} per request")
        logged: list[Event] = []
        batch: list[store_pb2.AppendEventRequest] = []
        size = 0

        def send() -> None:
            req = store_pb2.AppendEventsRequest(search_id=search_id, events=batch)
            retry = all(e.token for e in batch)
            reply = self._call("AppendEvents", req, attempts=None if retry else 1)
            logged.extend(pc.event_from_proto(e) for e in reply.events)

        bodies = [limits.check_event(search_id, e.kind, e.payload) for e in events]  # all, before any is sent
        for new, body in zip(events, bodies, strict=True):
            if batch and size + len(body) > APPEND_BATCH_BYTES:
                send()
                batch, size = [], 0
            batch.append(
                store_pb2.AppendEventRequest(
                    search_id=search_id,
                    kind=new.kind,
                    payload_json=json.dumps(dict(new.payload), default=str),
                    token=new.token,
                )
            )
            size += len(body)
        if batch:
            send()
        return logged

    def list_events(self, search_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Up to ``limit`` events after ``after_seq``, over as many pages as that takes."""
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        found: list[Event] = []
        token = ""
        while len(found) < limit:
            want = min(limit - len(found), limits.MAX_PAGE_SIZE)
            req = store_pb2.ListEventsRequest(
                search_id=search_id, after_seq=after_seq, limit=want, page_token=token
            )
            resp = self._call("ListEvents", req)
            found.extend(pc.event_from_proto(e) for e in resp.events)
            if not resp.next_page_token or not resp.events:
                break
            token = resp.next_page_token
        return found

    def close(self) -> None:
        for _, channel in self._retired:
            channel.close()
        self._channel.close()
