"""The store service: every durable record of facenas (searches, architectures, candidates,
evaluations, iterations, events) over ``facenas.v1.Store``, on SQLite or PostgreSQL;
``python -m services.store``, wiring in ``server.py``, the logic in ``facenas.store``."""
