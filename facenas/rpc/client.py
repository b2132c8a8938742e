"""Client side: channels with sane options, deadlines on every call, retries with backoff."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from facenas.rpc.status import error_from_rpc

log = logging.getLogger(__name__)

Resp = TypeVar("Resp")

#: Codes worth retrying on the same or another replica: the call did not run or may run again safely.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


def make_channel(target: str, max_message_bytes: int = 16 << 20) -> grpc.Channel:
    """An insecure channel (in-cluster or loopback traffic) with keepalive and message limits."""
    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.enable_retries", 0),
        ],
    )


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
