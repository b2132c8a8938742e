"""The searcher's one retry policy: what each way an evaluation can fail means, and what comes next.

=================  =====================  ==================================  ==============  =======
cause              whose fault            next                                bounded by      bench
=================  =====================  ==================================  ==============  =======
``unreachable``    the replica/network    wait, then place it again anywhere  outage patience  yes
``lost``           the replica            run it again on another replica     max_attempts    yes
``error``          unknown (it raised)    once more on another replica        2 attempts      no
``timeout``        unknown (too slow)     once more on another replica        2 attempts      no
``unstable``       the host's load        measure again after a delay         max_unstable    no
``invalid``        the request/arch       the candidate fails, with reason    --              no
``not_evaluable``  the architecture       the candidate fails, with reason    --              no
=================  =====================  ==================================  ==============  =======

* ``unreachable``: the job never ran -- the replica refused the connection, timed out or was overloaded
  (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED), said it cannot serve now (FailureKind
  ``unavailable``: shutting down, dataset missing), or no replica is alive. Not an attempt: the search
  waits (``waiting for <service>``) for up to ``evaluation.outage_patience_s``, then fails with the
  reason (resumable); no candidate fails for it.
* ``lost``: the job ran and its replica died, lost it (restarted) or stayed unreachable past
  ``--reattach-s``.
* Only ``invalid`` and ``not_evaluable`` -- the architecture's fault -- fail a candidate at once, and never
  bench a replica (a bad model is not a sick replica).

``ReplicaPool`` benches a replica by :attr:`Rule.bench`; the coordinator acts on :attr:`Rule.action`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from facenas.domain import FailureKind
from facenas.search.evaluator import EvaluationFailed, WorkerLost, WorkerUnreachable

#: attempts for a job that raised or ran past its time (a second replica, in case it was the replica)
ERROR_ATTEMPTS = 2


class Action(enum.StrEnum):
    WAIT = "wait"  # an outage: wait, then place the job again (not an attempt)
    RETRY = "retry"  # another attempt, on another replica when there is one
    REMEASURE = "remeasure"  # measure again after a delay (unstable figure)
    FAIL = "fail"  # the candidate fails for good, with the reason


@dataclass(frozen=True)
class Rule:
    cause: str
    action: Action
    bench: bool  # the replica is benched (with backoff) before it gets another job
    attempts: int | None = None  # attempt limit of RETRY (None: the config's max_attempts)


_BY_KIND: dict[str, Rule] = {
    FailureKind.UNAVAILABLE: Rule("unreachable", Action.WAIT, bench=True),
    FailureKind.ERROR: Rule("error", Action.RETRY, bench=False, attempts=ERROR_ATTEMPTS),
    "timeout": Rule("timeout", Action.RETRY, bench=False, attempts=ERROR_ATTEMPTS),
    FailureKind.UNSTABLE: Rule("unstable", Action.REMEASURE, bench=False),
    FailureKind.INVALID: Rule("invalid", Action.FAIL, bench=False),
    FailureKind.NOT_EVALUABLE: Rule("not_evaluable", Action.FAIL, bench=False),
}
UNREACHABLE = _BY_KIND[FailureKind.UNAVAILABLE]
LOST = Rule("lost", Action.RETRY, bench=True)


def classify(error: BaseException) -> Rule:
    """The rule for an error an :class:`~facenas.search.evaluator.Evaluator` raised."""
    if isinstance(error, WorkerUnreachable):
        return UNREACHABLE
    if isinstance(error, WorkerLost):
        return LOST
    if isinstance(error, EvaluationFailed):
        return _BY_KIND.get(error.kind, _BY_KIND[FailureKind.ERROR])
    raise TypeError(f"not an evaluation failure: {type(error).__name__}")
