"""Prometheus metrics common to every server (names: ``facenas_...``, base units)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "facenas_grpc_server_requests",
    "gRPC requests handled, by service, method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
HANDLING_SECONDS = Histogram(
    "facenas_grpc_server_handling_seconds",
    "Time to handle a gRPC request (for streams: the whole stream).",
    ["grpc_service", "grpc_method"],
    buckets=(
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        60,
        120,
        300,
        900,
    ),
)
IN_FLIGHT = Gauge(
    "facenas_grpc_server_in_flight_requests",
    "gRPC requests being handled now.",
    ["grpc_service", "grpc_method"],
)
WORK_IN_FLIGHT = Gauge(
    "facenas_work_in_flight",
    "Evaluations (training, measurements) running now in this process.",
    ["service"],
)
CAPACITY = Gauge("facenas_worker_capacity", "Evaluations this process runs at once.", ["service"])
QUEUE_DEPTH = Gauge(
    "facenas_queue_depth",
    "Jobs waiting for a free evaluation slot in this process.",
    ["service"],
)
EVALUATIONS = Counter(
    "facenas_evaluations",
    "Evaluations finished by this worker, by objective and outcome "
    "(ok, invalid, not_evaluable, unavailable, unstable, error, cancelled).",
    ["service", "objective", "outcome"],
)
EVALUATION_SECONDS = Histogram(
    "facenas_evaluation_seconds",
    "Wall time of one evaluation on this worker.",
    ["service", "objective"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
JOBS_ATTACHED = Counter(
    "facenas_jobs_attached",
    "Submissions that joined a job already queued, running or finished here (no work started).",
    ["service"],
)
JOB_STEPS = Counter(
    "facenas_job_steps",
    "Progress steps jobs made on this worker, by phase (e.g. training steps).",
    ["service", "phase"],
)
