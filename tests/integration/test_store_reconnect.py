"""The store comes back on a new address behind the same ``dns:///`` name: the searcher's store client
resolves the name again and carries on (the name's answers are faked; the two stores are real processes
on 127.0.0.1 and 127.0.0.2, sharing one SQLite file, as a restarted pod shares its volume)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from facenas.launcher import LocalCluster
from facenas.rpc import resolve as resolving
from facenas.search.outages import OutagePolicy
from facenas.search.patient_store import PatientStore
from facenas.store.grpc_client import GrpcStore

pytestmark = pytest.mark.integration


def _port_free_on_both() -> int:
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.2", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free on both loopback addresses")


def test_the_store_back_on_a_new_address_is_found_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = {"store.facenas.test": "127.0.0.1"}

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(resolving.socket, "getaddrinfo", getaddrinfo)
    port = _port_free_on_both()
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with LocalCluster(tmp_path / "run") as cluster:
        first = cluster.start("store", ["--url", url, "--host", "127.0.0.1", "--port", str(port)], name="a")
        client = GrpcStore(f"dns:///store.facenas.test:{port}", timeout=5, attempts=2, reconnect_after_s=0.2)
        store = PatientStore(client, OutagePolicy(patience_s=120, first_backoff_s=0.05, max_backoff_s=0.5))
        store.create_search("s", "s", "")
        assert client.address == f"127.0.0.1:{port}"
        first.kill()
        answers["store.facenas.test"] = "127.0.0.2"  # the pod came back elsewhere
        cluster.start("store", ["--url", url, "--host", "127.0.0.2", "--port", str(port)], name="b")
        assert store.get_search("s").search_id == "s"
        assert client.address == f"127.0.0.2:{port}"
        client.close()
