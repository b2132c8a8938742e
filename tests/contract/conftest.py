"""Backends of the store contract suite.

``BACKENDS`` maps a name to a factory: given the pytest request, a context manager yielding a
:class:`Backend` on a fresh, isolated, empty data set (cleaned up on exit). The ``backend`` and ``store``
fixtures are parametrised over every entry, so a new implementation (e.g. the gRPC client of the store
service) joins the whole suite with one line: ``BACKENDS["grpc"] = grpc_backend``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from facenas.store import SqlStore, Store
from tests.tools import PG_URL, postgres_unreachable

PG_ADMIN_URL = PG_URL


@dataclass(frozen=True)
class Backend:
    """Opens stores on one data set; ``url`` is set when other processes can open it too."""

    name: str
    opener: Callable[[], Store]
    url: str | None = None

    def open(self) -> Store:
        return self.opener()


BackendFactory = Callable[[pytest.FixtureRequest], AbstractContextManager[Backend]]


@contextmanager
def sqlite_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh SQLite file in the test's tmp_path."""
    tmp_path: Path = request.getfixturevalue("tmp_path")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    yield Backend("sqlite", lambda: SqlStore.from_url(url), url)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An engine on the PostgreSQL test database; fails the test when the server is unreachable."""
    engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any connection problem means "no server here"
        engine.dispose()
        postgres_unreachable(exc)
    yield engine
    engine.dispose()


@contextmanager
def postgresql_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh, uniquely named schema (selected through ``search_path``), dropped afterwards."""
    admin: Engine = request.getfixturevalue("pg_admin")
    schema = f"facenas_test_{uuid.uuid4().hex[:16]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = (
        make_url(PG_ADMIN_URL)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    try:
        yield Backend("postgresql", lambda: SqlStore.from_url(url), url)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@contextmanager
def grpc_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The store service (in-process, on a free loopback port, over SQLite) through its gRPC client."""
    from facenas.rpc.server import ServerConfig, start
    from facenas.store.grpc_client import GrpcStore
    from facenas.store.grpc_servicer import StoreServicer
    from facenas.v1 import store_pb2_grpc

    tmp_path: Path = request.getfixturevalue("tmp_path")
    backing = SqlStore.from_url(f"sqlite:///{tmp_path / 'served.db'}")
    registration = (store_pb2_grpc.add_StoreServicer_to_server, StoreServicer(backing), "facenas.v1.Store")
    server = start([registration], ServerConfig(port=0, metrics_port=None))
    try:
        yield Backend("grpc", lambda: GrpcStore(server.address, timeout=10.0))
    finally:
        server.stop(grace=0)
        backing.close()


BACKENDS: dict[str, BackendFactory] = {
    "sqlite": sqlite_backend,
    "postgresql": postgresql_backend,
    "grpc": grpc_backend,
}


#: Backends other processes can open by URL (the multi-process and schema tests need that).
SQL_BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=SQL_BACKENDS)
def sql_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with BACKENDS[request.param](request) as opened:
        yield opened


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with BACKENDS[request.param](request) as opened:
        yield opened


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.open()
    yield opened
    opened.close()
