"""A dns:/// replica name that resolves to nothing when the searcher starts (no trainer pod or container
ready yet) is looked up again while a search waits for a replica's target (``ReplicaPool.describe``):
the replicas that appear later are found, instead of the search waiting for them forever."""

from __future__ import annotations

import socket
from typing import Any

import grpc
import pytest

from facenas.domain import EvalSpace
from facenas.rpc import resolve as resolving
from facenas.search import dispatch
from facenas.search.dispatch import ReplicaPool
from facenas.v1 import common_pb2


class _Stub:
    def Describe(self, request: Any, timeout: float | None = None) -> common_pb2.DescribeResponse:
        return common_pb2.DescribeResponse(capacity=1, target=common_pb2.Target(key="cpu-k", description="d"))


def test_describe_finds_replicas_that_appear_after_start(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: dict[str, list[str]] = {}

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            raise socket.gaierror(f"unknown host {host}")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]

    monkeypatch.setattr(resolving.socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(dispatch, "RESOLVE_EVERY_S", 0.0)
    monkeypatch.setattr(dispatch.time, "sleep", lambda _s: answers.setdefault("trainer", ["10.1.0.2"]))
    channel = grpc.insecure_channel("127.0.0.1:9")
    pool = ReplicaPool("trainer", ["dns:///trainer:50061"], connect=lambda _a: (_Stub(), channel))
    try:
        assert pool.replicas == []  # nothing resolves yet
        target = pool.describe("Partial Training Val. IOU", EvalSpace(img_size=(64, 64)), wait_s=30)
        assert target.key == "cpu-k"
        assert [r.address for r in pool.replicas] == ["10.1.0.2:50061"]
    finally:
        pool.close()
