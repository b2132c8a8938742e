"""``python -m services.store``: the durable store (SQLite file by default, PostgreSQL at scale)."""

from __future__ import annotations

import sys

from services.store.server import main

sys.exit(main())
