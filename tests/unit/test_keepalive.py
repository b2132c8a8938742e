"""Calls that stay open for longer than the server's ping window survive (regression: "Too many pings").

A unary handler that sleeps, served by ``facenas.rpc.server.start`` and called through ``make_channel``:
the client pings throughout the silent call, and the server permits exactly what clients send. The
windows are configurable, so the regression runs in seconds; one slow test uses the real values.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest

from facenas.errors import ConfigError
from facenas.rpc.client import make_channel
from facenas.rpc.keepalive import KeepalivePolicy
from facenas.rpc.server import RunningServer, ServerConfig, start

SERVICE = "facenas.test.Sleep"


def _sleep(request: bytes, context: grpc.ServicerContext) -> bytes:
    time.sleep(float(request.decode()))
    return b"slept"


def _add(_servicer: object, server: grpc.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(_sleep)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Sleep": handler}),))


@contextmanager
def _server(keepalive: KeepalivePolicy | None) -> Iterator[RunningServer]:
    running = start([(_add, None, SERVICE)], ServerConfig(metrics_port=None, keepalive=keepalive))
    try:
        yield running
    finally:
        running.stop(0)


def _call_sleeping(address: str, seconds: float, keepalive: KeepalivePolicy | None) -> bytes:
    with make_channel(address, keepalive=keepalive) as channel:
        method = channel.unary_unary(f"/{SERVICE}/Sleep")
        reply: bytes = method(str(seconds).encode(), timeout=seconds + 60)
        return reply


@pytest.mark.slow
def test_a_call_open_past_many_ping_windows_completes() -> None:
    policy = KeepalivePolicy(ping_s=0.2, timeout_s=5)
    with _server(policy) as server:
        # 15 client pings and 7 server ping windows without a byte of data
        assert _call_sleeping(server.address, 3.0, policy) == b"slept"


@pytest.mark.slow
def test_a_server_stricter_than_its_clients_cuts_them_off() -> None:
    """The control: the same call fails when the server's window is longer than the clients' interval,
    so the test above really exercises the ping policy."""
    with _server(KeepalivePolicy(ping_s=30.0)) as server, pytest.raises(grpc.RpcError) as failed:
        _call_sleeping(server.address, 6.0, KeepalivePolicy(ping_s=0.2, timeout_s=5))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "ping" in (failed.value.details() or "").lower()


def test_the_policy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACENAS_KEEPALIVE_S", "2.5")
    monkeypatch.delenv("FACENAS_KEEPALIVE_TIMEOUT_S", raising=False)
    policy = KeepalivePolicy.from_env()
    assert policy == KeepalivePolicy(2.5, 10.0)
    assert ("grpc.keepalive_time_ms", 2500) in policy.client_options()
    assert ("grpc.http2.min_ping_interval_without_data_ms", 1250) in policy.server_options()
    monkeypatch.setenv("FACENAS_KEEPALIVE_S", "soon")
    monkeypatch.setenv("FACENAS_KEEPALIVE_TIMEOUT_S", "0")
    with pytest.raises(ConfigError) as bad:
        KeepalivePolicy.from_env()
    assert "FACENAS_KEEPALIVE_S: 'soon'" in str(bad.value)


@pytest.mark.slow
@pytest.mark.idle
def test_real_values_hold_a_call_of_four_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported case at the real defaults: a 240 s call through ``make_channel`` (ping every 30 s)."""
    monkeypatch.delenv("FACENAS_KEEPALIVE_S", raising=False)
    monkeypatch.delenv("FACENAS_KEEPALIVE_TIMEOUT_S", raising=False)
    with _server(None) as server:
        assert _call_sleeping(server.address, 240.0, None) == b"slept"
