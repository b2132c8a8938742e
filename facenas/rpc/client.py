"""Client side: channels with sane options, deadlines on every call, retries with backoff."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from facenas.limits import MAX_MESSAGE_BYTES
from facenas.rpc import security
from facenas.rpc.keepalive import KeepalivePolicy
from facenas.rpc.status import error_from_rpc

log = logging.getLogger(__name__)

Resp = TypeVar("Resp")

#: gRPC's default grows to 120 s: a store or worker back after a long outage would wait that long.
MAX_RECONNECT_BACKOFF_MS = 5000

#: Codes worth retrying on the same or another replica: the call did not run or may run again safely.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


def make_channel(
    target: str,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    keepalive: KeepalivePolicy | None = None,
    tls: security.TlsConfig | None = None,
    token: str | None = None,
    authority: str | None = None,
    fresh: bool = False,
) -> grpc.Channel:
    """A channel with message limits and the keepalive policy every facenas server accepts
    (``keepalive``, default :meth:`KeepalivePolicy.from_env`).

    It is mTLS with ``tls``, else with the process's TLS (:func:`security.client_tls`: a service's
    ``--tls-*`` flags, else ``FACENAS_TLS_*``), else plaintext; ``token`` is sent as a bearer token on
    every call; ``authority``: the name to present (and, under TLS, to verify) when ``target`` is an
    address resolved from it; ``fresh``: connections of its own (gRPC shares them between channels to the
    same target by default, with their reconnect backoff). A lost connection is tried again at least every
    ``MAX_RECONNECT_BACKOFF_MS``, so a service that comes back is found within seconds."""
    policy = keepalive or KeepalivePolicy.from_env()
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 0),
        *policy.client_options(),
    ]
    options.append(("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS))
    if authority:
        options.append(("grpc.default_authority", authority))
    if fresh:
        options.append(("grpc.use_local_subchannel_pool", 1))
    channel = security.secure_or_insecure_channel(target, options, tls or security.client_tls())
    return security.with_token(channel, token)


def call(
    method: Callable[..., Resp],
    request: Any,
    timeout: float,
    attempts: int = 3,
    backoff: float = 0.2,
    max_backoff: float = 5.0,
) -> Resp:
    """Call a unary method with a deadline; retry RETRYABLE failures with jittered backoff.

    Failures become facenas errors (``InvalidInput``, ``NotFound``, ``Unavailable``...).
    """
    delay = backoff
    for attempt in range(1, attempts + 1):
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            if code not in RETRYABLE or attempt == attempts:
                raise error_from_rpc(err) from None
            log.debug("retrying", extra={"attempt": attempt, "code": str(code)})
            time.sleep(delay * (0.5 + random.random()))
            delay = min(max_backoff, delay * 2)
    raise AssertionError("unreachable")
