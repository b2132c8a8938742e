"""``python -m services.trainer``: partial-training evaluations over gRPC (GPU when present)."""

from __future__ import annotations

import sys

from services.trainer.server import main

sys.exit(main())
