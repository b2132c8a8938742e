"""``facenas search run``: a search on your own data with one command, resumed by running it again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import tiny_search
from tests.timing import scaled

pytestmark = pytest.mark.integration


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facenas", "search", "run", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_search_run_then_rerun_resumes_and_evaluates_nothing(tmp_path: Path, dataset: Path) -> None:
    config = tmp_path / "search.yaml"
    config.write_text(tiny_search(iters=2, steps=3), encoding="utf-8")
    archai_flags = ["--search_config", str(config), "--dataset_dir", str(dataset), "--output_dir", "out"]
    ours = ["--trainers", "2", "--val-fraction", "0.2", "--json"]
    first = _run(*archai_flags, *ours, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(first.stdout)
    assert result["status"] == "completed" and not result["resumed"]
    assert result["evaluations_run"] == (4 + 3) * 2  # every candidate, both objectives
    out = tmp_path / "out"
    written = {p.name for p in out.iterdir()}
    assert {"search_state_0.csv", "search_state_1.csv", "pareto_models_iter_1", "store.db"} <= written

    again = _run(*archai_flags, *ours, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads(again.stdout)
    assert rerun["search_id"] == result["search_id"] and rerun["resumed"]
    assert rerun["evaluations_run"] == 0

    config.write_text(tiny_search(iters=3, steps=3), encoding="utf-8")
    changed = _run(*archai_flags, *ours, cwd=tmp_path)
    assert changed.returncode == 2
    assert "search config differs" in changed.stderr and "another --output-dir" in changed.stderr


def test_an_interrupted_search_run_resumes_without_redoing_finished_work(
    tmp_path: Path, dataset: Path
) -> None:
    from facenas.errors import NotFound
    from facenas.store import open_store

    config = tmp_path / "search.yaml"
    config.write_text(tiny_search(iters=2, steps=10), encoding="utf-8")
    args = [str(config), "--dataset-dir", str(dataset), "--output-dir", "out", "--trainers", "2"]
    args += ["--val-fraction", "0.2", "--json"]
    command = [sys.executable, "-m", "facenas", "search", "run", *args]
    # Ctrl-C reaches it whatever started this suite: a suite run as a background job of a shell
    # inherits SIGINT ignored, and so would the search (it would run to its end)
    running = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    db = tmp_path / "out" / "store.db"

    def evaluations() -> list[tuple[str, str]]:
        store = open_store(f"sqlite:///{db}")
        try:
            search_id = json.loads((tmp_path / "out" / "search.json").read_text())["search_id"]
            try:
                events = store.list_events(search_id, 0, 100_000)
            except NotFound:  # not created yet
                return []
            return [
                (str(e.payload["archid"]), str(e.payload["objective"]))
                for e in events
                if e.kind == "evaluation"
            ]
        finally:
            store.close()

    deadline = time.monotonic() + scaled(600)
    while not (db.exists() and (tmp_path / "out" / "search.json").exists() and len(evaluations()) >= 4):
        assert running.poll() is None, running.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no evaluations within 10 minutes"
        time.sleep(0.5)
    running.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = running.communicate(timeout=120)
    assert running.returncode == 130, err[-3000:]
    assert "Run the same command to resume" in err
    before = evaluations()
    pids = [json.loads(f.read_text())["pid"] for f in (tmp_path / "out" / "logs").glob("*.ready")]
    assert len(pids) == 5 and not any(_alive(pid) for pid in pids), "services left running"

    again = _run(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads(again.stdout)
    assert result["status"] == "completed" and result["resumed"]
    after = evaluations()
    assert len(after) == len(set(after)), "a finished evaluation was redone"
    assert after[: len(before)] == before and result["evaluations_run"] == len(after) - len(before)
