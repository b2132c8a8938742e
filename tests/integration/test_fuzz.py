"""Hostile input against real store and searcher processes: every method of both services (enumerated from
the generated descriptors) gets malformed requests -- random bytes on the wire, hostile text, non-object,
deep and oversized JSON, huge integers, wrong enums, billion-laughs and deep YAML, unhashable op_subset,
strings near the message limit -- and must answer with a status that names the caller's mistake
(INVALID_ARGUMENT, NOT_FOUND, ...), never INTERNAL or UNKNOWN. Afterwards both processes are alive and
SERVING, their memory has not grown past 1.5x, and the records seeded before the run still read back.

Also: searches with configs at the size limit, more than one gRPC message could carry, are listed page by
page, and a searcher started with ``--auto-resume`` over them comes up.
"""

from __future__ import annotations

import math
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facenas import limits
from facenas.launcher import LocalCluster, ServiceProcess
from facenas.v1 import searcher_pb2, searcher_pb2_grpc, store_pb2, store_pb2_grpc
from tests.integration.conftest import tiny_search
from tests.timing import scaled

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20240610
BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
NEAR_LIMIT = limits.MAX_MESSAGE_BYTES - 4096


# --- hostile values -------------------------------------------------------------------------------
def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghijklmnopqrstuvwxyz"
    for level in range(1, levels):
        lines.append(f"{names[level]}: &{names[level]} [" + ",".join([f"*{names[level - 1]}"] * 9) + "]")
    return "\n".join(lines) + "\n"


VALID_CONFIG = tiny_search()
HOSTILE_YAML = [
    billion_laughs(9),
    VALID_CONFIG + billion_laughs(8),
    "[" * 10_000 + "]" * 10_000,
    "".join(" " * i + "- \n" for i in range(0, 200, 2)),
    "a: &a [1, *a]",
    VALID_CONFIG.replace("op_subset: ['conv3x3', 'conv5x5', 'conv7x7']", "op_subset: [[conv3x3], {a: 1}]"),
    VALID_CONFIG.replace("op_subset: ['conv3x3', 'conv5x5', 'conv7x7']", "op_subset: 5"),
    VALID_CONFIG.replace("seed: 42", "seed: " + "9" * 5000),
    VALID_CONFIG.replace("seed: 42", "seed: " + "9" * 4000),
    VALID_CONFIG.replace("num_blocks: 5", "num_blocks: 1e999"),
    VALID_CONFIG.replace("img_size: [64, 64]", "img_size: 2001-13-45"),
    VALID_CONFIG.replace("name: cpu", "name: [cpu, {x: [1]}]"),
    VALID_CONFIG + "search_space: !!python/object/apply:os.system ['true']\n",
    VALID_CONFIG + "#" * (limits.MAX_CONFIG_BYTES + 1 - len(VALID_CONFIG)),  # one byte over the limit
    "{" * 5000 + "}" * 5000,
    "[1]",
    "null",
    "",
    "\x00\x01\x02",
    "\t\tsearch: {",
    "search:\n  search_space:\n    params: &p {num_classes: 18}\n  x: [" + ",".join(["*p"] * 30_000) + "]\n",
]
DEEP_JSON = '{"a": ' * 100 + "1" + "}" * 100
HOSTILE_JSON = [
    "[1]",
    "null",
    '"x"',
    "1",
    "{",
    DEEP_JSON,
    "[" * 50_000 + "]" * 50_000,
    '{"n": ' + "1" * 5000 + "}",
    '{"s": "' + "x" * (limits.MAX_PAYLOAD_JSON_BYTES + 10) + '"}',
    '{"a": NaN, "b": Infinity}',
    '{"targets": [1]}',
    '{"targets": {"CPU ONNX Latency (s)": 5, "Partial Training Val. IOU": {"x": 1}}}',
    '{"archid": {"a": [1]}, "error": null}',
    "{}",
    '{"\\ud800": 1}',
]
HOSTILE_ARCH = [
    '{"stem_stride": ' + "2" * 5000 + "}",
    '{"a": ' * 60 + "1" + "}" * 60,
    "[1]",
    "not json",
    '{"a": "' + "x" * limits.MAX_ARCH_DOCUMENT_BYTES + '"}',
    '{"hourglasses": {"_config_type": "config_list", "_configs": [1]}}',
]
SEEDED_IDS = ["fz-done", "fz-poisoned", "fz-failed", "a1", "ghost"]


