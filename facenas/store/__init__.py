"""Durable state of facenas: the :class:`Store` contract and its SQL implementation.

``open_store(url)`` accepts ``sqlite:///path/to/file.db``, ``postgresql://...`` /
``postgresql+psycopg://...`` or a bare filesystem path (an SQLite file).
"""

from __future__ import annotations

from pathlib import Path

from facenas.errors import InvalidInput
from facenas.store.base import NotFound, Store, StoreConflict, StoreUnavailable
from facenas.store.sql import ACCEPTED_URLS, SchemaVersionError, SqlStore

__all__ = [
    "NotFound",
    "SchemaVersionError",
    "SqlStore",
    "Store",
    "StoreConflict",
    "StoreUnavailable",
    "open_store",
]


def open_store(url: str) -> Store:
    """Open the store at ``url``; a string without ``://`` is a path to an SQLite file."""
    url = url.strip()
    if not url:
        raise InvalidInput(f"empty store URL; accepted: {ACCEPTED_URLS}")
    if "://" not in url:
        path = Path(url).expanduser().resolve()
        return SqlStore.from_url(f"sqlite:///{path}")
    scheme = url.split("://", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgresql+psycopg"):
        raise InvalidInput(f"unsupported store URL scheme {scheme!r}; accepted: {ACCEPTED_URLS}")
    return SqlStore.from_url(url)
