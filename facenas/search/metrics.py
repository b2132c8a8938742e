"""Prometheus metrics of the searcher (names ``facenas_search_*`` / ``facenas_replica_*``, base units)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUNNING = Gauge("facenas_searches_running", "Searches this searcher is running now.")
ITERATION = Gauge("facenas_search_iteration", "Last finished iteration of a search.", ["search_id"])
HYPERVOLUME = Gauge("facenas_search_hypervolume", "Hypervolume of a search's Pareto front.", ["search_id"])
PARETO_SIZE = Gauge("facenas_search_pareto_size", "Architectures on a search's Pareto front.", ["search_id"])
CANDIDATES = Counter("facenas_search_candidates", "Architectures proposed by a search.", ["search_id"])
EVALUATIONS = Counter(
    "facenas_search_evaluations",
    "Evaluations a search finished, by objective and outcome (ok, cached, failed).",
    ["search_id", "objective", "outcome"],
)
RETRIES = Counter("facenas_search_retries", "Evaluations retried on another replica.", ["service"])
LAST_PROGRESS = Gauge(
    "facenas_search_last_progress_timestamp_seconds",
    "Unix time of a running search's last finished evaluation or iteration.",
    ["search_id"],
)
EVALUATION_SECONDS = Histogram(
    "facenas_search_evaluation_seconds",
    "Wall time of one evaluation as the searcher sees it (queueing, retries and worker time included).",
    ["objective"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
REPLICA_UP = Gauge(
    "facenas_replica_up", "1 when a replica is healthy, 0 while benched.", ["service", "replica"]
)
REPLICA_IN_FLIGHT = Gauge(
    "facenas_replica_in_flight", "Evaluations running on a replica.", ["service", "replica"]
)
REPLICA_CAPACITY = Gauge("facenas_replica_capacity", "Evaluation slots of a replica.", ["service", "replica"])
PENDING = Gauge(
    "facenas_search_pending_evaluations", "Evaluations waiting for a free replica slot.", ["service"]
)
REATTACHES = Counter(
    "facenas_search_job_reattaches",
    "Job streams re-opened after they broke or went silent (the job kept running on its worker).",
    ["service"],
)
WAITING = Gauge(
    "facenas_search_waiting",
    "1 while the searcher waits for a dependency that does not answer (the store, or every replica of a "
    "service); searches pause meanwhile.",
    ["dependency"],
)
