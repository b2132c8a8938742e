"""Evaluation jobs on a worker (see :mod:`facenas.jobs.manager`)."""

from facenas.jobs.manager import JobManager
from facenas.jobs.model import JobResult, JobSpec, JobView

__all__ = ["JobManager", "JobResult", "JobSpec", "JobView"]
