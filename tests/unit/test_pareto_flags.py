"""Property: in every ``search_state_{k}.csv`` of every algorithm, the rows flagged ``is_pareto`` are
exactly the non-dominated rows among the rows iteration k's front was computed over.

Those rows are the candidates that had finished when iteration k was recorded; the CSV holds exactly them
(the rows with ``iteration_num`` <= k), and the front is computed over the complete ones: feasible, not
failed, every objective measured. Searches run through the real engine with an in-process evaluator that
finishes evaluations in a seeded random order (some models fail, some break the latency constraint), so
the asynchronous algorithm records iterations while other candidates are still in flight.
"""

from __future__ import annotations

import csv
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from facenas.domain import EvalKey, EvalSpace, FailureKind, IterationRecord
from facenas.search.config import ALGORITHMS
from facenas.search.evaluator import EvalResult, EvalTask, EvaluationFailed, Evaluator, ProgressSink
from facenas.search.manager import SearchManager
from facenas.search.outputs import write_outputs
from facenas.search.pareto import dominates
from facenas.search.snapshot import EVALUATED, evaluated_in
from facenas.store import SqlStore
from facenas.workers.base import TargetInfo
from tests.integration.conftest import tiny_search
from tests.unit.eval_fakes import CPU_LATENCY, IOU

SEEDS = range(4)
MAX_LATENCY = 0.03  # the config's cap: some candidates break it


class ShuffledEvaluator(Evaluator):
    """Seeded values per (seed, archid, objective); each evaluation holds for a seeded random moment so
    evaluations finish out of order; about one model in eight fails on this service."""

    def __init__(self, service: str, objective: str, seed: int, capacity: int) -> None:
        self.service = service
        self.objective = objective
        self.seed = seed
        self._capacity = capacity

    @property
    def capacity(self) -> int:
        return self._capacity

    def describe(self, objective: str, space: EvalSpace) -> TargetInfo:
        return TargetInfo(f"{self.service}/shuffled", "seeded values, random order")

    def evaluate(
        self,
        task: EvalTask,
        on_progress: ProgressSink,
        stop: threading.Event,
        avoid: frozenset[str] = frozenset(),
        timeout_s: float = 3600.0,
    ) -> EvalResult:
        rng = random.Random(f"{self.seed}/{task.key.archid}/{task.key.objective}")
        stop.wait(rng.uniform(0.0, 0.03))  # only varies the finishing order; nothing waits on it
        if rng.random() < 0.125:
            raise EvaluationFailed(FailureKind.INVALID, "the model cannot be built here", "r1")
        value = rng.uniform(0.0, 0.04) if task.key.objective == CPU_LATENCY else rng.uniform(0.0, 0.2)
        return EvalResult(value, "s" if task.key.objective == CPU_LATENCY else "miou", replica="r1")

    def cancel(self, owner: str, key: EvalKey | None = None) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = SqlStore.from_url(f"sqlite:///{tmp_path / 'store.db'}")
    yield opened
    opened.close()


def _config(algorithm: str, seed: int) -> str:
    text = tiny_search(algorithm=algorithm, iters=4, seed=seed)  # any size: few draws are refused
    return text.replace("min_parameters: 1.0e5\n  max_parameters: 8.0e5", f"max_latency_s: {MAX_LATENCY}")


def _run(store: SqlStore, algorithm: str, seed: int) -> str:
    evaluators: dict[str, Evaluator] = {
        "trainer": ShuffledEvaluator("trainer", IOU, seed, capacity=3),
        "latency_cpu": ShuffledEvaluator("latency_cpu", CPU_LATENCY, seed, capacity=2),
    }
    manager = SearchManager(store, evaluators, progress_interval_s=0.05, heartbeat_s=0.2)
    search_id = f"{algorithm.replace('_', '-')}-{seed}"
    manager.start(_config(algorithm, seed), search_id=search_id)
    events = list(manager.watch(search_id, 0))
    assert events[-1].kind == "completed", events[-1]
    return search_id


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _point(row: dict[str, str]) -> list[float] | None:
    """The row's objective values (latency minimised, IOU maximised) when the front could use it."""
    if row["failed"] or row["feasible"] != "True" or not row[CPU_LATENCY] or not row[IOU]:
        return None
    return [float(row[CPU_LATENCY]), float(row[IOU])]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_flags_are_the_front_of_the_rows_each_csv_holds(
    store: SqlStore, tmp_path: Path, algorithm: str
) -> None:
    manager = SearchManager(store, {})
    for seed in SEEDS:
        search_id = _run(store, algorithm, seed)
        snapshot = manager.snapshot(search_id)
        directions = [o.direction for o in snapshot.objectives]
        assert [o.name for o in snapshot.objectives] == [CPU_LATENCY, IOU]
        out = tmp_path / search_id
        write_outputs(snapshot, out)
        assert snapshot.iterations
        for it in snapshot.iterations:
            k = it.iteration
            rows = _rows(out / f"search_state_{k}.csv")
            assert rows and all(int(r["iteration_num"]) <= k for r in rows)
            points = {r["archid"]: p for r in rows if (p := _point(r)) is not None}
            front = {
                a for a, p in points.items() if not any(dominates(q, p, directions) for q in points.values())
            }
            flagged = {r["archid"] for r in rows if r["is_pareto"] == "True"}
            assert flagged == front, f"{search_id} iteration {k}"
            models = {p.stem for p in (out / f"pareto_models_iter_{k}").glob("*.json")}
            assert models == flagged, f"{search_id} iteration {k}"


def _record(iteration: int, evaluated: list[str] | None) -> IterationRecord:
    state: dict[str, object] = {"rng": []}
    if evaluated is not None:
        state[EVALUATED] = evaluated
    return IterationRecord("s", iteration, (), 0.0, state)


def test_a_candidate_belongs_to_the_first_record_that_counted_it() -> None:
    proposed = {"a": 0, "b": 0, "late": 0, "c": 1, "running": 1}
    records = [_record(0, ["a", "b"]), _record(1, ["late", "c"])]
    assert evaluated_in(proposed, records) == {"a": 0, "b": 0, "late": 1, "c": 1, "running": 2}
    assert evaluated_in(proposed, []) == proposed


def test_records_without_the_list_count_what_their_iteration_proposed() -> None:
    """Records of searches run before the list existed keep their rows where they were."""
    proposed = {"a": 0, "b": 1, "c": 1, "d": 2}
    assert evaluated_in(proposed, [_record(0, None), _record(1, ["c"])]) == {"a": 0, "b": 2, "c": 1, "d": 2}
    assert evaluated_in(proposed, [_record(0, None), _record(1, None)]) == proposed
