"""A link-cutting TCP proxy for fault tests.

``Proxy(target_host, target_port)`` listens on a free loopback port and forwards bytes both ways, so a
client pointed at ``proxy.address`` talks to the target through a link the test controls:

- ``cut()``: reset every live connection (RST, so peers notice at once) and reset each new one as soon as
  it is accepted; the port stays bound, so ``restore()`` brings the link back on the same address;
- ``cut_for(seconds)``: cut now, restore in the background; ``flap(on_s, off_s)``: up ``on_s``, cut
  ``off_s``, again and again until ``stop_flap()``, ``cut()``, ``restore()`` or ``close()``;
- ``retarget(host, port)``: new connections go to another upstream (``cut_existing`` moves live clients
  too: they reconnect);
- ``stats()`` counts connections and bytes, and ``wait_for(predicate)`` blocks until they satisfy it.

One selector thread owns every socket (HTTP/2's long-lived streams are plain byte streams here; half-closes
are forwarded); the control methods run on it and return once done. ``close()`` (or leaving the ``with``
block) resets what is left, frees the port and joins every thread the proxy started.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")

CHUNK = 64 * 1024
CONTROL_TIMEOUT_S = 30.0
_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST instead of FIN


class ProxyClosed(RuntimeError):  # noqa: N818 - reads as a state
    """The proxy was closed (or its thread died); it cannot be controlled any more."""


@dataclass(frozen=True)
class ProxyStats:
    """Counters since the proxy started.

    ``accepted``: connections forwarded (upstream connect started); ``refused``: connections reset on
    accept because the link was cut; ``upstream_failures``: connections reset because the upstream could
    not be reached; ``reset``: live connections reset by ``cut()``, ``retarget(cut_existing=True)`` or
    ``close()``; ``active``: connections open now; ``bytes_up``/``bytes_down``: bytes delivered to the
    upstream / back to clients; ``cuts``/``restores``: times the link went down / came back.
    """

    accepted: int = 0
    refused: int = 0
    upstream_failures: int = 0
    reset: int = 0
    active: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    cuts: int = 0
    restores: int = 0


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (its peer sees ECONNRESET, not an orderly end of stream)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    sock.close()


class _Link:
    """One client connection and its upstream connection, with the bytes in flight each way."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.connecting = True
        self.to_up = bytearray()
        self.to_down = bytearray()
        self.client_eof = False  # the client will send nothing more
        self.upstream_eof = False
        self.up_shut = False  # we forwarded the client's end of stream to the upstream
        self.down_shut = False


