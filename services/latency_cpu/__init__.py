"""The latency_cpu service: ONNX Runtime latency of architectures on this host (the CPU ONNX Latency
objective), served as jobs of the ``facenas.v1.Evaluator`` contract; ``python -m services.latency_cpu``,
wiring in ``server.py``, the measurement in ``facenas.latency``."""
