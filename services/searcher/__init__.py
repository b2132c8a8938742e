"""The searcher service: runs multi-objective searches (proposals, evaluations dispatched to the
replicas of the objective services, every record in the store) and serves ``facenas.v1.Searcher``;
``python -m services.searcher``, wiring in ``server.py``, the API in ``servicer.py``, the logic in
``facenas.search``."""
