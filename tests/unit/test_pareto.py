"""Pareto dominance, fronts, exact hypervolume and the reference point."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from facenas.domain import Direction
from facenas.search.pareto import (
    IncrementalFront,
    dominates,
    hypervolume,
    pareto_front,
    reference_point,
    snapshot_fronts,
)
from facenas.search.snapshot import CandidateState, IterationState, ObjectiveInfo, SearchSnapshot

MIN, MAX = Direction.MINIMIZE, Direction.MAXIMIZE


def test_dominates_min_and_mixed() -> None:
    assert dominates([1, 1], [2, 2], [MIN, MIN])
    assert dominates([1, 2], [1, 3], [MIN, MIN])
    assert not dominates([1, 2], [1, 2], [MIN, MIN])  # equal points do not dominate
    assert not dominates([1, 3], [2, 2], [MIN, MIN])
    assert dominates([0.1, 0.9], [0.2, 0.8], [MIN, MAX])
    assert not dominates([0.1, 0.7], [0.2, 0.8], [MIN, MAX])


def test_pareto_front_min_min_keeps_order() -> None:
    pts = {"a": [3, 1], "b": [1, 3], "c": [2, 2], "d": [3, 3], "e": [2, 4]}
    assert pareto_front(pts, [MIN, MIN]) == ["a", "b", "c"]


def test_pareto_front_mixed_directions() -> None:
    # latency (min) vs IOU (max)
    pts = {"slow_good": [0.3, 0.9], "fast_bad": [0.1, 0.5], "dominated": [0.2, 0.5], "mid": [0.2, 0.7]}
    assert pareto_front(pts, [MIN, MAX]) == ["slow_good", "fast_bad", "mid"]
    assert pareto_front(pts, [MAX, MIN]) == ["slow_good", "dominated"]


def test_pareto_front_ties_and_duplicates() -> None:
    pts = {"a": [1, 2], "dup": [1, 2], "tie_x_worse": [1, 3], "b": [2, 1]}
    assert pareto_front(pts, [MIN, MIN]) == ["a", "dup", "b"]
    assert pareto_front({}, [MIN, MIN]) == []
    assert pareto_front({"only": [5.0]}, [MAX]) == ["only"]


def test_hypervolume_1d() -> None:
    assert hypervolume([[3], [5]], [MIN], [10]) == pytest.approx(7)
    assert hypervolume([[0.8], [0.4]], [MAX], [0.0]) == pytest.approx(0.8)
    assert hypervolume([], [MIN], [1.0]) == 0.0


def test_hypervolume_2d_by_hand() -> None:
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [MIN, MIN], [4, 4]) == pytest.approx(6)
    # [0.1, 0.3] x [0, 0.8] united with [0.2, 0.3] x [0, 0.9]
    assert hypervolume([[0.1, 0.8], [0.2, 0.9]], [MIN, MAX], [0.3, 0.0]) == pytest.approx(0.17)
    # dominated and duplicate points add nothing
    assert hypervolume([[1, 3], [2, 2], [3, 1], [3, 3], [2, 2]], [MIN, MIN], [4, 4]) == pytest.approx(6)


def test_hypervolume_ignores_points_not_beating_reference() -> None:
    assert hypervolume([[4, 1]], [MIN, MIN], [4, 4]) == 0.0  # equal in one objective
    assert hypervolume([[5, 1], [1, 3]], [MIN, MIN], [4, 4]) == pytest.approx(3)
    assert hypervolume([[0.1, -0.2]], [MIN, MAX], [0.3, 0.0]) == 0.0


def test_hypervolume_3d_by_hand() -> None:
    assert hypervolume([[1, 1, 1]], [MIN, MIN, MIN], [2, 3, 4]) == pytest.approx(6)
    # boxes 2*2*1 and 1*1*2 overlapping in a unit cube
    assert hypervolume([[0, 0, 1], [1, 1, 0]], [MIN, MIN, MIN], [2, 2, 2]) == pytest.approx(5)
    assert hypervolume([[0, 0, 1], [1, 1, 0]], [MAX, MIN, MAX], [2, 2, 2]) == 0.0
    assert hypervolume([[3, 0, 2], [2, 1, 1]], [MAX, MIN, MAX], [0, 2, 0]) == pytest.approx(
        3 * 2 * 2 + 2 * 1 * 1 - 2 * 1 * 1
    )


def _inclusion_exclusion(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact union volume of the boxes [p, ref] (minimisation), for a handful of points."""
    total = 0.0
    for r in range(1, len(points) + 1):
        for subset in itertools.combinations(points, r):
            corner = np.max(np.asarray(subset), axis=0)
            total += (-1) ** (r + 1) * float(np.prod(np.clip(ref - corner, 0, None)))
    return total


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_hypervolume_matches_inclusion_exclusion(dim: int) -> None:
    rng = np.random.default_rng(dim)
    directions = [MIN if j % 2 == 0 else MAX for j in range(dim)]
    signs = np.array([1.0 if d == MIN else -1.0 for d in directions])
    ref = np.array([1.0 if d == MIN else 0.0 for d in directions])
    for _ in range(5):
        pts = rng.uniform(0, 1, size=(7, dim))
        expected = _inclusion_exclusion(pts * signs, ref * signs)
        assert hypervolume(pts.tolist(), directions, ref.tolist()) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("dim", [2, 3])
