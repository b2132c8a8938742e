"""The store service: durable searches, architectures and results.

Not implemented yet; the domain code it will serve lives in the ``facenas`` package.
"""
