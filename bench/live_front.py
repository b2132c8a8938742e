"""The search's front before each proposal: kept one completed candidate at a time, against computed
afresh over the whole history (what every proposal did before), at several history sizes.

Usage: ``python bench/live_front.py [--sizes 1000,5000,10000] [--proposals 100]``. Prints, per history
size, the milliseconds per proposal of each and their ratio, measured in this run.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import cast

from facenas.domain import Direction
from facenas.search.history import SearchHistory
from facenas.search.recorder import EventLog, IterationRecorder
from facenas.search.snapshot import ObjectiveInfo
from facenas.space.hgnet import Arch
from facenas.store.base import Store

OBJECTIVES = (
    ObjectiveInfo("CPU ONNX Latency (s)", Direction.MINIMIZE, "s"),
    ObjectiveInfo("Partial Training Val. IOU", Direction.MAXIMIZE, ""),
)


class _Candidate:
    """What the history reads of an arch: its id."""

    def __init__(self, archid: str) -> None:
        self.archid = archid


def _complete(history: SearchHistory, index: int, rng: random.Random) -> None:
    archid = f"{index:040x}"
    history.add(cast(Arch, _Candidate(archid)), 0, "")
    for objective in OBJECTIVES:
        history.set_value(archid, objective.name, rng.random())
        history.check_constraints(archid)


def _per_proposal(size: int, proposals: int, afresh: bool) -> float:
    """Seconds per proposal at ``size`` candidates: one more candidate completes, then the front."""
    rng = random.Random(size)
    history = SearchHistory(OBJECTIVES)
    recorder = IterationRecorder("bench", cast(Store, None), history, OBJECTIVES, cast(EventLog, None))
    for i in range(size):
        _complete(history, i, rng)
    recorder.front()
    began = time.perf_counter()
    for i in range(size, size + proposals):
        _complete(history, i, rng)
        if afresh:
            recorder._front(history.complete())  # the former per-proposal computation
        else:
            recorder.front()
    return (time.perf_counter() - began) / proposals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,5000,10000", help="history sizes (candidates)")
    parser.add_argument("--proposals", type=int, default=100, help="proposals timed per size")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        live = _per_proposal(size, args.proposals, afresh=False)
        fresh = _per_proposal(size, args.proposals, afresh=True)
        print(
            f"{size:>6} candidates: live front {live * 1e3:.3f} ms, afresh {fresh * 1e3:.2f} ms "
            f"per proposal ({fresh / live:.0f}x)"
        )


if __name__ == "__main__":
    main()