def random_text(rng: random.Random, n: int) -> str:
    """Random code points from every plane (no surrogates: proto strings are UTF-8)."""
    out = []
    for _ in range(n):
        plane = rng.choice([0x7F, 0x20, 0x800, 0xD7FF, 0x10FFFF])
        cp = rng.randrange(0, plane)
        out.append(chr(cp if not 0xD800 <= cp <= 0xDFFF else 0xFFFD))
    return "".join(out)


def hostile_text(field: str, rng: random.Random) -> str:
    if field.endswith("_json"):
        return rng.choice(HOSTILE_JSON)
    if field == "config":
        return rng.choice(HOSTILE_YAML)
    if field in ("document", "json"):
        return rng.choice(HOSTILE_ARCH)
    choices: list[Callable[[], str]] = [
        lambda: rng.choice(SEEDED_IDS),
        lambda: "",
        lambda: random_text(rng, rng.randrange(1, 64)),
        lambda: "x" * rng.choice([129, 513, 1025, 20_000, 1 << 20]),
        lambda: "a\x00b",
        lambda: "' OR 1=1; DROP TABLE searches; --",
        lambda: "../../etc/passwd",
        lambda: "\u202e" + "🙂" * 100,
        lambda: rng.choice(["-1", "1" * 30, "zz", "0", "99999999999999999"]),  # tokens
        lambda: rng.choice(HOSTILE_JSON + HOSTILE_YAML[:4]),
    ]
    return rng.choice(choices)()


def scalar(field: FieldDescriptor, rng: random.Random) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING:
        return hostile_text(field.name, rng)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return rng.choice([0, 1, 3, 5, 6, 99, -7, 2**31 - 1])
    if field.type == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice([0.0, -1.0, math.nan, math.inf, -math.inf, 1e308, -1e-308])
    if field.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return rng.choice([0, 1, -1, 2**63 - 1, -(2**63), 10**12])
    return rng.choice([0, 1, -1, 2**31 - 1, -(2**31), 100_000])


def fill(message: Message, rng: random.Random, depth: int = 0) -> Message:
    """Set a random subset of ``message``'s fields (recursively) to hostile values."""
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.25:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entries = getattr(message, field.name)  # a map<string, string> (e.g. search targets)
            key_field, value_field = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            for _ in range(rng.choice([1, 2, 5, 40])):
                entries[scalar(key_field, rng)] = scalar(value_field, rng)
        elif field.is_repeated:
            container = getattr(message, field.name)
            for _ in range(rng.choice([1, 2, 5, limits.MAX_REQUEST_KEYS + 5])):
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    if depth < 3:
                        fill(container.add(), rng, depth + 1)
                else:
                    container.append(scalar(field, rng))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth < 3:
                sub = getattr(message, field.name)
                sub.SetInParent()
                fill(sub, rng, depth + 1)
        else:
            setattr(message, field.name, scalar(field, rng))
    return message


def near_limit(message: Message) -> Message | None:
    """``message`` with its first string field just under the message limit (None: it has none)."""
    for field in message.DESCRIPTOR.fields:
        if field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated:
            setattr(message, field.name, "x" * NEAR_LIMIT)
            return message
    return None


