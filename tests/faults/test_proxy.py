"""The link-cutting proxy of the fault tests, with real gRPC servers (facenas.rpc.server) behind it.

Every wait is on an event (a call's outcome, the proxy's counters, a schedule's end), never a fixed sleep,
so the tests hold on a loaded machine; time bounds are generous and only say "quickly, not at a deadline".
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facenas.rpc.client import make_channel
from facenas.rpc.server import RunningServer, ServerConfig, start
from tests.faults.proxy import Proxy, ProxyClosed, ProxyStats

SERVICE = "facenas.test.Who"
#: a call that fails while the link is cut must fail at once (UNAVAILABLE), not at its deadline
DEADLINE_S = 60.0
FAST_FAIL_S = 10.0


def _server(name: str) -> RunningServer:
    """A server whose ``Who`` answers its name and ``Echo`` its request, plus health (a streaming API)."""

    def who(request: bytes, context: grpc.ServicerContext) -> bytes:
        return name.encode()

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def add(_servicer: object, server: grpc.Server) -> None:
        handlers = {
            "Who": grpc.unary_unary_rpc_method_handler(who),
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    return start([(add, None, SERVICE)], ServerConfig(metrics_port=None))


@contextmanager
def _running(name: str) -> Iterator[RunningServer]:
    server = _server(name)
    try:
        yield server
    finally:
        server.stop(0)


@pytest.fixture
def server_a() -> Iterator[RunningServer]:
    with _running("A") as server:
        yield server


@pytest.fixture
def server_b() -> Iterator[RunningServer]:
    with _running("B") as server:
        yield server


@pytest.fixture
def proxy(server_a: RunningServer) -> Iterator[Proxy]:
    with Proxy("127.0.0.1", server_a.port) as running:
        yield running


def _who(channel: grpc.Channel, wait: bool = False) -> str:
    who = channel.unary_unary(f"/{SERVICE}/Who", None, None)
    reply: bytes = who(b"", timeout=DEADLINE_S, wait_for_ready=wait)
    return reply.decode()


def _wait_until_dropped(channel: grpc.Channel) -> None:
    """Until the channel has seen its connection go (it leaves READY)."""
    dropped = threading.Event()

    def on_state(state: grpc.ChannelConnectivity) -> None:
        if state != grpc.ChannelConnectivity.READY:
            dropped.set()

    channel.subscribe(on_state)
    try:
        assert dropped.wait(DEADLINE_S), "the channel never saw its connection reset"
    finally:
        channel.unsubscribe(on_state)


def _fails_fast(channel: grpc.Channel) -> None:
    """A call through a cut link fails UNAVAILABLE quickly."""
    began = time.monotonic()
    with pytest.raises(grpc.RpcError) as failed:
        _who(channel)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value
    assert time.monotonic() - began < FAST_FAIL_S


def _proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("proxy-")]


def test_calls_and_large_messages_pass_through(proxy: Proxy) -> None:
    with make_channel(proxy.address) as channel:
        assert _who(channel) == "A"
        payload = bytes(range(256)) * 4096  # 1 MiB: more than the proxy's socket buffers
        echo = channel.unary_unary(f"/{SERVICE}/Echo", None, None)
        assert echo(payload, timeout=DEADLINE_S) == payload
        # counted once the proxy's send returns, which may be after the client has read the bytes
        stats = proxy.wait_for(lambda s: s.bytes_up > len(payload) and s.bytes_down > len(payload))
        assert stats.accepted == stats.active == 1, "one HTTP/2 connection carries every call"
        assert (stats.refused, stats.upstream_failures, stats.cuts) == (0, 0, 0)


@pytest.mark.slow
def test_cut_fails_calls_and_streams_fast_and_restore_heals_the_same_channel(proxy: Proxy) -> None:
    with make_channel(proxy.address) as channel:
        assert _who(channel) == "A"
        health = health_pb2_grpc.HealthStub(channel)
        stream = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE_S)
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVING  # a long-lived stream is open

        began = time.monotonic()
        proxy.cut()
        assert proxy.is_cut and proxy.stats().reset == 1 and proxy.stats().active == 0
        with pytest.raises(grpc.RpcError) as broken:
            next(stream)
        assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - began < FAST_FAIL_S
        _fails_fast(channel)
        proxy.wait_for(lambda s: s.refused >= 1)  # the channel tried to reconnect and was refused

        proxy.restore()
        assert not proxy.is_cut
        assert _who(channel, wait=True) == "A"  # the same channel, reconnected
        stats = proxy.stats()
        assert (stats.cuts, stats.restores, stats.active) == (1, 1, 1)


@pytest.mark.slow
def test_cut_for_restores_by_itself(proxy: Proxy) -> None:
    with make_channel(proxy.address) as channel:
        assert _who(channel) == "A"
        restored = proxy.cut_for(5.0)
        _fails_fast(channel)
        assert restored.wait(DEADLINE_S)
        assert not proxy.is_cut
        assert _who(channel, wait=True) == "A"


def test_restore_cancels_a_pending_cut_for(proxy: Proxy) -> None:
    ended = proxy.cut_for(3600)
    proxy.restore()
    assert ended.is_set() and not proxy.is_cut
    with make_channel(proxy.address) as channel:
        assert _who(channel) == "A"


@pytest.mark.slow
def test_flap_cuts_and_restores_until_stopped(proxy: Proxy) -> None:
    with make_channel(proxy.address) as channel:
        assert _who(channel) == "A"
        proxy.flap(on_s=0.2, off_s=0.2)
        proxy.wait_for(lambda s: s.cuts >= 3 and s.restores >= 3)
        proxy.stop_flap()
        stats = proxy.stats()
        assert not proxy.is_cut and stats.cuts == stats.restores
        assert _who(channel, wait=True) == "A"
        assert [t.name for t in _proxy_threads()] == [f"proxy-{proxy.port}"], "the flap thread is gone"


def test_cut_stops_a_flap_and_stays_cut(proxy: Proxy) -> None:
    proxy.flap(on_s=0.05, off_s=0.05)
    proxy.wait_for(lambda s: s.restores >= 1)
    proxy.cut()
    cuts = proxy.stats().cuts
    with make_channel(proxy.address) as channel:
        _fails_fast(channel)
    assert proxy.is_cut and proxy.stats().cuts == cuts


def test_retarget_moves_new_and_optionally_live_connections(
    proxy: Proxy, server_a: RunningServer, server_b: RunningServer
) -> None:
    with make_channel(proxy.address) as first:
        assert _who(first) == "A"
        proxy.retarget("127.0.0.1", server_b.port)
        assert proxy.target == ("127.0.0.1", server_b.port)
        # channels of one process share connections (the global subchannel pool): this one must not
        with grpc.insecure_channel(proxy.address, [("grpc.use_local_subchannel_pool", 1)]) as second:
            assert _who(second) == "B"
        assert _who(first) == "A", "a live connection stays on its upstream"
        proxy.retarget("127.0.0.1", server_b.port, cut_existing=True)
        _wait_until_dropped(first)  # a call sent before the client reads the reset fails with it
        assert _who(first, wait=True) == "B", "reset, the channel reconnects to the new upstream"


def test_an_unreachable_upstream_resets_the_client(proxy: Proxy) -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        closed_port = spare.getsockname()[1]  # bound, not listening: connections are refused
        proxy.retarget("127.0.0.1", closed_port)
        with make_channel(proxy.address) as channel:
            _fails_fast(channel)
        proxy.wait_for(lambda s: s.upstream_failures >= 1)


def test_raw_bytes_and_half_close_are_forwarded() -> None:
    """A client that sends, then shuts its write side, still reads the whole answer (echo until EOF)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        served = threading.Event()

        def echo_until_eof() -> None:
            conn, _ = listener.accept()
            with conn:
                received = bytearray()
                while chunk := conn.recv(65536):
                    received.extend(chunk)
                conn.sendall(bytes(received))
            served.set()

        thread = threading.Thread(target=echo_until_eof, daemon=True)
        thread.start()
        data = b"x" * (3 << 20)
        with Proxy("127.0.0.1", listener.getsockname()[1]) as proxy:
            with socket.create_connection((proxy.host, proxy.port), timeout=DEADLINE_S) as client:
                client.sendall(data)
                client.shutdown(socket.SHUT_WR)
                answer = bytearray()
                while chunk := client.recv(65536):
                    answer.extend(chunk)
            assert bytes(answer) == data
            assert served.wait(DEADLINE_S)
            stats = proxy.wait_for(lambda s: s.active == 0)
            assert stats.bytes_up == stats.bytes_down == len(data) and stats.reset == 0
        thread.join(DEADLINE_S)


def test_close_joins_every_thread_and_frees_the_port(server_a: RunningServer) -> None:
    before = _proxy_threads()
    proxy = Proxy("127.0.0.1", server_a.port)
    with make_channel(proxy.address) as channel:
        assert _who(channel) == "A"
        proxy.flap(on_s=10, off_s=10)
        assert len(_proxy_threads()) == len(before) + 2
        proxy.close()
        proxy.close()  # idempotent
        assert _proxy_threads() == before
        _fails_fast(channel)
    with pytest.raises(ConnectionRefusedError), socket.create_connection((proxy.host, proxy.port), 5):
        pass
    assert isinstance(proxy.stats(), ProxyStats) and proxy.stats().active == 0
    with pytest.raises(ProxyClosed):
        proxy.cut()
