"""Addresses behind a service spec: ``host:port`` is itself; ``dns:///NAME:PORT`` is every address NAME
resolves to now (a Kubernetes headless Service gives every ready pod). Callers re-resolve as pods come
and go: the searcher for its replicas, and for the store when it stops answering."""

from __future__ import annotations

import logging
import socket

from facenas.errors import ConfigError

log = logging.getLogger(__name__)

DNS_PREFIX = "dns:///"


def resolve(spec: str) -> list[str]:
    """The addresses of ``spec`` (sorted; empty when a ``dns:///`` name does not resolve now)."""
    if not spec.startswith(DNS_PREFIX):
        return [spec]
    host, port = split_dns(spec)
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as err:
        log.warning("cannot resolve", extra={"dns_name": host, "error": str(err)})
        return []
    addresses = {str(info[4][0]) for info in infos}
    return sorted(f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses)


def split_dns(spec: str) -> tuple[str, str]:
    """``dns:///NAME:PORT`` -> (NAME, PORT); ConfigError otherwise."""
    host, sep, port = spec[len(DNS_PREFIX) :].rpartition(":")
    if not spec.startswith(DNS_PREFIX) or not sep or not host or not port.isdigit():
        raise ConfigError([f"{spec}: expected dns:///NAME:PORT"])
    return host, port
