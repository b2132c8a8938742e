"""The SQL store on SQLAlchemy 2: one implementation for SQLite (embedded) and PostgreSQL.

* Writes are *insert-or-compare*: ``INSERT ... ON CONFLICT DO NOTHING``, then the stored row is read back
  in the same transaction and compared with the request; timestamps the store assigns are not compared.
* Event ``seq`` numbers come from a per-search counter (``searches.last_seq``) bumped with
  ``UPDATE ... RETURNING`` in the transaction that inserts the event, so they are gap-free under
  concurrent appenders (a PostgreSQL row lock; SQLite write transactions start with ``BEGIN IMMEDIATE``).
* SQLite runs in WAL mode with ``synchronous=FULL``, a 30 s busy timeout and foreign keys on; several
  processes may open the same file. SQLite stores NaN as NULL; measurement columns read NULL back as NaN.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    RowMapping,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.sql.expression import ColumnElement, Executable, Select, and_

from facenas import limits
from facenas.domain import (
    ArchRecord,
    Candidate,
    EvalKey,
    Evaluation,
    Event,
    Failure,
    IterationRecord,
    NewEvent,
    Outcome,
    SearchProgress,
    SearchRecord,
    SearchStatus,
    canonical_json,
)
from facenas.errors import InvalidInput
from facenas.limits import Page
from facenas.store.base import NotFound, Store, StoreConflict, StoreUnavailable

log = logging.getLogger(__name__)

#: 2: search targets, failures and event tokens are tables (were only events); 3: evaluation keys name the
#: built model (``evaluations.model``) and candidates keep their own document, params and model; 4: arch
#: documents are stored once, compressed (``documents``), and candidates' outcomes are rows (``outcomes``)
SCHEMA_VERSION = 4
ACCEPTED_URLS = (
    "sqlite:///path/to/file.db, postgresql://user@host:port/db, "
    "postgresql+psycopg://user@host:port/db, or a bare file path (SQLite)"
)
SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE = "facenas_write"  # connection execution option: SQLite write transactions BEGIN IMMEDIATE
_PG_SCHEMA_LOCK = 0x66616365  # advisory lock serialising schema creation across processes
_CHUNK = 500  # ids per IN (...) list
T = TypeVar("T")


class SchemaVersionError(StoreUnavailable):
    """The database was written by a newer facenas (a newer schema version)."""


class _Float(TypeDecorator[float]):
    """A double whose NULL reads back as NaN (SQLite stores NaN as NULL)."""

    impl = Double
    cache_ok = True

    def process_result_value(self, value: Any | None, dialect: Dialect) -> float | None:
        return math.nan if value is None else float(value)


_Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
)
searches = Table(
    "searches",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("search_id", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("config", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Index("ix_searches_created", "created_at", "id"),
)
archs = Table(
    "archs",
    metadata,
    Column("archid", Text, primary_key=True),
    Column("document", Text, nullable=False),
    Column("params", BigInteger, nullable=False),
)
candidates = Table(
    "candidates",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("search_id", Text, ForeignKey("searches.search_id"), nullable=False),
    Column("archid", Text, nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("parents", Text, nullable=False),  # JSON list
    Column("proposed_at", Double, nullable=False),
    Column("document", Text, nullable=False, server_default=""),  # "" since v4: see document_digest
    Column("params", BigInteger, nullable=False, server_default="0"),
    Column("model", Text, nullable=False, server_default=""),
    Column("document_digest", Text, nullable=False, server_default=""),  # documents.digest (v4)
    UniqueConstraint("search_id", "archid", name="uq_candidates_search_arch"),
    Index("ix_candidates_search_order", "search_id", "id"),
)
evaluations = Table(
    "evaluations",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("archid", Text, nullable=False),
    Column("model", Text, nullable=False, server_default=""),  # "" in evaluations stored before v3
    Column("objective", Text, nullable=False),
    Column("budget", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("value", _Float, nullable=True),
    Column("unit", Text, nullable=False),
    Column("details", Text, nullable=False),  # canonical JSON
    Column("worker", Text, nullable=False),
    Column("seconds", _Float, nullable=True),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("archid", "model", "objective", "budget", "target", name="uq_evaluations_key"),
)
iterations = Table(
    "iterations",
    metadata,
    Column("search_id", Text, ForeignKey("searches.search_id"), primary_key=True),
    Column("iteration", Integer, primary_key=True, autoincrement=False),
    Column("pareto", Text, nullable=False),  # JSON list
    Column("hypervolume", _Float, nullable=True),
    Column("state", Text, nullable=False),  # canonical JSON
    Column("walltime_s", _Float, nullable=True),
    Column("created_at", Double, nullable=False),
)
events = Table(
    "events",
    metadata,
    Column("search_id", Text, ForeignKey("searches.search_id"), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", Text, nullable=False),
    Column("payload", Text, nullable=False),  # canonical JSON
    Column("created_at", Double, nullable=False),
)

#: Arch documents, once each: the text's SHA-256 and the text deflated (a 24.5 KB Archai document is about
#: 1 KB); candidates name theirs by digest.
documents = Table(
    "documents",
    metadata,
    Column("digest", Text, primary_key=True),
    Column("body", LargeBinary, nullable=False),
)
#: How each settled candidate of a search ended (complete, infeasible, failed): counts are index counts.
outcomes = Table(
    "outcomes",
    metadata,
    Column("search_id", Text, ForeignKey("searches.search_id"), primary_key=True),
    Column("archid", Text, primary_key=True),
    Column("outcome", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Index("ix_outcomes_search_outcome", "search_id", "outcome"),
)

targets = Table(
    "targets",
    metadata,
    Column("search_id", Text, ForeignKey("searches.search_id"), primary_key=True),
    Column("objective", Text, primary_key=True),
    Column("target", Text, nullable=False),
)
failures = Table(
    "failures",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("search_id", Text, ForeignKey("searches.search_id"), nullable=False),
    Column("archid", Text, nullable=False),
    Column("objective", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("search_id", "archid", name="uq_failures_search_arch"),
)
event_tokens = Table(
    "event_tokens",
    metadata,
    Column("search_id", Text, ForeignKey("searches.search_id"), primary_key=True),
    Column("token", Text, primary_key=True),
    Column("seq", BigInteger, nullable=False),
)


# --- helpers ---
def normalise_url(url: str | URL) -> URL:
    """Parse a store URL; ``postgresql://`` gets the psycopg driver. Unsupported URLs: InvalidInput."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise InvalidInput(f"invalid store URL {url!r}; accepted: {ACCEPTED_URLS}") from exc
    if parsed.drivername in ("postgresql", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
            raise InvalidInput(f"SQLite store needs a file path, got {url!r}; accepted: {ACCEPTED_URLS}")
        return parsed
    raise InvalidInput(f"unsupported store URL {parsed.render_as_string()!r}; accepted: {ACCEPTED_URLS}")


def _now(ts: float) -> float:
    """``ts`` unless it is unset (0) or not finite, then the current time."""
    return ts if ts and math.isfinite(ts) else time.time()


def _json(data: Any, what: str) -> str:
    try:
        return canonical_json(data)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not JSON-serialisable: {exc}") from exc


def _same(a: Any, b: Any) -> bool:
    """Exact equality, with NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _match(table: Table, values: Mapping[str, Any], key: Sequence[str]) -> ColumnElement[bool]:
    return and_(*(table.c[k] == values[k] for k in key))


# --- row -> record ---
def _to_search(r: RowMapping) -> SearchRecord:
    return SearchRecord(
        search_id=r["search_id"],
        name=r["name"],
        config=r["config"],
        status=SearchStatus(r["status"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        error=r["error"],
    )


def _to_arch(r: RowMapping) -> ArchRecord:
    return ArchRecord(archid=r["archid"], document=r["document"], params=r["params"])


def _to_candidate(r: RowMapping) -> Candidate:
    """A candidate row; its document from ``documents`` (the row's ``body``) when it names one, ``""``
    when the query left the bodies out."""
    body = r.get("body")
    inline = "" if r["document_digest"] else r["document"]
    return Candidate(
        search_id=r["search_id"],
        archid=r["archid"],
        iteration=r["iteration"],
        parents=tuple(_loads(r["parents"])),
        proposed_at=r["proposed_at"],
        document=_inflate(body) if body is not None else inline,
        params=r["params"],
        model=r["model"],
    )


def _candidate_rows() -> Select[Any]:
    """Candidates with their documents' bodies."""
    joined = candidates.outerjoin(documents, candidates.c.document_digest == documents.c.digest)
    return select(candidates, documents.c.body).select_from(joined)


def _digest(document: str) -> str:
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def _deflate(document: str) -> bytes:
    return zlib.compress(document.encode("utf-8"), 6)


def _inflate(body: bytes) -> str:
    return zlib.decompress(body).decode("utf-8")


def _to_evaluation(r: RowMapping) -> Evaluation:
    return Evaluation(
        key=EvalKey(r["archid"], r["objective"], r["budget"], r["target"], r["model"]),
        value=r["value"],
        unit=r["unit"],
        details=_loads(r["details"]),
        worker=r["worker"],
        seconds=r["seconds"],
        created_at=r["created_at"],
    )


def _to_iteration(r: RowMapping) -> IterationRecord:
    return IterationRecord(
        search_id=r["search_id"],
        iteration=r["iteration"],
        pareto=tuple(_loads(r["pareto"])),
        hypervolume=r["hypervolume"],
        state=_loads(r["state"]),
        walltime_s=r["walltime_s"],
        created_at=r["created_at"],
    )


def _to_event(r: RowMapping) -> Event:
    return Event(
        search_id=r["search_id"],
        seq=r["seq"],
        kind=r["kind"],
        payload=_loads(r["payload"]),
        created_at=r["created_at"],
    )


def _to_failure(r: RowMapping) -> Failure:
    return Failure(
        search_id=r["search_id"],
        archid=r["archid"],
        objective=r["objective"],
        reason=r["reason"],
        kind=r["kind"],
        created_at=r["created_at"],
    )


def _loads(textual: str) -> Any:
    return json.loads(textual)


def _page(
    conn: Connection, stmt: Select[Any], size: int, token: str, to: Callable[[RowMapping], T]
) -> Page[T]:
    """One page of ``stmt`` (ordered) from the position ``token`` names; a next token when rows remain."""
    size, offset = limits.page_size(size), limits.page_offset(token)
    rows = list(conn.execute(stmt.offset(offset).limit(size + 1)).mappings())
    more = len(rows) > size
    return Page([to(r) for r in rows[:size]], limits.page_token(offset + size) if more else "")


# --- engines ---
def _sqlite_engine(url: URL) -> Engine:
    assert url.database is not None
    Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _postgres_engine(url: URL) -> Engine:
    connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": 10}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _migrate(conn: Connection, version: int) -> None:
    """Bring a store of schema ``version`` to :data:`SCHEMA_VERSION`, one step at a time."""
    if version < 2:
        _migrate_to_2(conn)
    if version < 3:
        _migrate_to_3(conn)
    if version < 4:
        _migrate_to_4(conn)


def _migrate_to_4(conn: Connection) -> None:
    """Schema 3 -> 4: candidates' documents move to ``documents`` (once each, deflated) and candidates name
    them by digest. Outcomes are not backfilled: the searcher records a search's when it first reads or
    resumes it (see ``SearchManager``)."""
    if "document_digest" not in {c["name"] for c in inspect(conn).get_columns("candidates")}:
        conn.exec_driver_sql("ALTER TABLE candidates ADD COLUMN document_digest TEXT NOT NULL DEFAULT ''")
    moved = 0
    while True:
        rows = conn.execute(
            select(candidates.c.id, candidates.c.document).where(candidates.c.document != "").limit(_CHUNK)
        ).all()
        if not rows:
            break
        for row_id, document in rows:
            digest = _digest(document)
            conn.execute(_insert_ignore(conn, documents), {"digest": digest, "body": _deflate(document)})
            conn.execute(
                update(candidates)
                .where(candidates.c.id == row_id)
                .values(document="", document_digest=digest)
            )
        moved += len(rows)
    log.info("store schema migrated to v4: documents stored once", extra={"candidates": moved})


def _insert_ignore(
    conn: Connection, table: Table, key: Sequence[str] | None = None, returning: bool = False
) -> Executable:
    """INSERT ... ON CONFLICT DO NOTHING on ``key`` (default: the primary key), in ``conn``'s dialect,
    ``RETURNING`` the inserted row if asked (none when the key was there). The values come with the
    execution: the statement is built and compiled once per table and key, not per row."""
    key = tuple(key) if key is not None else tuple(c.name for c in table.primary_key.columns)
    return _insertion(conn.dialect.name, table, key, returning)


@functools.cache
def _insertion(dialect: str, table: Table, key: tuple[str, ...], returning: bool) -> Executable:
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(table).on_conflict_do_nothing(index_elements=list(key))
    return cast("Executable", stmt.returning(*table.columns) if returning else stmt)


def _migrate_to_3(conn: Connection) -> None:
    """Schema 2 -> 3: evaluation keys gain ``model`` (the built model's fingerprint). Stored evaluations
    named no model: they keep ``""``, which no key made now has, so they stay readable (their searches'
    candidates keep ``model = ""`` too) but never count for a new search. Candidates gain the document and
    params of their archid's ArchRecord. Columns already there are left as they are."""
    inspector = inspect(conn)
    if "model" not in {c["name"] for c in inspector.get_columns("evaluations")}:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE evaluations ADD COLUMN model TEXT NOT NULL DEFAULT ''")
            conn.exec_driver_sql("ALTER TABLE evaluations DROP CONSTRAINT uq_evaluations_key")
            conn.exec_driver_sql(
                "ALTER TABLE evaluations ADD CONSTRAINT uq_evaluations_key "
                "UNIQUE (archid, model, objective, budget, target)"
            )
        else:  # SQLite cannot change a table's constraints: rebuild it
            columns = ", ".join(c.name for c in evaluations.columns if c.name != "model")
            conn.exec_driver_sql("ALTER TABLE evaluations RENAME TO evaluations_v2")
            evaluations.create(conn)
            conn.exec_driver_sql(f"INSERT INTO evaluations ({columns}) SELECT {columns} FROM evaluations_v2")
            conn.exec_driver_sql("DROP TABLE evaluations_v2")
    present = {c["name"] for c in inspector.get_columns("candidates")}
    for column, kind, default in (
        ("document", "TEXT", "''"),
        ("params", "BIGINT", "0"),
        ("model", "TEXT", "''"),
    ):
        if column not in present:
            conn.exec_driver_sql(
                f"ALTER TABLE candidates ADD COLUMN {column} {kind} NOT NULL DEFAULT {default}"
            )
    for column in ("document", "params"):
        if column not in present:
            conn.exec_driver_sql(
                f"UPDATE candidates SET {column} = "
                f"(SELECT archs.{column} FROM archs WHERE archs.archid = candidates.archid) "
                "WHERE EXISTS (SELECT 1 FROM archs WHERE archs.archid = candidates.archid)"
            )
    log.info("store schema migrated to v3: evaluation keys name the model")


def _migrate_to_2(conn: Connection) -> None:
    """Schema 1 -> 2: a search's targets and failures were kept only in its event log; copy them into
    their tables (the last ``targets`` event of a search, every ``evaluation_failed`` event)."""
    rows = conn.execute(
        select(events.c.search_id, events.c.kind, events.c.payload, events.c.created_at)
        .where(events.c.kind.in_(["targets", "evaluation_failed"]))
        .order_by(events.c.search_id, events.c.seq)
    ).mappings()
    last_targets: dict[str, dict[str, str]] = {}
    for row in rows:
        payload = _loads(row["payload"])
        if not isinstance(payload, dict):
            continue
        if row["kind"] == "targets" and isinstance(payload.get("targets"), dict):
            last_targets[row["search_id"]] = {str(k): str(v) for k, v in payload["targets"].items()}
        elif row["kind"] == "evaluation_failed" and payload.get("archid"):
            values = {
                "search_id": row["search_id"],
                "archid": str(payload["archid"]),
                "objective": str(payload.get("objective", "")),
                "reason": str(payload.get("error", "")),
                "kind": "",
                "created_at": row["created_at"],
            }
            exists = select(failures.c.id).where(
                failures.c.search_id == values["search_id"], failures.c.archid == values["archid"]
            )
            if conn.execute(exists).first() is None:
                conn.execute(insert(failures).values(values))
    for search_id, found in last_targets.items():
        for objective, target in found.items():
            conn.execute(insert(targets).values(search_id=search_id, objective=objective, target=target))
    log.info("store schema migrated to v2", extra={"searches": len(last_targets)})


class SqlStore(Store):
    """:class:`Store` on a SQLAlchemy engine (SQLite file or PostgreSQL via psycopg 3)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._url = engine.url.render_as_string(hide_password=True)
        self._write_turn = threading.Lock()
        self._init_schema()
        log.info("opened store %s (schema v%d)", self._url, SCHEMA_VERSION)

    @classmethod
    def from_url(cls, url: str | URL) -> SqlStore:
        """Open ``sqlite:///path/file.db`` or ``postgresql+psycopg://user@host:port/db``."""
        parsed = normalise_url(url)
        engine = (
            _postgres_engine(parsed) if parsed.drivername.startswith("postgresql") else _sqlite_engine(parsed)
        )
        try:
            return cls(engine)
        except BaseException:
            engine.dispose()
            raise

    @property
    def url(self) -> str:
        """The database URL, password masked."""
        return self._url

    def close(self) -> None:
        self._engine.dispose()

    # --- plumbing ---
    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[Connection]:
        """One transaction; database errors become StoreUnavailable / InvalidInput. SQLite write
        transactions of this process take turns on a lock first: SQLite lets one writer in at a time, and
        a connection that finds the file locked sleeps in growing steps (up to 100 ms each) before it
        tries again, so threads racing for it would queue on sleeps rather than on each other."""
        turn = self._write_turn if write and not self._postgres else contextlib.nullcontext()
        with turn, self._transaction(write) as conn:
            yield conn

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                if write:
                    conn.execution_options(**{_WRITE: True})
                with conn.begin():
                    yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
            log.warning("store %s unavailable: %s", self._url, exc)
            raise StoreUnavailable(f"store {self._url} unavailable: {getattr(exc, 'orig', exc)}") from exc
        except sa_exc.DataError as exc:
            raise InvalidInput(f"value rejected by store {self._url}: {exc.orig}") from exc

    def _init_schema(self) -> None:
        with self._tx() as conn:  # an up-to-date store opens without the write lock (a busy SQLite file)
            if inspect(conn).has_table(schema_version.name):
                current = conn.execute(select(schema_version.c.version)).scalar_one_or_none()
                if current == SCHEMA_VERSION:
                    return
        with self._tx(write=True) as conn:
            if self._postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCHEMA_LOCK})
            metadata.create_all(conn)
            conn.execute(_insert_ignore(conn, schema_version), {"id": 1, "version": SCHEMA_VERSION})
            version = conn.execute(select(schema_version.c.version)).scalar_one()
            if version < SCHEMA_VERSION:
                _migrate(conn, version)
                conn.execute(update(schema_version).values(version=SCHEMA_VERSION))
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"store {self._url} has schema version {version}, newer than the {SCHEMA_VERSION} this "
                "facenas supports; upgrade facenas"
            )

    def _insert_or_compare(
        self,
        conn: Connection,
        table: Table,
        values: Mapping[str, Any],
        key: Sequence[str],
        compared: Iterable[str],
    ) -> RowMapping:
        """Insert unless the key exists; return the stored row, StoreConflict if it differs."""
        inserted = conn.execute(_insert_ignore(conn, table, key, returning=True), dict(values))
        row = inserted.mappings().first()
        if row is not None:
            return row
        row = conn.execute(select(table).where(_match(table, values, key))).mappings().one()
        differs = [c for c in compared if not _same(row[c], values[c])]
        if differs:
            what = ", ".join(f"{k}={values[k]!r}" for k in key)
            raise StoreConflict(
                f"{table.name} ({what}) is already stored with different {', '.join(differs)}"
            )
        return row

    def _require_search(self, conn: Connection, search_id: str) -> None:
        found = conn.execute(select(searches.c.id).where(searches.c.search_id == search_id)).first()
        if found is None:
            raise NotFound(f"search {search_id!r} not found")

    # --- searches ---
    def create_search(self, search_id: str, name: str, config: str) -> SearchRecord:
        limits.check_search(search_id, name, config)
        now = time.time()
        values = {
            "search_id": search_id,
            "name": name,
            "config": config,
            "status": SearchStatus.PENDING.value,
            "error": "",
            "created_at": now,
            "updated_at": now,
            "last_seq": 0,
        }
        with self._tx(write=True) as conn:
            row = self._insert_or_compare(conn, searches, values, ["search_id"], ["name", "config"])
        return _to_search(row)

    def get_search(self, search_id: str) -> SearchRecord:
        with self._tx() as conn:
            row = conn.execute(select(searches).where(searches.c.search_id == search_id)).mappings().first()
        if row is None:
            raise NotFound(f"search {search_id!r} not found")
        return _to_search(row)

    def list_searches_page(self, page_size: int = 0, page_token: str = "") -> Page[SearchRecord]:
        stmt = select(searches).order_by(searches.c.created_at, searches.c.id)
        with self._tx() as conn:
            return _page(conn, stmt, page_size, page_token, _to_search)

    def set_search_status(self, search_id: str, status: SearchStatus, error: str = "") -> SearchRecord:
        try:
            status = SearchStatus(status)
        except ValueError as exc:
            raise InvalidInput(f"unknown search status {limits.brief(status)}") from exc
        error = limits.clip_error(error)
        stmt = (
            update(searches)
            .where(searches.c.search_id == search_id)
            .values(status=status.value, error=error, updated_at=time.time())
            .returning(*searches.c)
        )
        with self._tx(write=True) as conn:
            row = conn.execute(stmt).mappings().first()
        if row is None:
            raise NotFound(f"search {search_id!r} not found")
        return _to_search(row)

    # --- architectures and candidates ---
    def put_arch(self, arch: ArchRecord) -> ArchRecord:
        limits.check_arch(arch)
        values = {"archid": arch.archid, "document": arch.document, "params": arch.params}
        with self._tx(write=True) as conn:
            row = self._insert_or_compare(conn, archs, values, ["archid"], ["document", "params"])
        return _to_arch(row)

    def get_arch(self, archid: str) -> ArchRecord:
        with self._tx() as conn:
            row = conn.execute(select(archs).where(archs.c.archid == archid)).mappings().first()
        if row is None:
            raise NotFound(f"architecture {archid!r} not found")
        return _to_arch(row)

    def add_candidate(self, candidate: Candidate) -> Candidate:
        limits.check_candidate(candidate)
        digest = _digest(candidate.document) if candidate.document else ""
        values = {
            "search_id": candidate.search_id,
            "archid": candidate.archid,
            "iteration": candidate.iteration,
            "parents": _json(list(candidate.parents), "candidate parents"),
            "proposed_at": _now(candidate.proposed_at),
            "document": "",
            "document_digest": digest,
            "params": candidate.params,
            "model": candidate.model,
        }
        compared = ["iteration", "parents", "document_digest", "params", "model"]
        with self._tx(write=True) as conn:
            self._require_search(conn, candidate.search_id)
            if digest:
                conn.execute(
                    _insert_ignore(conn, documents), {"digest": digest, "body": _deflate(candidate.document)}
                )
            row = self._insert_or_compare(conn, candidates, values, ["search_id", "archid"], compared)
        return dataclasses.replace(_to_candidate(row), document=candidate.document)

    def list_candidates_page(
        self,
        search_id: str,
        page_size: int = 0,
        page_token: str = "",
        archid_prefix: str = "",
        documents: bool = True,
    ) -> Page[Candidate]:
        limits.check_text(archid_prefix, "archid_prefix", limits.MAX_ID_BYTES)
        rows = _candidate_rows() if documents else select(candidates)
        stmt = rows.where(candidates.c.search_id == search_id).order_by(candidates.c.id)
        if archid_prefix:  # substr, not LIKE: SQLite's LIKE ignores case, PostgreSQL's does not
            prefix = func.substr(candidates.c.archid, 1, len(archid_prefix)) == archid_prefix
            stmt = stmt.where(prefix)
        with self._tx() as conn:
            self._require_search(conn, search_id)
            return _page(conn, stmt, page_size, page_token, _to_candidate)

    def get_candidates(self, search_id: str, archids: Sequence[str]) -> dict[str, Candidate]:
        wanted = limits.check_ids(archids, "archids")
        stmt = _candidate_rows().where(candidates.c.search_id == search_id, candidates.c.archid.in_(wanted))
        with self._tx() as conn:
            self._require_search(conn, search_id)
            found = {r["archid"]: _to_candidate(r) for r in conn.execute(stmt).mappings()}
        return {a: found[a] for a in wanted if a in found}

    def put_outcomes(self, search_id: str, outcomes_: Mapping[str, Outcome]) -> dict[str, Outcome]:
        checked = limits.check_outcomes(search_id, outcomes_)
        now = time.time()
        with self._tx(write=True) as conn:
            self._require_search(conn, search_id)
            known = set(
                conn.execute(
                    select(candidates.c.archid).where(
                        candidates.c.search_id == search_id, candidates.c.archid.in_(list(checked))
                    )
                ).scalars()
            )
            unknown = sorted(set(checked) - known)
            if unknown:
                raise NotFound(f"search {search_id!r} has no candidate {', '.join(map(repr, unknown[:5]))}")
            rows = [
                {"search_id": search_id, "archid": archid, "outcome": outcome, "created_at": now}
                for archid, outcome in checked.items()
            ]
            if rows:
                conn.execute(_insert_ignore(conn, outcomes), rows)
            stmt = select(outcomes.c.archid, outcomes.c.outcome).where(
                outcomes.c.search_id == search_id, outcomes.c.archid.in_(list(checked))
            )
            return {a: Outcome(o) for a, o in conn.execute(stmt).all()}

    def search_progress(self, search_ids: Sequence[str]) -> dict[str, SearchProgress]:
        wanted = limits.check_ids(search_ids, "search_ids")
        if not wanted:
            return {}
        counts: dict[str, dict[str, int]] = {}
        with self._tx() as conn:
            known = set(
                conn.execute(select(searches.c.search_id).where(searches.c.search_id.in_(wanted))).scalars()
            )
            for search_id, count in conn.execute(
                select(candidates.c.search_id, func.count())
                .where(candidates.c.search_id.in_(wanted))
                .group_by(candidates.c.search_id)
            ).all():
                counts.setdefault(search_id, {})["candidates"] = count
            for search_id, outcome, count in conn.execute(
                select(outcomes.c.search_id, outcomes.c.outcome, func.count())
                .where(outcomes.c.search_id.in_(wanted))
                .group_by(outcomes.c.search_id, outcomes.c.outcome)
            ).all():
                counts.setdefault(search_id, {})[outcome] = count
            newest = (
                select(iterations.c.search_id, func.max(iterations.c.iteration).label("last"))
                .where(iterations.c.search_id.in_(wanted))
                .group_by(iterations.c.search_id)
                .subquery()
            )
            last = {
                r["search_id"]: _to_iteration(r)
                for r in conn.execute(
                    select(iterations).join(
                        newest,
                        and_(
                            iterations.c.search_id == newest.c.search_id,
                            iterations.c.iteration == newest.c.last,
                        ),
                    )
                ).mappings()
            }
        return {
            s: SearchProgress(
                s,
                candidates=counts.get(s, {}).get("candidates", 0),
                complete=counts.get(s, {}).get(Outcome.COMPLETE.value, 0),
                infeasible=counts.get(s, {}).get(Outcome.INFEASIBLE.value, 0),
                failed=counts.get(s, {}).get(Outcome.FAILED.value, 0),
                last_iteration=last.get(s),
            )
            for s in wanted
            if s in known
        }

    # --- evaluations ---
    def put_evaluation(self, evaluation: Evaluation) -> Evaluation:
        limits.check_evaluation(evaluation)
        key = evaluation.key
        values = {
            "archid": key.archid,
            "model": key.model,
            "objective": key.objective,
            "budget": key.budget,
            "target": key.target,
            "value": float(evaluation.value),
            "unit": evaluation.unit,
            "details": _json(evaluation.details, "evaluation details"),
            "worker": evaluation.worker,
            "seconds": float(evaluation.seconds),
            "created_at": _now(evaluation.created_at),
        }
        with self._tx(write=True) as conn:
            row = self._insert_or_compare(
                conn,
                evaluations,
                values,
                ["archid", "model", "objective", "budget", "target"],
                ["value", "unit", "details", "worker", "seconds"],
            )
        return _to_evaluation(row)

    def get_evaluations(self, keys: Sequence[EvalKey]) -> dict[EvalKey, Evaluation]:
        wanted = set(keys)
        objectives = sorted({k.objective for k in wanted})
        found: dict[EvalKey, Evaluation] = {}
        with self._tx() as conn:
            for chunk in _chunks(sorted({k.archid for k in wanted})):
                stmt = select(evaluations).where(
                    evaluations.c.archid.in_(chunk), evaluations.c.objective.in_(objectives)
                )
                for row in conn.execute(stmt).mappings():
                    ev = _to_evaluation(row)
                    if ev.key in wanted:
                        found[ev.key] = ev
        return found

    def list_evaluations_page(
        self, archids: Sequence[str], page_size: int = 0, page_token: str = ""
    ) -> Page[Evaluation]:
        wanted = sorted(set(archids))
        if len(wanted) > limits.MAX_REQUEST_KEYS:
            raise InvalidInput(f"archids: {len(wanted)} is more than {limits.MAX_REQUEST_KEYS} per request")
        stmt = select(evaluations).where(evaluations.c.archid.in_(wanted)).order_by(evaluations.c.id)
        with self._tx() as conn:
            return _page(conn, stmt, page_size, page_token, _to_evaluation)

    # --- iterations ---
    def put_iteration(self, record: IterationRecord) -> IterationRecord:
        limits.check_iteration(record)
        values = {
            "search_id": record.search_id,
            "iteration": record.iteration,
            "pareto": _json(list(record.pareto), "iteration pareto"),
            "hypervolume": float(record.hypervolume),
            "state": _json(record.state, "iteration state"),
            "walltime_s": float(record.walltime_s),
            "created_at": _now(record.created_at),
        }
        with self._tx(write=True) as conn:
            self._require_search(conn, record.search_id)
            row = self._insert_or_compare(
                conn,
                iterations,
                values,
                ["search_id", "iteration"],
                ["pareto", "hypervolume", "state", "walltime_s"],
            )
        return _to_iteration(row)

    def list_iterations_page(
        self, search_id: str, page_size: int = 0, page_token: str = ""
    ) -> Page[IterationRecord]:
        stmt = select(iterations).where(iterations.c.search_id == search_id).order_by(iterations.c.iteration)
        with self._tx() as conn:
            self._require_search(conn, search_id)
            return _page(conn, stmt, page_size, page_token, _to_iteration)

    # --- search state ---
    def put_targets(self, search_id: str, targets_: Mapping[str, str]) -> dict[str, str]:
        limits.check_targets(search_id, targets_)
        with self._tx(write=True) as conn:
            self._require_search(conn, search_id)
            for objective, target in sorted(targets_.items()):
                values = {"search_id": search_id, "objective": objective, "target": target}
                self._insert_or_compare(conn, targets, values, ["search_id", "objective"], ["target"])
            return self._targets(conn, search_id)

    def get_targets(self, search_id: str) -> dict[str, str]:
        with self._tx() as conn:
            self._require_search(conn, search_id)
            return self._targets(conn, search_id)

    @staticmethod
    def _targets(conn: Connection, search_id: str) -> dict[str, str]:
        stmt = select(targets).where(targets.c.search_id == search_id).order_by(targets.c.objective)
        return {r["objective"]: r["target"] for r in conn.execute(stmt).mappings()}

    def put_failure(self, failure: Failure) -> Failure:
        failure = limits.check_failure(failure)
        values = {
            "search_id": failure.search_id,
            "archid": failure.archid,
            "objective": failure.objective,
            "reason": failure.reason,
            "kind": failure.kind,
            "created_at": _now(failure.created_at),
        }
        with self._tx(write=True) as conn:
            self._require_search(conn, failure.search_id)
            row = self._insert_or_compare(conn, failures, values, ["search_id", "archid"], [])
        return _to_failure(row)

    def list_failures(self, search_id: str, archids: Sequence[str] | None = None) -> list[Failure]:
        stmt = select(failures).where(failures.c.search_id == search_id).order_by(failures.c.id)
        if archids is not None:
            stmt = stmt.where(failures.c.archid.in_(limits.check_ids(archids, "archids")))
        with self._tx() as conn:
            self._require_search(conn, search_id)
            return [_to_failure(r) for r in conn.execute(stmt).mappings()]

    # --- events ---
    def append_event(self, search_id: str, kind: str, payload: dict[str, object], token: str = "") -> Event:
        return self.append_events(search_id, [NewEvent(kind, payload, token)])[0]

    def append_events(self, search_id: str, events_: Sequence[NewEvent]) -> list[Event]:
        """In one transaction: all or none."""
        if len(events_) > limits.MAX_REQUEST_KEYS:
            raise InvalidInput(f"events: {len(events_)} is more than {limits.MAX_REQUEST_KEYS} per request")
        for e in events_:
            limits.check_event(search_id, e.kind, e.payload)
            limits.check_text(e.token, "token", limits.MAX_ID_BYTES)
        bodies = [_json(dict(e.payload), "event payload") for e in events_]
        if not events_:
            return []
        with self._tx(write=True) as conn:
            if any(e.token for e in events_) and self._postgres:
                # serialise appenders of this search before looking tokens up
                lock = select(searches.c.id).where(searches.c.search_id == search_id).with_for_update()
                conn.execute(lock)
            return self._append(conn, search_id, events_, bodies)

    def _append(
        self, conn: Connection, search_id: str, new: Sequence[NewEvent], bodies: Sequence[str]
    ) -> list[Event]:
        """Log ``new`` in a few statements whatever their number: one look-up of their tokens, one bump of
        the search's sequence, one insert of the events and one of their tokens. An event whose token is
        logged already (here or earlier in ``new``) is not logged again: the logged one stands for it."""
        logged = self._events_by_token(conn, search_id, {e.token for e in new if e.token})
        fresh: list[int] = []  # the events to log now
        claimed = set(logged)
        for index, asked in enumerate(new):
            if asked.token:
                if asked.token in claimed:
                    continue
                claimed.add(asked.token)
            fresh.append(index)
        out: dict[int, Event] = {}
        if fresh:
            bump = (
                update(searches)
                .where(searches.c.search_id == search_id)
                .values(last_seq=searches.c.last_seq + len(fresh))
                .returning(searches.c.last_seq)
            )
            last = conn.execute(bump).scalar_one_or_none()
            if last is None:
                raise NotFound(f"search {search_id!r} not found")
            created = time.time()
            rows = []
            for seq, index in enumerate(fresh, start=last - len(fresh) + 1):
                made = Event(search_id, seq, new[index].kind, _loads(bodies[index]), created)
                out[index] = made
                if new[index].token:
                    logged[new[index].token] = made
                rows.append(
                    {
                        "search_id": search_id,
                        "seq": seq,
                        "kind": made.kind,
                        "payload": bodies[index],
                        "created_at": created,
                    }
                )
            conn.execute(insert(events), rows)
            marks = [
                {"search_id": search_id, "token": new[i].token, "seq": out[i].seq}
                for i in fresh
                if new[i].token
            ]
            if marks:
                conn.execute(insert(event_tokens), marks)
        return [out[i] if i in out else logged[new[i].token] for i in range(len(new))]

    @staticmethod
    def _events_by_token(conn: Connection, search_id: str, tokens: set[str]) -> dict[str, Event]:
        """The events logged under ``tokens`` (the caller's write transaction serialises appenders)."""
        found: dict[str, Event] = {}
        for chunk in _chunks(sorted(tokens)):
            stmt = (
                select(events, event_tokens.c.token)
                .join(
                    event_tokens,
                    and_(event_tokens.c.search_id == events.c.search_id, event_tokens.c.seq == events.c.seq),
                )
                .where(event_tokens.c.search_id == search_id, event_tokens.c.token.in_(chunk))
            )
            for row in conn.execute(stmt).mappings():
                found[row["token"]] = _to_event(row)
        return found

    def list_events(self, search_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        limits.check_int(after_seq, "after_seq", limits.INT64)
        stmt = (
            select(events)
            .where(events.c.search_id == search_id, events.c.seq > after_seq)
            .order_by(events.c.seq)
            .limit(limit)
        )
        with self._tx() as conn:
            self._require_search(conn, search_id)
            return [_to_event(r) for r in conn.execute(stmt).mappings()]
