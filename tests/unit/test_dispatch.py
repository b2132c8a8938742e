"""Replica pools: static addresses, and dns:/// names expanded into one replica per address."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from facenas.errors import ConfigError
from facenas.rpc import resolve as resolving
from facenas.search.dispatch import ReplicaPool, resolve


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            raise socket.gaierror(f"unknown host {host}")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]

    monkeypatch.setattr(resolving.socket, "getaddrinfo", getaddrinfo)


def test_static_addresses_are_one_replica_each() -> None:
    assert resolve("10.0.0.7:50061") == ["10.0.0.7:50061"]
    pool = ReplicaPool("trainer", ["127.0.0.1:1", "127.0.0.1:2"])
    assert [r.address for r in pool.replicas] == ["127.0.0.1:1", "127.0.0.1:2"]
    pool.close()


def test_dns_names_expand_and_follow_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"trainer-headless": ["10.1.0.2", "10.1.0.3"]}
    _fake_dns(monkeypatch, answers)
    pool = ReplicaPool("trainer", ["dns:///trainer-headless:50061"])
    assert [r.address for r in pool.replicas] == ["10.1.0.2:50061", "10.1.0.3:50061"]
    pool.replicas[0].capacity = 2
    answers["trainer-headless"] = ["10.1.0.3", "10.1.0.4"]  # one pod gone, one new
    pool.refresh()
    assert [r.address for r in pool.replicas] == ["10.1.0.3:50061", "10.1.0.4:50061"]
    assert pool.replicas[1].capacity == 1  # learnt from its peers
    pool.close()


def test_a_busy_replica_is_kept_until_its_calls_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"t": ["10.1.0.2"]}
    _fake_dns(monkeypatch, answers)
    pool = ReplicaPool("trainer", ["dns:///t:1"])
    pool.replicas[0].jobs["a-job"] = 1
    answers["t"] = []
    pool.refresh()
    assert [r.address for r in pool.replicas] == ["10.1.0.2:1"]
    pool.close()


def test_unresolvable_names_give_no_replicas_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, {})
    assert resolve("dns:///nowhere:1") == []
    with pytest.raises(ConfigError, match="dns:///NAME:PORT"):
        resolve("dns:///no-port")


def test_replicas_wanted_counts_jobs_per_replica() -> None:
    pool = ReplicaPool("trainer", ["127.0.0.1:1"])
    pool.replicas[0].capacity = 2  # two trainings per GPU
    for job in ("a", "b", "c"):
        pool.replicas[0].jobs[job] = 1
    assert pool.demand() == 3 and pool.replicas_wanted() == 2
    pool.close()
