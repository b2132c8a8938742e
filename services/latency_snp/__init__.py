"""The latency_snp service: int8 Snapdragon latency and the quantized IOU (SNPE on boards, Qualcomm AI Hub,
or the labelled emulation) as jobs of the ``facenas.v1.Evaluator`` contract; ``python -m
services.latency_snp``, wiring in ``server.py`` and ``backends.py``, the logic in ``facenas.snp``."""
