"""The latency_snp service: int8 Snapdragon latency (SNPE / emulation).

Not implemented yet; the domain code it will serve lives in the ``facenas`` package.
"""
