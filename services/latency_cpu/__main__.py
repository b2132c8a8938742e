"""``python -m services.latency_cpu``: ONNX Runtime CPU latency of architectures on this host."""

from __future__ import annotations

import sys

from services.latency_cpu.server import main

sys.exit(main())
