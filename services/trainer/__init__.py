"""The trainer service: partial and full training of architectures.

Not implemented yet; the domain code it will serve lives in the ``facenas`` package.
"""