# --- calling --------------------------------------------------------------------------------------
class Fuzzer:
    """Calls every method of the services on one channel each, recording every status code."""

    def __init__(self, targets: dict[str, tuple[str, Any]]) -> None:
        self.channels = {
            name: grpc.insecure_channel(address, options=_options()) for name, (address, _) in targets.items()
        }
        self.methods: list[tuple[str, MethodDescriptor]] = [
            (name, method) for name, (_, service) in targets.items() for method in service.methods
        ]
        self.codes: Counter[tuple[str, str]] = Counter()
        self.bad: list[str] = []

    def call(self, service: str, method: MethodDescriptor, request: bytes, timeout: float = 15.0) -> None:
        path = f"/{method.containing_service.full_name}/{method.name}"
        channel = self.channels[service]
        began = time.monotonic()
        try:
            if method.server_streaming:
                for _ in channel.unary_stream(path)(request, timeout=2.0):
                    pass
            else:
                channel.unary_unary(path)(request, timeout=timeout)
            code = grpc.StatusCode.OK
            details = ""
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
        self.codes[(method.name, code.name)] += 1
        if code in BAD_CODES or (code is grpc.StatusCode.DEADLINE_EXCEEDED and not method.server_streaming):
            self.bad.append(
                f"{method.name}: {code.name} {details[:300]!r} ({time.monotonic() - began:.1f} s)"
            )

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def _options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", limits.MAX_MESSAGE_BYTES),
    ]


def rss_kib(process: ServiceProcess) -> int:
    for line in Path(f"/proc/{process.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {process.name}")


def wait_until_steady(process: ServiceProcess, timeout: float = 60.0) -> None:
    """Until the process's RSS changes by less than 2 MiB in a second."""
    deadline = time.monotonic() + scaled(timeout)
    last = rss_kib(process)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = rss_kib(process)
        if abs(now - last) < 2048:
            return
        last = now


def settled_rss_kib(processes: list[ServiceProcess], fuzzer: Fuzzer) -> dict[str, int]:
    """RSS measured the same way before and after the run: after a burst of small calls (which lets the
    garbage collector free what finished calls left in reference cycles), the median of 5 samples."""
    pings = [(service, method) for service, method in fuzzer.methods if method.name == "GetSearch"]
    request = searcher_pb2.SearchRef(search_id="fz-done").SerializeToString()  # = GetSearchRequest's
    for _ in range(100):
        for service, method in pings:
            fuzzer.call(service, method, request)
    samples: dict[str, list[int]] = {p.name: [] for p in processes}
    for _ in range(5):
        for process in processes:
            samples[process.name].append(rss_kib(process))
        time.sleep(0.2)
    return {name: sorted(values)[2] for name, values in samples.items()}


