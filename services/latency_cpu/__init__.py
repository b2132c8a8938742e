"""The latency_cpu service: ONNX Runtime latency on x86 hosts.

Not implemented yet; the domain code it will serve lives in the ``facenas`` package.
"""
