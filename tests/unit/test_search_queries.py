"""The searcher's queries on a store filled with known records: ``search get`` takes an archid or a
unique prefix of one, the way git takes a short hash (the manager, the Searcher's status codes and the
CLI); ``search list`` shows each search's cache hits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from facenas.cli.main import app
from facenas.domain import Candidate, EvalKey, Evaluation, IterationRecord, budget_key
from facenas.errors import InvalidInput, NotFound
from facenas.rpc.server import RunningServer, ServerConfig, start
from facenas.search.config import parse_search_config
from facenas.search.manager import MAX_AMBIGUOUS_SHOWN, SearchManager
from facenas.space.hgnet import HgnetSearchSpace
from facenas.store import SqlStore
from facenas.v1 import searcher_pb2, searcher_pb2_grpc
from services.searcher.servicer import SearcherServicer
from tests.integration.conftest import tiny_search

SEARCH = "s1"
#: archids sharing prefixes: "ab" is ambiguous, "abc1" and "abd" are not
ARCHIDS = ["abc1" + "0" * 36, "abc2" + "0" * 36, "abd0" + "0" * 36, "f" * 40]
TARGET = "cpu/test/t1/64x64"
CACHE_HITS = 3  # in the search's iteration record


class WholeSearchRefused(SqlStore):
    """A store that fails a test which loads a whole search's candidates to find one (while
    ``refusing``: summaries, which ``search list`` shows, do load them)."""

    refusing = True

    def list_candidates(self, search_id: str) -> list[Candidate]:
        if self.refusing:
            raise AssertionError("get_candidate listed every candidate of the search")
        return super().list_candidates(search_id)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WholeSearchRefused]:
    opened = WholeSearchRefused.from_url(f"sqlite:///{tmp_path / 'store.db'}")
    text = tiny_search()
    config = parse_search_config(text)
    opened.create_search(SEARCH, "prefixes", text)
    document = HgnetSearchSpace(config.space, seed=1).random_sample().to_json()
    objective = config.objectives[0].name
    opened.put_targets(SEARCH, {objective: TARGET})
    budget = budget_key(objective, config.budget, config.img_size)
    for i, archid in enumerate(ARCHIDS):
        opened.add_candidate(Candidate(SEARCH, archid, 0, (), 0.0, document, 1000 + i))
        opened.put_evaluation(Evaluation(EvalKey(archid, objective, budget, TARGET), 0.5 + i, "s"))
    state = {"rng": [], "reference": None, "cache_hits": CACHE_HITS}
    opened.put_iteration(IterationRecord(SEARCH, 0, (ARCHIDS[0],), 0.25, state, 1.0))
    yield opened
    opened.close()


@pytest.fixture
def manager(store: SqlStore) -> SearchManager:
    return SearchManager(store, {})


@pytest.fixture
def searcher(manager: SearchManager) -> Iterator[RunningServer]:
    registration = (searcher_pb2_grpc.add_SearcherServicer_to_server, SearcherServicer(manager), "Searcher")
    running = start([registration], ServerConfig(metrics_port=None))
    yield running
    running.stop(0)


def test_a_unique_prefix_gives_its_architecture(manager: SearchManager) -> None:
    for prefix, archid in [("abc1", ARCHIDS[0]), ("abd", ARCHIDS[2]), ("f", ARCHIDS[3])]:
        state = manager.get_candidate(SEARCH, prefix)
        assert state.archid == archid
        assert state.params == 1000 + ARCHIDS.index(archid)
        assert list(state.values.values()) == [0.5 + ARCHIDS.index(archid)]
    assert manager.get_candidate(SEARCH, ARCHIDS[1]).archid == ARCHIDS[1]  # the whole archid too


def test_an_ambiguous_prefix_names_the_candidates(manager: SearchManager) -> None:
    with pytest.raises(InvalidInput) as raised:
        manager.get_candidate(SEARCH, "abc")
    message = str(raised.value)
    assert "ambiguous" in message and ARCHIDS[0] in message and ARCHIDS[1] in message
    assert ARCHIDS[2] not in message


def test_an_ambiguous_prefix_shows_at_most_a_few_candidates(store: SqlStore, manager: SearchManager) -> None:
    many = [f"{i:02d}".rjust(40, "e") for i in range(MAX_AMBIGUOUS_SHOWN + 5)]
    document = store.list_candidates_page(SEARCH, 1, "", ARCHIDS[0]).items[0].document
    for archid in many:
        store.add_candidate(Candidate(SEARCH, archid, 1, (), 0.0, document, 1))
    with pytest.raises(InvalidInput) as raised:
        manager.get_candidate(SEARCH, "eee")
    message = str(raised.value)
    assert sum(a in message for a in many) == MAX_AMBIGUOUS_SHOWN and "and more" in message


def test_no_match_is_not_found(manager: SearchManager) -> None:
    with pytest.raises(NotFound, match="'abz'"):
        manager.get_candidate(SEARCH, "abz")
    with pytest.raises(NotFound):
        manager.get_candidate(SEARCH, "ABC1")  # archids are lowercase hex: case counts
    with pytest.raises(NotFound):
        manager.get_candidate("no-such-search", "abc1")
    with pytest.raises(InvalidInput):
        manager.get_candidate(SEARCH, "")


def test_the_searcher_answers_with_status_codes(searcher: RunningServer) -> None:
    with grpc.insecure_channel(searcher.address) as channel:
        stub = searcher_pb2_grpc.SearcherStub(channel)

        def get(archid: str) -> searcher_pb2.ArchitectureReply:
            request = searcher_pb2.GetArchitectureRequest(search_id=SEARCH, archid=archid)
            return stub.GetArchitecture(request, timeout=10)

        assert get("abd").architecture.archid == ARCHIDS[2]
        for prefix, code in [("ab", grpc.StatusCode.INVALID_ARGUMENT), ("0", grpc.StatusCode.NOT_FOUND)]:
            with pytest.raises(grpc.RpcError) as raised:
                get(prefix)
            assert raised.value.code() == code


def test_the_cli_takes_a_prefix(searcher: RunningServer, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "arch.json"
    argv = ["search", "get", SEARCH, "abc2", "--searcher", searcher.address, "--out", str(out), "--json"]
    done = runner.invoke(app, argv)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["architecture"]["archid"] == ARCHIDS[1]
    assert out.read_text() == json.loads(done.stdout)["architecture"]["json"]
    done = runner.invoke(app, ["search", "get", SEARCH, "abd", "--searcher", searcher.address])
    assert done.exit_code == 0 and done.stdout.startswith(ARCHIDS[2]), done.output  # the whole archid
    done = runner.invoke(app, ["search", "get", SEARCH, "abc", "--searcher", searcher.address])
    assert done.exit_code == 2
    assert "ambiguous" in done.stderr and ARCHIDS[0] in done.stderr and ARCHIDS[1] in done.stderr


def test_the_cli_lists_cache_hits(store: WholeSearchRefused, searcher: RunningServer) -> None:
    store.refusing = False
    runner = CliRunner()
    done = runner.invoke(app, ["search", "list", "--searcher", searcher.address, "--json"])
    assert done.exit_code == 0, done.output
    (summary,) = json.loads(done.stdout)["searches"]
    assert summary["cache_hits"] == CACHE_HITS
    done = runner.invoke(app, ["search", "list", "--searcher", searcher.address], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    header = next(line for line in done.stdout.splitlines() if "status" in line)
    row = next(line for line in done.stdout.splitlines() if SEARCH in line)
    cells = [c.strip() for c in row.strip("│┃ ").split("│")]
    columns = [c.strip() for c in header.strip("│┃ ").split("┃")]
    assert cells[columns.index("cache hits")] == str(CACHE_HITS)


def test_the_cli_writes_outputs_and_says_which_in_json(
    store: WholeSearchRefused, searcher: RunningServer, tmp_path: Path
) -> None:
    store.refusing = False
    out = tmp_path / "outputs"
    argv = ["search", "outputs", SEARCH, "--out", str(out), "--searcher", searcher.address, "--json"]
    done = CliRunner().invoke(app, argv)
    assert done.exit_code == 0, done.output
    reply = json.loads(done.stdout)
    assert reply["search_id"] == SEARCH and reply["out"] == str(out)
    files = {Path(f) for f in reply["files"]}
    assert out / "search_state_0.csv" in files
    assert files == {p for p in out.rglob("*") if p.is_file()}