def test_hypervolume_matches_monte_carlo(dim: int) -> None:
    rng = np.random.default_rng(42 + dim)
    directions = [MAX] + [MIN] * (dim - 1)
    pts = rng.uniform(0, 1, size=(40, dim))
    ref = [0.0] + [1.0] * (dim - 1)
    samples = rng.uniform(0, 1, size=(200_000, dim))  # the box [0, 1]^d holds the whole volume
    covered = np.zeros(len(samples), dtype=bool)
    for p in pts:
        covered |= (samples[:, 0] <= p[0]) & np.all(samples[:, 1:] >= p[1:], axis=1)
    assert hypervolume(pts.tolist(), directions, ref) == pytest.approx(covered.mean(), abs=0.005)


def test_reference_point_rules() -> None:
    objectives = [
        ObjectiveInfo("lat_capped", MIN, "s", (0.0, 0.3)),
        ObjectiveInfo("lat", MIN, "s"),
        ObjectiveInfo("iou_floor", MAX, "", (0.5, 1.0)),
        ObjectiveInfo("iou", MAX),
        ObjectiveInfo("score", MAX),
    ]
    observed = [[0.1, 0.2, 0.7, 0.6, -1.0], [0.2, 0.1, 0.8, 0.9, 1.0], [0.25, math.nan, 0.9, 0.1, 0.0]]
    ref = reference_point(objectives, observed)
    assert ref == pytest.approx([0.3, 0.22, 0.5, 0.0, -1.2])


def test_reference_point_edge_cases() -> None:
    objectives = [
        ObjectiveInfo("a", MIN),
        ObjectiveInfo("b", MAX),
        ObjectiveInfo("c", MIN, "", (1e6, math.inf)),
    ]
    assert reference_point(objectives, []) == [1.0, 0.0, 1.0]
    assert reference_point(objectives, [[-2.0, -3.0, 5.0]]) == pytest.approx([-1.8, -4.0, 5.5])
    assert reference_point(objectives, [[0.0, 0.0, 0.0]]) == pytest.approx([1.0, 0.0, 1.0])


def test_snapshot_fronts_use_complete_candidates_up_to_each_iteration() -> None:
    objectives = (ObjectiveInfo("lat", MIN), ObjectiveInfo("iou", MAX))

    def cand(
        archid: str, it: int, values: dict[str, float], feasible: bool = True, failed: str = ""
    ) -> CandidateState:
        return CandidateState(archid, it, (), 1, "{}", values, feasible, failed)

    candidates = (
        cand("a", 0, {"lat": 0.2, "iou": 0.5}),
        cand("b", 0, {"lat": 0.1, "iou": 0.4}),
        cand("bad", 0, {"lat": 0.01, "iou": 0.99}, feasible=False),
        cand("c", 1, {"lat": 0.1, "iou": 0.6}),
        cand("pending", 1, {"lat": 0.0}),
        cand("d", 2, {"lat": 0.3, "iou": 0.9}, failed="oom"),
    )
    iterations = tuple(IterationState(k, (), 0.0, 0.0) for k in range(3))
    snapshot = SearchSnapshot("s", "n", objectives, candidates, iterations)
    assert snapshot_fronts(snapshot) == {0: ["a", "b"], 1: ["c"], 2: ["c"]}


@pytest.mark.parametrize("seed", range(5))
def test_the_two_objective_sweep_gives_the_pairwise_front(seed: int) -> None:
    """Ties in either coordinate, duplicates and both directions: the O(n log n) sweep that serves two
    objectives keeps exactly the points no other point dominates."""
    rng = random.Random(seed)
    for _ in range(60):
        n = rng.randint(1, 80)
        grid = [0.1, 0.2, 0.3]
        points = {
            f"a{i}": [rng.choice([*grid, rng.random()]), rng.choice([*grid, rng.random()])] for i in range(n)
        }
        directions = [rng.choice(list(Direction)), rng.choice(list(Direction))]
        expected = [
            a for a, p in points.items() if not any(dominates(q, p, directions) for q in points.values())
        ]
        assert pareto_front(points, directions) == expected


@pytest.mark.parametrize("directions", [[MIN, MAX], [MIN, MIN], [MAX, MIN, MIN]])
def test_a_front_kept_one_point_at_a_time_is_the_front_of_all_points(directions: list[Direction]) -> None:
    """Points in a random order of arrival, with ties and repeats on a coarse grid: after each one, the
    incremental front is pareto_front of every point so far, in position order."""
    rng = random.Random(7)
    for _ in range(20):
        points = {f"p{i}": [rng.randint(0, 6) / 2 for _ in directions] for i in range(60)}
        positions = {k: i for i, k in enumerate(points)}
        arrival = list(points)
        rng.shuffle(arrival)
        live = IncrementalFront(directions)
        for n, point_id in enumerate(arrival, 1):
            live.add(point_id, points[point_id], positions[point_id])
            so_far = {k: points[k] for k in sorted(arrival[:n], key=positions.__getitem__)}
            assert live.ids() == pareto_front(so_far, directions)
            assert live.points() == [points[k] for k in live.ids()]
        on_front = live.ids()[0]
        live.add(on_front, [math.inf] * len(directions), 0)  # an id on the front is not added again
        assert live.ids() == pareto_front(points, directions)
