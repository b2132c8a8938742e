"""Archai-style search outputs: per-iteration CSVs, Pareto arch files and Pareto evolution plots.

Files written into ``out_dir`` (all overwritten on every call, so the function is idempotent):

* ``search_state_{k}.csv`` for every iteration k: Archai's columns (``archid``, one per objective,
  ``parent``, ``parents``, ``iteration_num``, ``search_walltime_hours``, ``is_pareto``) then ours
  (``params``, ``feasible``, ``failed``); one row per candidate that had finished when iteration k was
  recorded (``iteration_num`` <= k, see :func:`~facenas.search.snapshot.evaluated_in`). ``is_pareto``
  marks k's front, which was computed over exactly the complete rows (feasible, not failed, every
  objective measured), so the flagged rows are the non-dominated ones among them.
  Each latency objective (unit ``s``) then has ``<objective> cv`` and ``<objective> stable``: the kept
  measurement's coefficient of variation and stability verdict (empty where the backend reports none).
* ``pareto_models_iter_{k}/<archid>.json``: the arch document of each member of iteration k's front,
  in Archai's file format.
* ``pareto_<A>_vs_<B>.png`` for every objective pair, A before B in the snapshot's order (A on x).
* ``hypervolume.csv`` and ``hypervolume.png``: the recorded hypervolume per iteration.

Plots use matplotlib's object API with an explicit Agg canvas: no pyplot, no global backend switch.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from facenas.search.pareto import pareto_front
from facenas.search.snapshot import CandidateState, IterationState, ObjectiveInfo, SearchSnapshot
from facenas.space.archfile import dump_arch_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ARCHAI_COLUMNS = ("archid", "parent", "parents", "iteration_num", "search_walltime_hours", "is_pareto")
EXTRA_COLUMNS = ("params", "feasible", "failed")
PLOT_TITLE = "Evolution of Pareto Frontier (2D projection)"


def write_outputs(snapshot: SearchSnapshot, out_dir: str | Path) -> list[Path]:
    """Write every output for the snapshot's iterations; returns the written files (none for 0 iterations)."""
    if not snapshot.iterations:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for it in snapshot.iterations:
        written.append(write_search_state(snapshot, it, out / f"search_state_{it.iteration}.csv"))
        written.extend(write_pareto_models(snapshot, it, out / f"pareto_models_iter_{it.iteration}"))
    names = [o.name for o in snapshot.objectives]
    for i, x_name in enumerate(names):
        for y_name in names[i + 1 :]:
            path = out / pareto_plot_name(x_name, y_name)
            written.append(plot_pareto_evolution(snapshot, x_name, y_name, path))
    written.append(write_hypervolume_csv(snapshot.iterations, out / "hypervolume.csv"))
    written.append(plot_hypervolume(snapshot.iterations, out / "hypervolume.png"))
    return written


def pareto_plot_name(x_name: str, y_name: str) -> str:
    """Archai's rule: ``pareto_{A}_vs_{B}.png``, spaces to ``_``, then every character other than
    letters, digits, ``_``, ``-`` and ``.`` dropped (``CPU ONNX Latency (s)`` -> ``CPU_ONNX_Latency_s``)."""
    name = f"pareto_{x_name}_vs_{y_name}.png".strip().replace(" ", "_")
    return re.sub(r"(?u)[^-\w.]", "", name)


# --- search_state_{k}.csv -----------------------------------------------------------------------


def search_state_header(objectives: Sequence[ObjectiveInfo]) -> list[str]:
    """``archid``, the objective names, the rest of Archai's columns, then ours."""
    quality = [f"{o.name} {column}" for o in _latencies(objectives) for column in ("cv", "stable")]
    return [ARCHAI_COLUMNS[0], *(o.name for o in objectives), *ARCHAI_COLUMNS[1:], *EXTRA_COLUMNS, *quality]


def _latencies(objectives: Sequence[ObjectiveInfo]) -> list[ObjectiveInfo]:
    """The latency objectives (in seconds), whose CSV columns include the measurement's cv and stable."""
    return [o for o in objectives if o.unit == "s"]


def _quality_cells(c: CandidateState, objectives: Sequence[ObjectiveInfo]) -> list[str]:
    cells = []
    for o in _latencies(objectives):
        stable = c.stable.get(o.name)
        cells += [_fmt(c.cv.get(o.name)), "" if stable is None else str(stable)]
    return cells


def write_search_state(snapshot: SearchSnapshot, it: IterationState, path: Path) -> Path:
    """Every candidate evaluated by iteration ``it`` with its Pareto flags."""
    walltime = {i.iteration: i.walltime_s for i in snapshot.iterations}
    pareto = set(it.pareto)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(search_state_header(snapshot.objectives))
        for c in snapshot.candidates:
            if c.iteration <= it.iteration:
                writer.writerow(
                    _state_row(c, snapshot.objectives, walltime.get(c.iteration), c.archid in pareto)
                )
    return path