def serving(process: ServiceProcess) -> bool:
    with grpc.insecure_channel(process.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def dead_address() -> str:
    """A loopback port nothing listens on (the searcher's workers: no search here may run)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "cluster") as started:
        yield started
        for process in started.processes.values():
            process.kill()  # the searchers' runs wait on workers that do not exist: no drain needed


def start_pair(cluster: LocalCluster, *searcher_args: str) -> tuple[ServiceProcess, ServiceProcess]:
    store = cluster.start("store", ["--url", f"sqlite:///{cluster.workdir / 'store.db'}"])
    nowhere = dead_address()
    searcher = cluster.start(
        "searcher",
        ["--store", store.address, "--trainer", nowhere, "--latency-cpu", nowhere, *searcher_args],
    )
    return store, searcher


def seed(store: store_pb2_grpc.StoreStub) -> None:
    """Records the fuzz reads through: a finished search, a running one whose config no longer parses,
    and a failed one, with poisoned-looking (but valid) events and an iteration naming a ghost arch."""
    for search_id, config, status in (
        ("fz-done", VALID_CONFIG, store_pb2.SEARCH_STATUS_COMPLETED),
        ("fz-poisoned", "search: [not, a, config", store_pb2.SEARCH_STATUS_RUNNING),
        ("fz-failed", "search: {}", store_pb2.SEARCH_STATUS_FAILED),
        ("fz-resumable", VALID_CONFIG, store_pb2.SEARCH_STATUS_CANCELLED),
    ):
        store.CreateSearch(store_pb2.CreateSearchRequest(search_id=search_id, name=search_id, config=config))
        store.SetSearchStatus(store_pb2.SetSearchStatusRequest(search_id=search_id, status=status))
    store.PutArch(store_pb2.ArchRecord(archid="a1", document="{}", params=1))
    store.AddCandidate(store_pb2.Candidate(search_id="fz-done", archid="a1", iteration=0))
    store.PutIteration(
        # the ghost is an id the fuzzer never sends: no fuzzed AddCandidate makes it a candidate
        store_pb2.IterationRecord(
            search_id="fz-done", iteration=0, pareto=["a1", "ghost-of-the-front"], state_json="{}"
        )
    )
    for payload in HOSTILE_JSON[10:13]:
        store.AppendEvent(
            store_pb2.AppendEventRequest(search_id="fz-done", kind="targets", payload_json=payload)
        )
        store.AppendEvent(
            store_pb2.AppendEventRequest(search_id="fz-done", kind="evaluation_failed", payload_json=payload)
        )


def _request_class(method: MethodDescriptor) -> type[Message]:
    module = store_pb2 if method.input_type.file.name.endswith("store.proto") else searcher_pb2
    cls: type[Message] = getattr(module, method.input_type.name)
    return cls


def _hostile_requests(method: MethodDescriptor, rng: random.Random) -> Iterator[bytes]:
    """Random bytes, randomly filled messages, and every hostile string in every string field."""
    request_class = _request_class(method)
    for _ in range(6):
        yield rng.randbytes(rng.choice([1, 7, 64, 4096]))
    for _ in range(40):
        request = fill(request_class(), rng)
        if method.name == "StartSearch":
            request.search_id = "fuzz!"  # never a valid id: no search may start
        yield request.SerializeToString()
    for field in request_class.DESCRIPTOR.fields:
        if field.type != FieldDescriptor.TYPE_STRING or field.is_repeated:
            continue
        palette = HOSTILE_JSON if field.name.endswith("_json") else HOSTILE_YAML
        palette = HOSTILE_ARCH if field.name in ("document", "json") else palette
        for text in palette:
            request = request_class(**{field.name: text})
            for name in ("search_id", "archid"):
                if name in request.DESCRIPTOR.fields_by_name and name != field.name:
                    setattr(request, name, rng.choice(SEEDED_IDS))
            if method.name == "StartSearch" and field.name != "search_id":
                request.search_id = "fuzz!"
            yield request.SerializeToString()


def test_fuzz_every_method_of_store_and_searcher(cluster: LocalCluster) -> None:
    store, searcher = start_pair(cluster)
    seed(store_pb2_grpc.StoreStub(grpc.insecure_channel(store.address)))
    services = {
        "store": (store.address, store_pb2.DESCRIPTOR.services_by_name["Store"]),
        "searcher": (searcher.address, searcher_pb2.DESCRIPTOR.services_by_name["Searcher"]),
    }
    fuzzer = Fuzzer(services)
    assert len(fuzzer.methods) == 33
    rng = random.Random(SEED)
    largest = {m.name: near_limit(_request_class(m)()) for _, m in fuzzer.methods}
    # warm up: an empty and a largest-allowed request per method, so "before" is a process that has
    # served every method and held a message at the size limit (which its allocator may keep for reuse)
    for service, method in fuzzer.methods:
        fuzzer.call(service, method, b"")
        if largest[method.name] is not None:
            fuzzer.call(service, method, largest[method.name].SerializeToString(), timeout=60)
    # and a search resumed, as the fuzz may resume one too (a run loads the search space's libraries once;
    # its workers do not exist, so it only waits for them)
    stub = searcher_pb2_grpc.SearcherStub(grpc.insecure_channel(searcher.address))
    stub.ResumeSearch(searcher_pb2.SearchRef(search_id="fz-resumable"), timeout=60)
    wait_until_steady(searcher)
    before = settled_rss_kib([store, searcher], fuzzer)
    began = time.monotonic()
    for service, method in fuzzer.methods:
        for request in _hostile_requests(method, rng):
            fuzzer.call(service, method, request)
        for _ in range(3):
            if largest[method.name] is not None:
                fuzzer.call(service, method, largest[method.name].SerializeToString(), timeout=60)
    elapsed = time.monotonic() - began
    after = settled_rss_kib([store, searcher], fuzzer)
    fuzzer.close()

    total = sum(fuzzer.codes.values())
    summary = sorted(fuzzer.codes.items())
    assert not fuzzer.bad, f"{len(fuzzer.bad)} of {total} calls failed badly:\n" + "\n".join(fuzzer.bad[:40])
    assert total > 2000, summary
    assert {m.name for _, m in fuzzer.methods} <= {name for name, _ in fuzzer.codes}
    # no crash, still serving, memory bounded, and the seeded records still read back
    for process in (store, searcher):
        assert process.alive, f"{process.name} died; see {process.log_path}"
        assert serving(process)
        assert after[process.name] <= 1.5 * before[process.name], (process.name, before, after, elapsed)
    assert (
        stub.GetSearch(searcher_pb2.SearchRef(search_id="fz-done"), timeout=30).search.search_id == "fz-done"
    )
    listed = stub.ListSearches(store_pb2.ListSearchesRequest(), timeout=60)
    assert {"fz-done", "fz-poisoned", "fz-failed"} <= {s.search.search_id for s in listed.searches}
    pareto = stub.GetPareto(searcher_pb2.SearchRef(search_id="fz-done"), timeout=30)
    assert [p.archid for p in pareto.points] == ["a1"]


def test_searches_at_the_config_limit_are_listed_in_pages_and_auto_resume_starts(
    cluster: LocalCluster,
) -> None:
    store, searcher = start_pair(cluster)
    stub = searcher_pb2_grpc.SearcherStub(grpc.insecure_channel(searcher.address, options=_options()))
    config = VALID_CONFIG + "#" * (limits.MAX_CONFIG_BYTES - len(VALID_CONFIG) - 1) + "\n"
    assert len(config.encode()) == limits.MAX_CONFIG_BYTES
    count = max(20, limits.MAX_MESSAGE_BYTES // limits.MAX_CONFIG_BYTES + 2)  # more than one message holds
    for i in range(count):
        request = searcher_pb2.StartSearchRequest(config=config, name=f"big {i}", search_id=f"big-{i:03d}")
        stub.StartSearch(request, timeout=60)
    searcher.kill()  # as a crash would: every search stays "running" in the store

    resumed = cluster.start(
        "searcher",
        [
            "--store",
            store.address,
            "--trainer",
            dead_address(),
            "--latency-cpu",
            dead_address(),
            "--auto-resume",
        ],
        name="searcher-resumed",
    )
    assert resumed.alive and serving(resumed)
    stub = searcher_pb2_grpc.SearcherStub(grpc.insecure_channel(resumed.address, options=_options()))
    ids: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = stub.ListSearches(
            store_pb2.ListSearchesRequest(page_size=1000, page_token=token), timeout=120
        )
        assert reply.ByteSize() <= limits.REPLY_BUDGET_BYTES + 2 * limits.MAX_CONFIG_BYTES
        ids.extend(s.search.search_id for s in reply.searches)
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert ids == [f"big-{i:03d}" for i in range(count)]
    assert pages > 1
    store_stub = store_pb2_grpc.StoreStub(grpc.insecure_channel(store.address, options=_options()))
    statuses = {store_stub.GetSearch(store_pb2.GetSearchRequest(search_id=i), timeout=30).status for i in ids}
    assert statuses <= {store_pb2.SEARCH_STATUS_RUNNING, store_pb2.SEARCH_STATUS_FAILED}
