"""One keepalive policy for every facenas client and server: the server permits what the clients send.

gRPC servers count a client's keepalive ping that arrives sooner than
``grpc.http2.min_ping_interval_without_data_ms`` after the last one (default 5 minutes) as a strike,
and close the connection with ``too_many_pings`` after ``grpc.http2.max_ping_strikes`` (2). A client
pinging every 30 s during a call that sends no data for a few minutes (an evaluation that trains, a
quiet ``search watch``) is then cut off with UNAVAILABLE. Here both sides derive their options from one
:class:`KeepalivePolicy`: clients ping every ``ping_s`` and keep pinging through silent calls; servers
accept pings twice as often as that, ping their clients in turn (so a dead watcher is noticed) and still
strike clients that ping faster than any facenas client would.

``FACENAS_KEEPALIVE_S`` and ``FACENAS_KEEPALIVE_TIMEOUT_S`` set the policy of a process (tests shorten it
to exercise long calls in seconds); every process of one deployment must use the same values.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from facenas.errors import ConfigError

ENV_PING = "FACENAS_KEEPALIVE_S"
ENV_TIMEOUT = "FACENAS_KEEPALIVE_TIMEOUT_S"

Options = list[tuple[str, int]]


@dataclass(frozen=True)
class KeepalivePolicy:
    """Clients ping an idle connection every ``ping_s`` and drop it when a ping is not answered within
    ``timeout_s``."""

    ping_s: float = 30.0
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.ping_s) and 0.1 <= self.ping_s <= 7200):
            problems.append(f"{ENV_PING}: {self.ping_s} must be in [0.1, 7200] seconds")
        if not (math.isfinite(self.timeout_s) and 0.1 <= self.timeout_s <= 600):
            problems.append(f"{ENV_TIMEOUT}: {self.timeout_s} must be in [0.1, 600] seconds")
        if problems:
            raise ConfigError(problems)

    @classmethod
    def from_env(cls) -> KeepalivePolicy:
        """The policy ``FACENAS_KEEPALIVE_S`` / ``FACENAS_KEEPALIVE_TIMEOUT_S`` give (defaults otherwise)."""
        default = cls()
        values = {}
        problems = []
        for name, field, fallback in (
            (ENV_PING, "ping_s", default.ping_s),
            (ENV_TIMEOUT, "timeout_s", default.timeout_s),
        ):
            text = os.environ.get(name, "")
            try:
                values[field] = float(text) if text.strip() else fallback
            except ValueError:
                problems.append(f"{name}: {text!r} is not a number of seconds")
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def client_options(self) -> Options:
        """Channel options of every facenas client."""
        return [
            ("grpc.keepalive_time_ms", _ms(self.ping_s)),
            ("grpc.keepalive_timeout_ms", _ms(self.timeout_s)),
            ("grpc.keepalive_permit_without_calls", 1),
            # keep pinging through calls that send nothing for a long time (a training, a quiet watch)
            ("grpc.http2.max_pings_without_data", 0),
        ]

    def server_options(self) -> Options:
        """Server options that accept exactly what :meth:`client_options` sends (with room for jitter)."""
        return [
            ("grpc.http2.min_ping_interval_without_data_ms", _ms(self.ping_s / 2)),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.keepalive_permit_without_calls", 1),
            # the server checks its clients too: a watcher that vanished is noticed within ~2 pings
            ("grpc.keepalive_time_ms", _ms(self.ping_s * 2)),
            ("grpc.keepalive_timeout_ms", _ms(self.timeout_s)),
            ("grpc.http2.max_pings_without_data", 0),
        ]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