class Proxy:
    """A TCP proxy on ``host`` (a free port) to ``target_host:target_port`` whose link a test controls."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        buffer_bytes: int = 1 << 20,
    ) -> None:
        self._target = (target_host, int(target_port))
        self._buffer_bytes = buffer_bytes
        self._listener = socket.create_server((host, 0), backlog=128)
        self._listener.setblocking(False)
        self.host, self.port = self._listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, self._on_accept)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._masks: dict[socket.socket, int] = {}
        self._links: set[_Link] = set()
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._cut = False
        self._stopping = False
        self._closed = threading.Event()
        self._changed = threading.Condition()
        self._stats = ProxyStats()
        self._control = threading.Lock()  # one control call (and one schedule change) at a time
        self._schedule: threading.Thread | None = None
        self._schedule_stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------ public API

    @property
    def address(self) -> str:
        """``host:port`` to give clients instead of the target's."""
        return f"{self.host}:{self.port}"

    @property
    def target(self) -> tuple[str, int]:
        """Where new connections go."""
        return self._call(lambda: self._target)

    @property
    def is_cut(self) -> bool:
        return self._call(lambda: self._cut)

    def stats(self) -> ProxyStats:
        with self._changed:
            return self._stats

    def wait_for(self, predicate: Callable[[ProxyStats], bool], timeout: float = 30.0) -> ProxyStats:
        """Block until ``predicate(stats)`` holds; TimeoutError with the last stats after ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self._stats), timeout):
                raise TimeoutError(f"proxy {self.address}: condition not met in {timeout:g} s: {self._stats}")
            return self._stats

    def cut(self) -> None:
        """Reset every live connection and every new one until :meth:`restore` (stops a flap)."""
        with self._control:
            self._stop_schedule()
            self._call(self._do_cut)

    def restore(self) -> None:
        """Forward new connections again (stops a flap or a pending ``cut_for``)."""
        with self._control:
            self._stop_schedule()
            self._call(self._do_restore)

    def cut_for(self, seconds: float) -> threading.Event:
        """Cut now and restore after ``seconds`` in the background.

        The event is set when that schedule ends: the link restored, or the schedule superseded by
        ``cut()``, ``restore()``, ``flap()``, another ``cut_for()`` or ``close()``.
        """
        ended = threading.Event()

        def run(stop: threading.Event) -> None:
            try:
                if not stop.wait(seconds):
                    self._call(self._do_restore)
            except ProxyClosed:
                pass
            finally:
                ended.set()

        with self._control:
            self._stop_schedule()
            self._call(self._do_cut)
            self._start_schedule(run, "cut-for")
        return ended

    def flap(self, on_s: float, off_s: float) -> None:
        """Up for ``on_s``, then cut for ``off_s``, repeatedly, in the background until stopped."""
        if on_s <= 0 or off_s <= 0:
            raise ValueError(f"flap needs positive periods, got on_s={on_s}, off_s={off_s}")

        def run(stop: threading.Event) -> None:
            with contextlib.suppress(ProxyClosed):
                while not stop.wait(on_s):
                    self._call(self._do_cut)
                    if stop.wait(off_s):
                        return
                    self._call(self._do_restore)

        with self._control:
            self._stop_schedule()
            self._call(self._do_restore)
            self._start_schedule(run, "flap")

    def stop_flap(self) -> None:
        """Stop a flap (or a pending ``cut_for``) and leave the link up."""
        self.restore()

    def retarget(self, host: str, port: int, *, cut_existing: bool = False) -> None:
        """Send new connections to ``host:port``; ``cut_existing`` also resets the live ones."""

        def run() -> None:
            self._target = (host, int(port))
            if cut_existing:
                self._reset_links()

        with self._control:
            self._call(run)

    def close(self) -> None:
        """Stop any schedule, reset every connection, free the port and join the proxy's threads."""
        with self._control:
            if self._closed.is_set():
                return
            self._stop_schedule()
            with contextlib.suppress(ProxyClosed):
                self._call(self._do_stop)
            self._thread.join(CONTROL_TIMEOUT_S)
            self._closed.set()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Proxy({self.address} -> {self._target[0]}:{self._target[1]}, cut={self._cut})"

    # ------------------------------------------------------------------------------------ control

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the proxy's thread and return its result (directly when already on it)."""
        if threading.current_thread() is self._thread:
            return fn()
        if self._closed.is_set() or not self._thread.is_alive():
            raise ProxyClosed(f"proxy {self.address} is closed") from self._failure
        done = threading.Event()
        box: list[T] = []
        failure: list[BaseException] = []

        def command() -> None:
            try:
                box.append(fn())
            except BaseException as err:
                failure.append(err)
            finally:
                done.set()

        self._commands.put(command)
        with contextlib.suppress(OSError):  # a full pipe already wakes the loop
            self._wake_w.send(b"x")
        while not done.wait(0.5):
            if not self._thread.is_alive():
                raise ProxyClosed(f"proxy {self.address} stopped with a command pending") from self._failure
        if failure:
            raise failure[0]
        return box[0]

    def _start_schedule(self, run: Callable[[threading.Event], None], kind: str) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=run, args=(stop,), name=f"proxy-{self.port}-{kind}", daemon=True)
        self._schedule, self._schedule_stop = thread, stop
        thread.start()

    def _stop_schedule(self) -> None:
        """Stop the running schedule and wait for it: nothing it does can follow the caller's action."""
        if self._schedule is not None:
            self._schedule_stop.set()
            self._schedule.join(CONTROL_TIMEOUT_S)
            self._schedule = None

    def _bump(self, **changes: int) -> None:
        with self._changed:
            counts = {name: getattr(self._stats, name) + delta for name, delta in changes.items()}
            self._stats = replace(self._stats, **counts)
            self._changed.notify_all()

    # ------------------------------------------------------------------------------------ loop thread

    def _do_cut(self) -> None:
        if not self._cut:
            self._cut = True
            self._bump(cuts=1)
        self._reset_links()

    def _do_restore(self) -> None:
        if self._cut:
            self._cut = False
            self._bump(restores=1)

    def _do_stop(self) -> None:
        self._stopping = True

    def _loop(self) -> None:
        try:
            while not self._stopping:
                for key, mask in self._selector.select():
                    key.data(key.fileobj, mask)
        except BaseException as err:  # a bug here: control calls say so instead of hanging
            self._failure = err
            raise
        finally:
            self._reset_links()
            self._selector.close()
            for sock in (self._listener, self._wake_r, self._wake_w):
                sock.close()
            with self._changed:
                self._changed.notify_all()

    def _on_wake(self, sock: socket.socket, mask: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while sock.recv(4096):
                pass
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command()

    def _on_accept(self, listener: socket.socket, mask: int) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. the client reset before we accepted it
                continue
            if self._cut:
                _reset(client)
                self._bump(refused=1)
                continue
            self._open(client)

    def _open(self, client: socket.socket) -> None:
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream = socket.socket(socket.AF_INET6 if ":" in self._target[0] else socket.AF_INET)
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = upstream.connect_ex(self._target)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            _reset(client)
            upstream.close()
            self._bump(upstream_failures=1)
            return
        link = _Link(client, upstream)
        self._links.add(link)
        self._bump(accepted=1, active=1)
        self._update(link)

    def _watch(self, sock: socket.socket, mask: int, link: _Link) -> None:
        """Make the selector report ``mask`` (0: nothing) for ``sock``."""
        old = self._masks.get(sock, 0)
        if mask == old:
            return
        if not mask:
            self._selector.unregister(sock)
            del self._masks[sock]
        elif not old:
            self._selector.register(sock, mask, lambda s, m: self._on_ready(link, s, m))
            self._masks[sock] = mask
        else:
            self._selector.modify(sock, mask, lambda s, m: self._on_ready(link, s, m))
            self._masks[sock] = mask

    def _update(self, link: _Link) -> None:
        """Watch what each side of ``link`` can do now; end the link once both ends are done."""
        if link.client_eof and link.upstream_eof and link.up_shut and link.down_shut:
            self._end(link, reset=False)
            return
        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        limit = self._buffer_bytes
        client = (read if not link.client_eof and len(link.to_up) < limit else 0) | (
            write if link.to_down else 0
        )
        if link.connecting:
            upstream = write
        else:
            upstream = (read if not link.upstream_eof and len(link.to_down) < limit else 0) | (
                write if link.to_up else 0
            )
        self._watch(link.client, client, link)
        self._watch(link.upstream, upstream, link)

    def _on_ready(self, link: _Link, sock: socket.socket, mask: int) -> None:
        if link not in self._links:
            return  # ended earlier in this round of events
        try:
            if sock is link.upstream and link.connecting:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self._bump(upstream_failures=1)
                    self._end(link, reset=True)
                    return
                link.connecting = False
                self._send(link, to_upstream=True)
            else:
                from_client = sock is link.client
                if mask & selectors.EVENT_WRITE:
                    self._send(link, to_upstream=not from_client)
                if mask & selectors.EVENT_READ:
                    self._receive(link, from_client)
            self._forward_eof(link)
        except OSError:  # a reset, a broken pipe: the other side learns it the same way
            self._end(link, reset=True)
            return
        self._update(link)

    def _receive(self, link: _Link, from_client: bool) -> None:
        """Read what one side sent and pass it on at once when the other side can take it."""
        sock = link.client if from_client else link.upstream
        try:
            data = sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            if from_client:
                link.client_eof = True
            else:
                link.upstream_eof = True
            return
        (link.to_up if from_client else link.to_down).extend(data)
        if not (from_client and link.connecting):
            self._send(link, to_upstream=from_client)

    def _send(self, link: _Link, to_upstream: bool) -> None:
        """Write what is waiting for one side, as much as it takes now."""
        sock, pending = (link.upstream, link.to_up) if to_upstream else (link.client, link.to_down)
        if not pending:
            return
        try:
            sent = sock.send(pending)
        except (BlockingIOError, InterruptedError):
            return
        del pending[:sent]
        self._bump(**{"bytes_up" if to_upstream else "bytes_down": sent})

    def _forward_eof(self, link: _Link) -> None:
        """Half-close the other side once a side's end of stream and every byte before it are through."""
        if link.client_eof and not link.to_up and not link.up_shut and not link.connecting:
            link.upstream.shutdown(socket.SHUT_WR)
            link.up_shut = True
        if link.upstream_eof and not link.to_down and not link.down_shut:
            link.client.shutdown(socket.SHUT_WR)
            link.down_shut = True

    def _end(self, link: _Link, reset: bool) -> None:
        for sock in (link.client, link.upstream):
            if self._masks.pop(sock, 0):
                self._selector.unregister(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()
        self._links.discard(link)
        self._bump(active=-1)

    def _reset_links(self) -> None:
        links = list(self._links)
        for link in links:
            self._end(link, reset=True)
        if links:
            self._bump(reset=len(links))
