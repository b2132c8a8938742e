"""``python -m services.latency_snp``: int8 latency for Snapdragon targets."""

from __future__ import annotations

import sys

from services.latency_snp.server import main

sys.exit(main())
