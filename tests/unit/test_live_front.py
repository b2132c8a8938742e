"""A search's live front (what proposals are drawn from) is kept one completed candidate at a time: it
must always be the front of every complete, feasible candidate, as computing it afresh gives it."""

from __future__ import annotations

import random
from typing import cast

from facenas.domain import Direction
from facenas.search.history import SearchHistory
from facenas.search.pareto import hypervolume, pareto_front, reference_point
from facenas.search.recorder import EventLog, IterationRecorder
from facenas.search.snapshot import ObjectiveInfo
from facenas.space import HgnetSearchSpace, SearchSpaceParams
from facenas.store.base import Store

OBJECTIVES = (
    ObjectiveInfo("latency", Direction.MINIMIZE, "s", (0.0, 0.8)),
    ObjectiveInfo("iou", Direction.MAXIMIZE, ""),
)


def test_the_live_front_is_the_front_of_the_complete_feasible_candidates() -> None:
    """Candidates measured one objective at a time in a random order; some break the latency
    constraint, some fail. After every step, front() is pareto_front over history.complete()."""
    rng = random.Random(3)
    space = HgnetSearchSpace(SearchSpaceParams(img_size=(64, 64)), seed=3)
    history = SearchHistory(OBJECTIVES)
    recorder = IterationRecorder("s", cast(Store, None), history, OBJECTIVES, cast(EventLog, None))
    directions = [o.direction for o in OBJECTIVES]
    pending: list[tuple[str, str]] = []
    first_reference: list[float] | None = None
    for _ in range(80):
        arch = space.random_sample()
        if history.add(arch, 0, ""):
            pending += [(arch.archid, o.name) for o in OBJECTIVES]
    rng.shuffle(pending)
    for archid, objective in pending:
        if archid in history.failed or archid in history.infeasible:
            continue
        if rng.random() < 0.05:
            history.fail(archid, f"{objective}: broken")
            continue
        history.set_value(archid, objective, rng.randint(0, 10) / 10)  # ties on a coarse grid
        history.check_constraints(archid)
        front, hv = recorder.front()
        points = history.complete()
        assert front == pareto_front(points, directions)
        if front:
            if first_reference is None:  # fixed at the first front, from every point then
                first_reference = reference_point(OBJECTIVES, list(points.values()))
            assert recorder.reference == first_reference
            assert hv == hypervolume([points[a] for a in front], directions, recorder.reference)
    assert history.infeasible and history.failed and len(front) > 1  # the cases above all occurred
    # a candidate on the front failing after all (a failure recorded by another run): it leaves the front
    history.fail(front[0], "iou: failed on resume")
    again, _ = recorder.front()
    assert front[0] not in again and again == pareto_front(history.complete(), directions)


def test_a_candidate_counts_on_the_live_front_when_its_last_value_is_set() -> None:
    """Without a constraint check in between (as a run loading its stored values does)."""
    space = HgnetSearchSpace(SearchSpaceParams(img_size=(64, 64)), seed=4)
    history = SearchHistory(OBJECTIVES)
    recorder = IterationRecorder("s", cast(Store, None), history, OBJECTIVES, cast(EventLog, None))
    fast, slow, too_slow = space.random_sample(), space.random_sample(), space.random_sample()
    for arch, latency, iou in ((fast, 0.1, 0.5), (slow, 0.5, 0.7), (too_slow, 0.9, 0.9)):
        history.add(arch, 0, "")
        history.set_value(arch.archid, "latency", latency)
        history.set_value(arch.archid, "iou", iou)
    assert recorder.front()[0] == [fast.archid, slow.archid]  # too_slow breaks the latency constraint