def _state_row(
    c: CandidateState, objectives: Sequence[ObjectiveInfo], walltime_s: float | None, is_pareto: bool
) -> list[str]:
    values = [_fmt(c.values.get(o.name)) for o in objectives]
    hours = _fmt(None if walltime_s is None else walltime_s / 3600)
    parent = c.parents[0] if c.parents else ""
    flags = [c.archid, *values, parent, ",".join(c.parents), str(c.iteration), hours, str(is_pareto)]
    return [*flags, str(c.params), str(c.feasible), c.failed, *_quality_cells(c, objectives)]


def _fmt(value: float | None) -> str:
    """Shortest round-trip text of a float; empty when missing."""
    return "" if value is None else repr(float(value))


# --- pareto_models_iter_{k}/ --------------------------------------------------------------------


def write_pareto_models(snapshot: SearchSnapshot, it: IterationState, directory: Path) -> list[Path]:
    """One ``<archid>.json`` (the stored arch document, in Archai's file format) per front member the
    snapshot knows."""
    directory.mkdir(parents=True, exist_ok=True)
    documents = {c.archid: c.document for c in snapshot.candidates}
    written = []
    for archid in it.pareto:
        if archid in documents:
            path = directory / f"{archid}.json"
            path.write_text(dump_arch_json(json.loads(documents[archid])), encoding="utf-8")
            written.append(path)
    return written


# --- plots -------------------------------------------------------------------------------------


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure bound to an Agg canvas (no pyplot state, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")
    return fig


def _xy(c: CandidateState, x_name: str, y_name: str) -> tuple[float, float] | None:
    if x_name in c.values and y_name in c.values:
        return float(c.values[x_name]), float(c.values[y_name])
    return None


def front_projection(
    snapshot: SearchSnapshot, it: IterationState, x_name: str, y_name: str
) -> list[tuple[float, float]]:
    """The 2D-non-dominated part of iteration ``it``'s front projected on (x, y), sorted by x then y.

    Equals Archai's 2D front of all models so far; dropping the points a projection makes dominated
    keeps the curve a staircase when there are more than two objectives.
    """
    by_id = {c.archid: c for c in snapshot.candidates}
    points = {a: xy for a in it.pareto if a in by_id and (xy := _xy(by_id[a], x_name, y_name)) is not None}
    directions = {o.name: o.direction for o in snapshot.objectives}
    keep = pareto_front(points, [directions[x_name], directions[y_name]])
    return sorted(points[a] for a in keep)


def plot_pareto_evolution(snapshot: SearchSnapshot, x_name: str, y_name: str, path: Path) -> Path:
    """Archai's "Evolution of Pareto Frontier" plot: one post-step curve per iteration, coloured by
    iteration (plasma, with a colorbar), over a light scatter of every complete candidate."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    iterations = [i.iteration for i in snapshot.iterations]
    norm = Normalize(vmin=min(iterations), vmax=max(max(iterations), min(iterations) + 1))
    cmap = colormaps["plasma"]
    fig = _new_figure((10, 5))
    ax = fig.add_subplot()
    seen = [
        xy for c in snapshot.candidates if c.complete(snapshot.objectives) and (xy := _xy(c, x_name, y_name))
    ]
    if seen:
        ax.scatter([x for x, _ in seen], [y for _, y in seen], s=12, color="lightgray", zorder=0)
    for it in snapshot.iterations:
        front = front_projection(snapshot, it, x_name, y_name)
        if front:
            xs, ys = zip(*front, strict=True)
            color = cmap(norm(it.iteration))
            ax.step(xs, ys, where="post", color=color)
            ax.plot(xs, ys, "o", color=color)
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title(PLOT_TITLE)
    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax)
    cbar.set_label("Iteration number", rotation=270, labelpad=15)
    cbar.locator = MaxNLocator(integer=True)
    cbar.update_ticks()
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_hypervolume_csv(iterations: Sequence[IterationState], path: Path) -> Path:
    """``iteration,hypervolume,walltime_s``, one row per iteration, as recorded."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["iteration", "hypervolume", "walltime_s"])
        for it in iterations:
            writer.writerow([it.iteration, _fmt(it.hypervolume), _fmt(it.walltime_s)])
    return path


def plot_hypervolume(iterations: Sequence[IterationState], path: Path) -> Path:
    """Recorded hypervolume per iteration, a line with markers."""
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure((8, 4.5))
    ax = fig.add_subplot()
    ax.plot([i.iteration for i in iterations], [i.hypervolume for i in iterations], "o-", color="tab:blue")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Iteration")
    ax.set_ylabel("Hypervolume")
    ax.set_title("Hypervolume of the Pareto front per iteration")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path
