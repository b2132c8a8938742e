"""The searcher service: proposes architectures and drives multi-objective searches.

Not implemented yet; the domain code it will serve lives in the ``facenas`` package.
"""
