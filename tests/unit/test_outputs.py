"""Archai-style search outputs written from a hand-made snapshot."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from facenas.domain import Direction
from facenas.search.outputs import front_projection, pareto_plot_name, write_outputs
from facenas.search.pareto import hypervolume, reference_point, snapshot_fronts
from facenas.search.protoconv import snapshot_from_proto, snapshot_to_proto
from facenas.search.snapshot import (
    CandidateState,
    IterationState,
    ObjectiveInfo,
    SearchSnapshot,
    latency_quality,
)

LAT = ObjectiveInfo("CPU ONNX Latency (s)", Direction.MINIMIZE, "s", (0.0, 0.3))
IOU = ObjectiveInfo("Partial Training Val. IOU", Direction.MAXIMIZE, "miou")
SNP = ObjectiveInfo("SNP Quantized Latency (s)", Direction.MINIMIZE, "s")
PAIR_PLOT = "pareto_CPU_ONNX_Latency_s_vs_Partial_Training_Val._IOU.png"
HEADER = [
    "archid",
    "CPU ONNX Latency (s)",
    "Partial Training Val. IOU",
    "parent",
    "parents",
    "iteration_num",
    "search_walltime_hours",
    "is_pareto",
    "params",
    "feasible",
    "failed",
    "CPU ONNX Latency (s) cv",
    "CPU ONNX Latency (s) stable",
]

# archid, iteration, parents, latency, iou, snp latency, feasible, failed (None = not measured)
ROWS: list[tuple[str, int, tuple[str, ...], float | None, float | None, float | None, bool, str]] = [
    ("a0", 0, (), 0.20, 0.60, 0.050, True, ""),
    ("b0", 0, (), 0.05, 0.40, 0.020, True, ""),
    ("c0", 0, (), 0.25, 0.50, 0.010, True, ""),
    ("d0", 0, (), None, None, None, True, "trainer crashed"),
    ("e1", 1, ("a0",), 0.10, 0.65, 0.030, True, ""),
    ("f1", 1, ("a0", "b0"), 0.40, None, None, False, ""),
    ("g2", 2, ("e1",), 0.08, 0.70, 0.040, True, ""),
    ("h2", 2, ("e1", "g2"), 0.02, None, 0.005, True, ""),
]


def make_snapshot(objectives: tuple[ObjectiveInfo, ...] = (LAT, IOU), iterations: int = 3) -> SearchSnapshot:
    """Three iterations; d0 failed, f1 infeasible, h2 still waits for its IOU."""
    candidates = tuple(
        CandidateState(
            archid=a,
            iteration=it,
            parents=parents,
            params=1_000_000 + 1000 * i,
            document=json.dumps({"archid": a, "depth": i}, indent=2),
            values={
                o.name: v for o, v in zip((LAT, IOU, SNP), (lat, iou, snp), strict=True) if v is not None
            },
            feasible=feasible,
            failed=failed,
        )
        for i, (a, it, parents, lat, iou, snp, feasible, failed) in enumerate(ROWS)
    )
    bare = SearchSnapshot(
        "s1", "test", objectives, candidates, tuple(IterationState(k, (), 0, 0) for k in range(3))
    )
    fronts = snapshot_fronts(bare)
    complete = [[c.values[o.name] for o in objectives] for c in candidates if c.complete(objectives)]
    ref = reference_point(objectives, complete)
    directions = [o.direction for o in objectives]
    states = tuple(
        IterationState(
            k,
            tuple(fronts[k]),
            hypervolume(
                [[by[o.name] for o in objectives] for by in _values(candidates, fronts[k])], directions, ref
            ),
            walltime_s=3600.0 * (k + 1) / 2,
        )
        for k in range(iterations)
    )
    return SearchSnapshot("s1", "test", objectives, candidates, states)


def _values(candidates: tuple[CandidateState, ...], ids: list[str]) -> list[dict[str, float]]:
    return [dict(c.values) for c in candidates if c.archid in ids]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("outputs")
    return out, write_outputs(make_snapshot(), out)


def test_expected_files_and_nothing_else(written: tuple[Path, list[Path]]) -> None:
    out, paths = written
    expected = {
        *(f"search_state_{k}.csv" for k in range(3)),
        "pareto_models_iter_0/a0.json",
        "pareto_models_iter_0/b0.json",
        "pareto_models_iter_1/e1.json",
        "pareto_models_iter_1/b0.json",
        "pareto_models_iter_2/g2.json",
        "pareto_models_iter_2/b0.json",
        PAIR_PLOT,
        "hypervolume.csv",
        "hypervolume.png",
    }
    assert set(_files(out)) == expected
    assert sorted(str(p.relative_to(out)) for p in paths) == sorted(expected)


def test_search_state_csv(written: tuple[Path, list[Path]]) -> None:
    out, _ = written
    snapshot = make_snapshot()
    for k, count in enumerate([4, 6, 8]):
        path = out / f"search_state_{k}.csv"
        assert path.read_text().splitlines()[0] == ",".join(HEADER)
        rows = _read_csv(path)
        assert len(rows) == count
        assert {r["archid"] for r in rows if r["is_pareto"] == "True"} == set(snapshot.iterations[k].pareto)
        assert all(r["is_pareto"] in ("True", "False") for r in rows)
    by_id = {r["archid"]: r for r in _read_csv(out / "search_state_2.csv")}
    assert by_id["a0"]["CPU ONNX Latency (s)"] == "0.2" and by_id["a0"]["Partial Training Val. IOU"] == "0.6"
    assert by_id["a0"]["parent"] == "" and by_id["a0"]["parents"] == ""
    assert by_id["f1"]["parent"] == "a0" and by_id["f1"]["parents"] == "a0,b0"
    assert by_id["f1"]["Partial Training Val. IOU"] == "" and by_id["f1"]["feasible"] == "False"
    assert by_id["d0"]["failed"] == "trainer crashed" and by_id["d0"]["CPU ONNX Latency (s)"] == ""
    assert by_id["h2"]["iteration_num"] == "2" and by_id["h2"]["params"] == "1007000"
    assert [by_id[a]["search_walltime_hours"] for a in ("a0", "e1", "g2")] == ["0.5", "1.0", "1.5"]


def test_pareto_model_documents(written: tuple[Path, list[Path]]) -> None:
    out, _ = written
    snapshot = make_snapshot()
    docs = {c.archid: c.document for c in snapshot.candidates}
    for it in snapshot.iterations:
        folder = out / f"pareto_models_iter_{it.iteration}"
        assert {p.stem for p in folder.iterdir()} == set(it.pareto)
        for archid in it.pareto:
            text = (folder / f"{archid}.json").read_text()
            assert json.loads(text) == json.loads(docs[archid])  # the stored document...
            assert text == json.dumps(json.loads(docs[archid]), indent=4)  # ...as Archai writes its files


def test_plots_are_images(written: tuple[Path, list[Path]]) -> None:
    out, _ = written
    for name in (PAIR_PLOT, "hypervolume.png"):
        path = out / name
        assert path.stat().st_size > 10_000
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size[0] >= 600 and img.size[1] >= 300


def test_hypervolume_csv(written: tuple[Path, list[Path]]) -> None:
    out, _ = written
    rows = _read_csv(out / "hypervolume.csv")
    snapshot = make_snapshot()
    assert [r["iteration"] for r in rows] == ["0", "1", "2"]
    assert [float(r["hypervolume"]) for r in rows] == [it.hypervolume for it in snapshot.iterations]
    assert [float(r["walltime_s"]) for r in rows] == [1800.0, 3600.0, 5400.0]
    hv = [float(r["hypervolume"]) for r in rows]
    assert 0 < hv[0] < hv[1] < hv[2]


def test_rerun_is_idempotent(tmp_path: Path) -> None:
    snapshot = make_snapshot()
    first = write_outputs(snapshot, tmp_path)
    before = _files(tmp_path)
    assert write_outputs(snapshot, tmp_path) == first
    assert _files(tmp_path) == before


def test_no_iterations_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert write_outputs(make_snapshot(iterations=0), out) == []
    assert not out.exists()


def test_single_objective_has_no_pair_plots(tmp_path: Path) -> None:
    paths = write_outputs(make_snapshot(objectives=(IOU,)), tmp_path)
    assert not list(tmp_path.glob("pareto_*.png"))
    assert (tmp_path / "hypervolume.png") in paths
    assert _read_csv(tmp_path / "search_state_0.csv")[0].keys() == {
        h for h in HEADER if not h.startswith("CPU ONNX Latency (s)")
    }


def test_three_objectives_give_three_pair_plots(tmp_path: Path) -> None:
    snapshot = make_snapshot(objectives=(LAT, IOU, SNP))
    write_outputs(snapshot, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("pareto_*.png")) == sorted(
        [
            PAIR_PLOT,
            "pareto_CPU_ONNX_Latency_s_vs_SNP_Quantized_Latency_s.png",
            "pareto_Partial_Training_Val._IOU_vs_SNP_Quantized_Latency_s.png",
        ]
    )
    # a 2D projection of a 3D front is reduced to its staircase: IOU grows with latency
    front = front_projection(snapshot, snapshot.iterations[-1], LAT.name, IOU.name)
    assert front == sorted(front) and [y for _, y in front] == sorted(y for _, y in front)
    assert len(front) < len(snapshot.iterations[-1].pareto)


def test_latency_columns_carry_each_measurements_cv_and_stability(tmp_path: Path) -> None:
    snapshot = make_snapshot(objectives=(LAT, IOU, SNP))
    measured = {"cv": {LAT.name: 0.012, SNP.name: 0.05}, "stable": {LAT.name: True}}
    candidates = tuple(replace(c, **measured) if c.archid == "a0" else c for c in snapshot.candidates)
    write_outputs(replace(snapshot, candidates=candidates), tmp_path)
    rows = {r["archid"]: r for r in _read_csv(tmp_path / "search_state_2.csv")}
    assert rows["a0"]["CPU ONNX Latency (s) cv"] == "0.012"
    assert rows["a0"]["CPU ONNX Latency (s) stable"] == "True"
    assert rows["a0"]["SNP Quantized Latency (s) cv"] == "0.05"
    assert rows["a0"]["SNP Quantized Latency (s) stable"] == ""  # its backend gave no verdict
    assert rows["b0"]["CPU ONNX Latency (s) cv"] == ""  # nothing reported
    assert "Partial Training Val. IOU cv" not in rows["a0"]  # latency objectives only
    exported = snapshot_from_proto(snapshot_to_proto(replace(snapshot, candidates=candidates)))
    assert exported.candidates[0].cv == measured["cv"] and exported.candidates[0].stable == {LAT.name: True}


def test_the_cv_and_verdict_are_read_where_each_backend_reports_them() -> None:
    assert latency_quality({"cv": 0.02, "stable": True, "median_s": 0.01}) == (0.02, True)  # CPU, SNPE
    assert latency_quality({"int8": {"cv": 0.03, "stable": False}, "fp32": None}) == (0.03, False)  # int8
    assert latency_quality({"estimated_inference_time_us": 900.0}) == (None, None)  # AI Hub
    assert latency_quality({"cv": "high", "stable": 1}) == (None, None)


def test_plot_name_rule() -> None:
    assert (
        pareto_plot_name(IOU.name, LAT.name) == "pareto_Partial_Training_Val._IOU_vs_CPU_ONNX_Latency_s.png"
    )
    assert pareto_plot_name("a/b: c", "d-e") == "pareto_ab_c_vs_d-e.png"
