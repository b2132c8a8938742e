"""The trainer service: partial training of architectures (the Partial Training Val. IOU objective) as
jobs of the ``facenas.v1.Evaluator`` contract, and final training (``facenas.v1.Trainer``);
``python -m services.trainer``, wiring in ``server.py``, the training in ``facenas.train``."""
