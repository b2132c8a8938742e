"""Pareto dominance, fronts and exact hypervolume for mixed minimise/maximise objectives (torch-free).

Internally every point is turned into a minimisation problem (maximised coordinates are negated), so
one code path serves every mix of directions. Points must carry finite values for every objective.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from facenas.domain import Direction
from facenas.search.snapshot import ObjectiveInfo, SearchSnapshot

_Point = Sequence[float]


def _signs(directions: Sequence[Direction]) -> list[float]:
    """+1 for minimised, -1 for maximised objectives (multiplying gives a minimisation problem)."""
    return [1.0 if d == Direction.MINIMIZE else -1.0 for d in directions]


def _as_minimised(point: _Point, signs: Sequence[float]) -> list[float]:
    if len(point) != len(signs):
        raise ValueError(f"point has {len(point)} values, expected {len(signs)}")
    return [float(v) * s for v, s in zip(point, signs, strict=True)]


def dominates(a: _Point, b: _Point, directions: Sequence[Direction]) -> bool:
    """True when ``a`` is no worse than ``b`` in every objective and strictly better in one."""
    signs = _signs(directions)
    return _dominated(_as_minimised(b, signs), _as_minimised(a, signs))


def pareto_front(points: Mapping[str, _Point], directions: Sequence[Direction]) -> list[str]:
    """Ids of the non-dominated points, in the mapping's order; equal points all stay on the front.
    Two objectives take a sort and a sweep (O(n log n): a search's history has thousands of points),
    more take pairwise comparisons."""
    ids = list(points)
    if not ids:
        return []
    signs = np.asarray(_signs(directions))
    arr = np.asarray([_as_minimised(points[i], signs.tolist()) for i in ids], dtype=float)
    keep = _front_2d(arr) if arr.shape[1] == 2 else _front_pairwise(arr)
    return [i for i, k in zip(ids, keep, strict=True) if k]


class IncrementalFront:
    """The Pareto front of points added one at a time, as :func:`pareto_front` gives it for all of them:
    each addition costs O(front size), not O(points) -- a search asks for its front before every
    proposal, over a history of thousands of points. Ids come in the order of the positions they were
    added with (a search's proposal order, the order :func:`pareto_front` keeps)."""

    def __init__(self, directions: Sequence[Direction]) -> None:
        self._signs = _signs(directions)
        self._front: dict[str, tuple[int, list[float], list[float]]] = {}  # id -> (position, min., point)

    def add(self, point_id: str, point: _Point, position: int) -> None:
        """Add a point (once: an id on the front is not added again): it joins the front unless a point on
        it dominates it, and pushes off the points it dominates."""
        if point_id in self._front:
            return
        minimised = _as_minimised(point, self._signs)
        if any(_dominated(minimised, other) for _, other, _ in self._front.values()):
            return
        self._front = {k: v for k, v in self._front.items() if not _dominated(v[1], minimised)}
        self._front[point_id] = (position, minimised, [float(v) for v in point])

    def ids(self) -> list[str]:
        return sorted(self._front, key=lambda k: self._front[k][0])

    def points(self) -> list[list[float]]:
        """The front's points, in the order of :meth:`ids`."""
        return [self._front[k][2] for k in self.ids()]


def _dominated(a: list[float], b: list[float]) -> bool:
    """Whether minimised point ``b`` dominates minimised point ``a``."""
    return all(y <= x for x, y in zip(a, b, strict=True)) and any(y < x for x, y in zip(a, b, strict=True))


def _front_pairwise(arr: np.ndarray) -> list[bool]:
    return [
        not bool(np.any(np.all(arr <= row, axis=1) & np.any(arr < row, axis=1)))
        for row in arr  # a row never dominates itself, so no self-exclusion is needed
    ]


def _front_2d(arr: np.ndarray) -> list[bool]:
    """Minimised 2-D points: in order of (x, y), a point is dominated by an earlier x with a y no larger,
    or by a smaller y at the same x."""
    order = np.lexsort((arr[:, 1], arr[:, 0]))
    keep = [False] * len(arr)
    best_before = math.inf  # the least y among points of a smaller x
    start = 0
    while start < len(order):
        x = arr[order[start], 0]
        end = start
        while end < len(order) and arr[order[end], 0] == x:
            end += 1
        least = arr[order[start], 1]  # the group is sorted by y
        for i in order[start:end]:
            y = arr[i, 1]
            keep[i] = not (best_before <= y or least < y)
        best_before = min(best_before, least)
        start = end
    return keep


def hypervolume(points: Sequence[_Point], directions: Sequence[Direction], reference: _Point) -> float:
    """Exact volume dominated by ``points`` and bounded by ``reference`` (any number of objectives).

    Minimised objectives count below the reference, maximised ones above it; a point that does not
    strictly improve on the reference in every objective contributes nothing. 1D and 2D are solved
    directly, higher dimensions by sweeping slices along the last objective (exact; cost grows as
    ``n**(d-1) log n``, fine for the few hundred points of a search).
    """
    signs = _signs(directions)
    ref = _as_minimised(reference, signs)
    pts = [
        p
        for p in (_as_minimised(q, signs) for q in points)
        if all(v < r for v, r in zip(p, ref, strict=True))
    ]
    return _hv(pts, ref) if pts else 0.0


def _hv(pts: list[list[float]], ref: list[float]) -> float:
    """Hypervolume of minimisation points that all strictly beat ``ref``."""
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in pts)
    if len(ref) == 2:
        return _hv2(pts, ref)
    return _hv_sweep(pts, ref)


def _hv2(pts: list[list[float]], ref: list[float]) -> float:
    """2D: sort by x, add the rectangle of each point that lowers the best y so far."""
    area, best_y = 0.0, ref[1]
    for x, y in sorted((p[0], p[1]) for p in pts):
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return area


def _hv_sweep(pts: list[list[float]], ref: list[float]) -> float:
    """d >= 3: slab between consecutive last-coordinate levels times the (d-1)-D volume below it."""
    ordered = sorted(pts, key=lambda p: p[-1])
    volume = 0.0
    for i, p in enumerate(ordered):
        upper = ordered[i + 1][-1] if i + 1 < len(ordered) else ref[-1]
        if upper > p[-1]:
            volume += _hv([q[:-1] for q in ordered[: i + 1]], ref[:-1]) * (upper - p[-1])
    return volume


def reference_point(objectives: Sequence[ObjectiveInfo], observed: Sequence[_Point]) -> list[float]:
    """A fixed hypervolume reference for a whole search, one coordinate per objective.

    Minimised: the constraint's upper bound when there is a finite one, else 1.1 x the largest
    observed value (``max + 0.1 |max|``, so negative values work too; ``max + 1`` when that is 0,
    1.0 when nothing was observed). Maximised: the constraint's lower bound when finite, else 0.0
    when every observed value is >= 0, else ``min - 0.1 (max - min)`` (``min - 1`` when the range
    is 0). Non-finite observed values are ignored. Give ``observed`` every value of the search (or the
    constraints) so the reference does not move between iterations and hypervolumes stay comparable.
    """
    return [_reference_coordinate(o, [row[j] for row in observed]) for j, o in enumerate(objectives)]


def _reference_coordinate(objective: ObjectiveInfo, column: Sequence[float]) -> float:
    values = [float(v) for v in column if math.isfinite(v)]
    low, high = objective.constraint if objective.constraint else (-math.inf, math.inf)
    if objective.direction == Direction.MINIMIZE:
        if math.isfinite(high):
            return float(high)
        if not values:
            return 1.0
        top = max(values)
        return top + (0.1 * abs(top) or 1.0)
    if math.isfinite(low):
        return float(low)
    if not values or min(values) >= 0:
        return 0.0
    bottom = min(values)
    return bottom - (0.1 * (max(values) - bottom) or 1.0)


def snapshot_fronts(snapshot: SearchSnapshot) -> dict[int, list[str]]:
    """For every iteration k, the Pareto front of the complete candidates proposed in iterations <= k."""
    objectives = snapshot.objectives
    directions = [o.direction for o in objectives]
    complete = [c for c in snapshot.candidates if c.complete(objectives)]
    fronts: dict[int, list[str]] = {}
    for it in snapshot.iterations:
        points = {
            c.archid: [c.values[o.name] for o in objectives] for c in complete if c.iteration <= it.iteration
        }
        fronts[it.iteration] = pareto_front(points, directions)
    return fronts
