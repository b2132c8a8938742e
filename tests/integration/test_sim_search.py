"""``facenas search run --backend sim``: a whole search against simulated services, no dataset, in seconds,
every result labelled simulated under a ``sim:`` target key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from facenas.search.config import CPU_LATENCY, IOU, QUANTIZED_IOU, SNP_LATENCY
from facenas.store import open_store
from tests.integration.conftest import tiny_search
from tests.timing import scaled

pytestmark = pytest.mark.integration

OBJECTIVES = {SNP_LATENCY, CPU_LATENCY, IOU, QUANTIZED_IOU}


def test_a_simulated_search_runs_end_to_end_in_seconds(tmp_path: Path) -> None:
    config = tmp_path / "search.yaml"
    text = tiny_search(iters=2, steps=500)  # a budget real training would take minutes per candidate on
    config.write_text(text.replace("    name: cpu\n", "    name: snp\n    quantized_iou: true\n", 1))
    args = [
        str(config),
        "--backend",
        "sim",
        "--sim-delay",
        "uniform:0.05,0.2",
        "--output-dir",
        "out",
        "--json",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "facenas", "search", "run", *args],
        capture_output=True,
        text=True,
        timeout=scaled(600),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["status"] == "completed" and result["evaluations_run"] == (4 + 3) * len(OBJECTIVES)
    assert result["seconds"] < scaled(120), result  # services' start-up included; no training, no export

    store = open_store(f"sqlite:///{tmp_path / 'out' / 'store.db'}")
    try:
        targets = store.get_targets(result["search_id"])
        candidates = store.list_candidates(result["search_id"])
        evaluations = store.list_evaluations([c.archid for c in candidates])
    finally:
        store.close()
    assert set(targets) == OBJECTIVES and all(key.startswith("sim:") for key in targets.values())
    assert len(evaluations) == len(candidates) * len(OBJECTIVES)
    for evaluation in evaluations:
        assert evaluation.key.target == targets[evaluation.key.objective]
        assert evaluation.details["simulated"] is True, evaluation
        assert 0.05 <= evaluation.details["delay_s"] <= 0.2
    assert "every value is simulated" in done.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"search_state_0.csv", "pareto_models_iter_1"}
