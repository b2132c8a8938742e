"""The ``facenas`` command-line interface."""
