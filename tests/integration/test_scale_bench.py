"""``bench/scale.py`` at 500 evaluations: two concurrent searches through the real searcher and store
processes with simulated workers, every evaluation finished and every figure of its JSON reported.

Only behaviour is asserted (the figures are there and consistent); the figures themselves are the
bench's to print, not this test's to judge."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.timing import scaled

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "evaluations",
    "evaluations_per_s",
    "overhead_ms_p50",
    "overhead_ms_p99",
    "searcher_rss_mb_warm",
    "searcher_rss_mb_end",
    "store_rss_mb_warm",
    "store_rss_mb_end",
    "read_ms_max",
    "get_search_ms_max",
    "get_pareto_ms_max",
    "list_searches_ms_max",
    "get_architecture_ms_max",
    "export_ms_max",
    "export_page_ms_max",
    "watch_replay_ms_max",
    "store_bytes",
}


def test_the_scale_bench_runs_500_evaluations_and_reports_every_figure(tmp_path: Path) -> None:
    args = ["--evaluations", "500", "--searches", "2", "--replicas", "2", "--read-repeats", "2"]
    args += ["--delay", "0.02"]
    done = subprocess.run(
        [sys.executable, "bench/scale.py", *args, "--workdir", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=scaled(900),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result.keys() >= KEYS, KEYS - result.keys()
    assert result["statuses"] == ["completed", "completed"]
    # every candidate's two objectives ran (or, for an architecture both searches drew, came from the cache)
    assert result["evaluations"] + result["evaluations_cached"] == 500 and result["evaluations_failed"] == 0
    assert result["read_errors"] == []
    figures = {key: result[key] for key in KEYS}
    assert all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in figures.values()), figures
    assert result["overhead_ms_p50"] <= result["overhead_ms_p99"]
    reads = ("get_search", "get_pareto", "get_architecture", "list_searches", "export_page")
    assert result["read_ms_max"] == max(result[f"{n}_ms_max"] for n in reads)
    assert result["export_pages"] >= 2 and result["export_page_ms_max"] <= result["export_ms_max"]
    assert len(result["finish_s"]) == 2 and result["finish_spread"] >= 1.0
    assert result["ideal_s"] == pytest.approx(result["evaluations"] * 0.02 / 4)  # 2 x 2 slots of 20 ms
    assert math.isfinite(result["over_ideal_pct"])
    assert result["watch_replay_events"] >= result["evaluations"]  # the replay holds every evaluation event
    assert (tmp_path / "store.db").stat().st_size <= result["store_bytes"]
