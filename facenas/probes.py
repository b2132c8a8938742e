"""The dependency probes the services wire into their health (see :mod:`facenas.rpc.health`).

Each check returns None while its dependency is usable, else a one-line reason, and is cheap enough to
run every few seconds: a directory listing, a tiny onnxruntime session, ``adb devices``, a database
round trip, a health call with a deadline.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import grpc

from facenas.errors import Unavailable
from facenas.rpc.health import Probe, check_health

if TYPE_CHECKING:
    from facenas.snp.boards import BoardPool

Guards = Sequence[str]


def directory_problem(path: Path, what: str) -> str | None:
    """Why ``path`` is not a readable, non-empty directory (None when it is)."""
    try:
        if not path.exists():
            return f"{what} {path} is missing"
        if not path.is_dir():
            return f"{what} {path} is not a directory"
        if not os.access(path, os.R_OK | os.X_OK):
            return f"{what} {path} is not readable"
        with os.scandir(path) as entries:
            if next(entries, None) is None:
                return f"{what} {path} is empty"
    except OSError as err:
        return f"{what} {path} is unreadable: {err.strerror or err}"
    return None


def dataset_probe(dataset_dir: Path, guards: Guards) -> Probe:
    """The dataset directory is there and readable."""
    path = Path(dataset_dir)
    return Probe("dataset", lambda: directory_problem(path, "dataset dir"), tuple(guards))


def data_cache_probe(setting: str, guards: Guards) -> Probe | None:
    """``--data-cache DIR`` is there and readable (None for ``auto`` and ``none``: the PNGs serve then)."""
    if setting in ("auto", "none"):
        return None
    path = Path(setting)
    return Probe("data-cache", lambda: directory_problem(path, "data cache"), tuple(guards))


def onnxruntime_probe(guards: Guards) -> Probe:
    """onnxruntime can create a CPU session and run it (a one-node model)."""
    model = _identity_model()

    def check() -> str | None:
        try:
            import numpy as np
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            session.run(None, {"x": np.zeros((1,), dtype=np.float32)})
        except Exception as err:
            return f"onnxruntime cannot run a session: {type(err).__name__}: {err}"
        return None

    return Probe("onnxruntime", check, tuple(guards))


def _identity_model() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "facenas-probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def boards_probe(pool: BoardPool, guards: Guards, timeout_s: float = 10.0) -> Probe:
    """At least one healthy Snapdragon board: ``adb devices`` again (which also brings back a board that
    was lost and answers again)."""

    def check() -> str | None:
        try:
            boards = pool.discover()
        except Unavailable as err:
            return f"cannot list boards: {err}"
        return None if boards else pool.no_board_message()

    return Probe("boards", check, tuple(guards), timeout_s)


def remote_health_probe(name: str, target: str, channel: grpc.Channel, timeout_s: float = 2.0) -> Probe:
    """The service at ``target`` answers its gRPC health SERVING within ``timeout_s``."""

    def check() -> str | None:
        answer = check_health(channel, "", timeout_s)
        if answer.serving:
            return None
        if answer.answered:
            return f"{name} at {target} is {answer.describe()}"
        return f"{name} at {target} is unreachable ({answer.describe()})"

    return Probe(name, check, (), timeout_s + 1.0)


def database_probe(url: str, guards: Guards, timeout_s: float = 3.0) -> Probe:
    """The store's database answers a query: for SQLite, the file (the one opened at start-up) and its
    directory are still there and writable; for PostgreSQL, ``SELECT 1`` on a fresh connection."""
    from sqlalchemy import create_engine, text
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.pool import NullPool

    from facenas.store.sql import normalise_url

    parsed = normalise_url(url.strip() if "://" in url else f"sqlite:///{Path(url).expanduser().resolve()}")
    shown = parsed.render_as_string(hide_password=True)
    if parsed.drivername.startswith("postgresql"):
        connect_args = (
            {} if "connect_timeout" in parsed.query else {"connect_timeout": max(1, round(timeout_s))}
        )
        engine = create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
        query = "SELECT 1"
        files: _SqliteFiles | None = None
    else:
        assert parsed.database is not None
        files = _SqliteFiles(Path(parsed.database).expanduser().resolve())
        uri = f"file:{quote(str(files.path))}?mode=rw"  # never creates a file that is gone
        engine = create_engine(
            "sqlite://",
            poolclass=NullPool,
            creator=lambda: sqlite3.connect(uri, uri=True, timeout=timeout_s, check_same_thread=False),
        )
        query = "PRAGMA schema_version"  # reads the file's header

    def check() -> str | None:
        if files is not None and (problem := files.problem()):
            return problem
        try:
            with engine.connect() as conn:
                conn.execute(text(query))
        except sa_exc.SQLAlchemyError as err:
            return f"database {shown} does not answer: {getattr(err, 'orig', None) or err}"
        return None

    return Probe("database", check, tuple(guards), timeout_s + 2.0)


class _SqliteFiles:
    """An SQLite database file and what it was when the store opened it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity = _identity(path)

    def problem(self) -> str | None:
        directory = self.path.parent
        if not directory.is_dir():
            return f"the database directory {directory} is gone"
        if not self.path.exists():
            return f"the database file {self.path} is gone"
        if self.identity is not None and _identity(self.path) != self.identity:
            return f"the database file {self.path} was replaced after the store opened it; restart the store"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"the database directory {directory} is not writable"
        if not os.access(self.path, os.R_OK | os.W_OK):
            return f"the database file {self.path} is not writable"
        return None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino
