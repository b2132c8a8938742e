"""The store's limits (``facenas.limits``), run against every backend in ``conftest.BACKENDS``: oversized,
malformed or non-object records are refused with InvalidInput and nothing is written; lists come in pages
that every backend follows to the end."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from facenas import limits
from facenas.domain import ArchRecord, Candidate, EvalKey, Evaluation, IterationRecord, SearchStatus
from facenas.errors import InvalidInput
from facenas.rpc.server import ServerConfig, start
from facenas.store import NotFound, SqlStore, Store
from facenas.store.grpc_client import GrpcStore
from facenas.store.grpc_servicer import StoreServicer
from facenas.v1 import store_pb2, store_pb2_grpc

EVAL = Evaluation(EvalKey("a1", "CPU ONNX Latency (s)", "b", "t"), 0.1, "s", {"ok": True}, "w1", 1.0)
ITERATION = IterationRecord("s1", 0, ("a1",), 0.5, {"rng": [1, 2]}, 1.0)
BIG = "x" * (limits.MAX_PAYLOAD_JSON_BYTES + 1)
DEEP: dict[str, Any] = {}
_node = DEEP
for _ in range(limits.MAX_JSON_DEPTH + 5):
    _node["a"] = {}
    _node = _node["a"]


def _deep_list(depth: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(depth):
        out = [out]
    return out


def _snapshot(store: Store) -> tuple[Any, ...]:
    """Everything the tests below could have written."""
    try:
        events = store.list_events("s1")
        candidates = store.list_candidates("s1")
        iterations = store.list_iterations("s1")
    except NotFound:
        events, candidates, iterations = [], [], []
    return (
        store.list_searches(),
        events,
        candidates,
        iterations,
        store.list_evaluations(["a1", "a2"]),
        store.get_evaluations([EVAL.key]),
    )


@pytest.fixture
def seeded(store: Store) -> Store:
    store.create_search("s1", "n", "c")
    store.put_arch(ArchRecord("a1", "{}", 1))
    return store


WRITES: dict[str, Callable[[Store], object]] = {
    # event payloads: JSON objects of bounded depth and size
    "event payload not an object": lambda s: s.append_event("s1", "k", [1]),  # type: ignore[arg-type]
    "event payload too deep": lambda s: s.append_event("s1", "k", DEEP),
    "event payload list too deep": lambda s: s.append_event("s1", "k", {"a": _deep_list(5000)}),
    "event payload too big": lambda s: s.append_event("s1", "k", {"a": BIG}),
    "event payload huge int": lambda s: s.append_event("s1", "k", {"a": 10**5000}),
    "event kind too long": lambda s: s.append_event("s1", "k" * 1000, {}),
    "event kind empty": lambda s: s.append_event("s1", "", {}),
    # searches
    "search config too big": lambda s: s.create_search("s2", "n", "#" * (limits.MAX_CONFIG_BYTES + 1)),
    "search name too long": lambda s: s.create_search("s2", "n" * (limits.MAX_NAME_BYTES + 1), "c"),
    "search id too long": lambda s: s.create_search("s" * 1000, "n", "c"),
    "search id empty": lambda s: s.create_search("", "n", "c"),
    "search config with NUL": lambda s: s.create_search("s2", "n", "a\x00b"),
    # architectures
    "arch document not JSON": lambda s: s.put_arch(ArchRecord("a2", "not json", 1)),
    "arch document not an object": lambda s: s.put_arch(ArchRecord("a2", "[1]", 1)),
    "arch document too big": lambda s: s.put_arch(
        ArchRecord("a2", '{"a": "' + "x" * limits.MAX_ARCH_DOCUMENT_BYTES + '"}', 1)
    ),
    "arch document huge int": lambda s: s.put_arch(ArchRecord("a2", '{"a": ' + "1" * 5000 + "}", 1)),
    "arch params negative": lambda s: s.put_arch(ArchRecord("a2", "{}", -1)),
    "arch params past int64": lambda s: s.put_arch(ArchRecord("a2", "{}", 2**63)),
    # candidates
    "candidate parents too many": lambda s: s.add_candidate(
        Candidate("s1", "a1", 0, tuple(f"p{i}" for i in range(limits.MAX_LIST_ITEMS + 1)))
    ),
    "candidate iteration past int32": lambda s: s.add_candidate(Candidate("s1", "a1", 2**31)),
    "candidate archid too long": lambda s: s.add_candidate(Candidate("s1", "a" * 1000, 0)),
    # evaluations
    "evaluation details too big": lambda s: s.put_evaluation(dataclasses.replace(EVAL, details={"a": BIG})),
    "evaluation details too deep": lambda s: s.put_evaluation(dataclasses.replace(EVAL, details=DEEP)),
    "evaluation details not an object": lambda s: s.put_evaluation(
        dataclasses.replace(EVAL, details=[1])  # type: ignore[arg-type]
    ),
    "evaluation target too long": lambda s: s.put_evaluation(
        dataclasses.replace(EVAL, key=EvalKey("a1", "o", "b", "t" * 10_000))
    ),
    "evaluation value not a number": lambda s: s.put_evaluation(
        dataclasses.replace(EVAL, value="fast")  # type: ignore[arg-type]
    ),
    "evaluation value past a double": lambda s: s.put_evaluation(dataclasses.replace(EVAL, value=10**400)),
    # iterations
    "iteration state too big": lambda s: s.put_iteration(
        dataclasses.replace(ITERATION, state={"a": "x" * (limits.MAX_STATE_JSON_BYTES + 1)})
    ),
    "iteration state too deep": lambda s: s.put_iteration(dataclasses.replace(ITERATION, state=DEEP)),
    "iteration pareto id too long": lambda s: s.put_iteration(
        dataclasses.replace(ITERATION, pareto=tuple("a" * 200 for _ in range(3)))
    ),
}


@pytest.mark.parametrize("case", list(WRITES))
def test_hostile_records_are_refused_and_nothing_is_written(seeded: Store, case: str) -> None:
    before = _snapshot(seeded)
    with pytest.raises(InvalidInput):
        WRITES[case](seeded)
    assert _snapshot(seeded) == before
    # and the store still answers, and still accepts good records
    assert seeded.append_event("s1", "ok", {"fine": [1, 2, {"x": None}]}).seq == len(before[1]) + 1
    assert seeded.get_search("s1").search_id == "s1"


def test_records_at_the_limits_are_accepted(seeded: Store) -> None:
    near = "x" * (limits.MAX_PAYLOAD_JSON_BYTES - 20)
    assert seeded.append_event("s1", "k", {"a": near}).payload == {"a": near}
    config = "#" * limits.MAX_CONFIG_BYTES
    assert seeded.create_search("s2", "n" * limits.MAX_NAME_BYTES, config).config == config
    stored = seeded.put_evaluation(dataclasses.replace(EVAL, details={"a": near}))
    assert stored.details == {"a": near}


def test_a_long_error_is_cut_not_refused(seeded: Store) -> None:
    failed = seeded.set_search_status("s1", SearchStatus.FAILED, "boom " * 100_000)
    assert failed.status is SearchStatus.FAILED
    assert failed.error.startswith("boom boom") and len(failed.error.encode()) <= limits.MAX_ERROR_BYTES
    assert seeded.get_search("s1").error == failed.error


def test_lists_come_in_pages_that_add_up(store: Store) -> None:
    ids = [f"s{i:02d}" for i in range(25)]
    for search_id in ids:
        store.create_search(search_id, search_id, "c")
    first = store.list_searches_page(10)
    assert [s.search_id for s in first.items] == ids[:10] and first.next_page_token
    second = store.list_searches_page(10, first.next_page_token)
    assert [s.search_id for s in second.items] == ids[10:20]
    assert [s.search_id for s in store.list_searches()] == ids
    for i in range(25):
        store.put_arch(ArchRecord(f"a{i}", "{}", i))
        store.add_candidate(Candidate("s00", f"a{i}", i % 3))
        store.put_iteration(dataclasses.replace(ITERATION, search_id="s00", iteration=i))
        store.put_evaluation(dataclasses.replace(EVAL, key=dataclasses.replace(EVAL.key, archid=f"a{i}")))
    page = store.list_candidates_page("s00", 7)
    assert len(page.items) == 7 and page.next_page_token
    assert [c.archid for c in store.list_candidates("s00")] == [f"a{i}" for i in range(25)]
    assert [r.iteration for r in store.list_iterations_page("s00", 5, page_token="20").items] == list(
        range(20, 25)
    )
    assert [r.iteration for r in store.list_iterations("s00")] == list(range(25))
    archids = [f"a{i}" for i in range(25)]
    page_e = store.list_evaluations_page(archids, 4)
    assert len(page_e.items) == 4 and page_e.next_page_token
    assert {e.key.archid for e in store.list_evaluations(archids)} == set(archids)
    many = [dataclasses.replace(EVAL.key, archid=f"a{i % 25}", budget=str(i)) for i in range(250)]
    assert len(store.get_evaluations(many)) == 0  # more keys than one request carries
    assert len(store.get_evaluations([*many, *(e.key for e in store.list_evaluations(archids))])) == 25


def test_large_records_are_listed_over_several_replies(store: Store) -> None:
    config = "#" * limits.MAX_CONFIG_BYTES
    count = limits.MAX_MESSAGE_BYTES // limits.MAX_CONFIG_BYTES + 2  # more than one gRPC message can carry
    for i in range(count):
        store.create_search(f"s{i:02d}", "n", config)
    listed = store.list_searches()
    assert [s.search_id for s in listed] == [f"s{i:02d}" for i in range(count)]
    assert all(s.config == config for s in listed)
    if isinstance(store, GrpcStore):  # a reply stops at the byte budget, whatever the page size asked
        first = store.list_searches_page(limits.MAX_PAGE_SIZE)
        assert first.next_page_token
        assert len(first.items) * limits.MAX_CONFIG_BYTES <= limits.REPLY_BUDGET_BYTES


@pytest.mark.parametrize("token", ["nope", "-1", "9" * 30])
def test_bad_page_tokens_are_invalid_input(store: Store, token: str) -> None:
    with pytest.raises(InvalidInput, match="page_token"):
        store.list_searches_page(10, token)


# --- the store service, called with raw messages (no client-side checks) ---------------------------------
@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[grpc.Channel, store_pb2_grpc.StoreStub]]:
    """The store service in-process on a free loopback port, over SQLite, and a raw stub."""
    backing = SqlStore.from_url(f"sqlite:///{tmp_path / 'served.db'}")
    registration = (store_pb2_grpc.add_StoreServicer_to_server, StoreServicer(backing), "facenas.v1.Store")
    server = start([registration], ServerConfig(port=0, metrics_port=None))
    channel = grpc.insecure_channel(server.address)
    try:
        yield channel, store_pb2_grpc.StoreStub(channel)
    finally:
        channel.close()
        server.stop(grace=0)
        backing.close()


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def test_store_service_refuses_bad_json_before_writing(
    served: tuple[grpc.Channel, store_pb2_grpc.StoreStub],
) -> None:
    _, stub = served
    stub.CreateSearch(store_pb2.CreateSearchRequest(search_id="s1", name="n", config="c"))
    bad_json = {
        "[1]": "must be a JSON object",
        '"x"': "must be a JSON object",
        '{"a": ' * 50 + "1" + "}" * 50: "nested deeper",
        '{"n": ' + "1" * 5000 + "}": "unusable JSON value",
        "{": "not valid JSON",
    }
    for text, needle in bad_json.items():
        code, details = _code(
            lambda t=text: stub.AppendEvent(
                store_pb2.AppendEventRequest(search_id="s1", kind="k", payload_json=t)
            )
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "payload_json" in details and needle in details
        evaluation = store_pb2.Evaluation(
            key=store_pb2.EvalKey(archid="a1", objective="o"), details_json=text
        )
        code, details = _code(lambda e=evaluation: stub.PutEvaluation(e))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "details_json" in details
        iteration = store_pb2.IterationRecord(search_id="s1", iteration=0, state_json=text)
        code, details = _code(lambda i=iteration: stub.PutIteration(i))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "state_json" in details
    # nothing was written, and every read still answers
    assert len(stub.ListEvents(store_pb2.ListEventsRequest(search_id="s1")).events) == 0
    assert len(stub.ListEvaluations(store_pb2.ListEvaluationsRequest(archids=["a1"])).evaluations) == 0
    assert len(stub.ListIterations(store_pb2.ListIterationsRequest(search_id="s1")).iterations) == 0
    assert stub.GetSearch(store_pb2.GetSearchRequest(search_id="s1")).search_id == "s1"
    assert len(stub.ListSearches(store_pb2.ListSearchesRequest()).searches) == 1
    stored = stub.AppendEvent(store_pb2.AppendEventRequest(search_id="s1", kind="k", payload_json='{"a": 1}'))
    assert stored.seq == 1


def test_store_service_refuses_undecodable_and_oversized_requests(
    served: tuple[grpc.Channel, store_pb2_grpc.StoreStub],
) -> None:
    channel, stub = served
    raw = channel.unary_unary("/facenas.v1.Store/AppendEvent")
    for data in (
        b"\xff" * 10,
        store_pb2.AppendEventRequest(search_id="ab").SerializeToString().replace(b"ab", b"\xff\xfe"),
    ):
        code, details = _code(lambda d=data: raw(d, timeout=10))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    keys = [store_pb2.EvalKey(archid=f"a{i}", objective="o") for i in range(limits.MAX_REQUEST_KEYS + 1)]
    code, details = _code(lambda: stub.GetEvaluations(store_pb2.GetEvaluationsRequest(keys=keys)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "keys" in details
    archids = [f"a{i}" for i in range(limits.MAX_REQUEST_KEYS + 1)]
    code, _ = _code(lambda: stub.ListEvaluations(store_pb2.ListEvaluationsRequest(archids=archids)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    code, details = _code(lambda: stub.GetSearch(store_pb2.GetSearchRequest(search_id="x" * (4 << 20))))
    assert code is grpc.StatusCode.NOT_FOUND and len(details) < limits.MAX_ERROR_MESSAGE_CHARS + 100
    code, _ = _code(lambda: stub.ListSearches(store_pb2.ListSearchesRequest(page_size=-1)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    code, _ = _code(lambda: stub.ListEvents(store_pb2.ListEventsRequest(search_id="s", page_token="zz")))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
