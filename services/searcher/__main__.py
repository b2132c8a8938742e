"""``python -m services.searcher``: runs multi-objective searches through the objective services."""

from __future__ import annotations

import sys

from services.searcher.server import main

sys.exit(main())
