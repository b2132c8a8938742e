"""Health tells the truth, with real processes on loopback: each service is NOT_SERVING while a dependency
it needs is gone (the store's database, latency_snp's boards, the trainer's dataset), refuses the calls
that need it with UNAVAILABLE and the reason, and serves again when it is back; the searcher follows its
store; the launcher names a service that stays NOT_SERVING at start-up and why. Every wait polls health
with a deadline: nothing here depends on timing."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from facenas.errors import Unavailable
from facenas.launcher import LocalCluster, ServiceProcess
from facenas.rpc.health import LIVENESS, RemoteHealth, check_health
from facenas.space import HgnetSearchSpace, ParamRange, SearchSpaceParams
from facenas.v1 import common_pb2, common_pb2_grpc, store_pb2, store_pb2_grpc
from tests.fakes.fixture import FakeSnpe, fake_snpe_fixture  # noqa: F401 - registers "fake_snpe"
from tests.faults.proxy import Proxy
from tests.integration.conftest import metric
from tests.timing import scaled
from tests.tools import PG_URL, postgres_unreachable

pytestmark = pytest.mark.integration

FAST = ["--health-interval-s", "0.1"]
DEADLINE_S = 60.0


def health_of(process: ServiceProcess, name: str = "") -> RemoteHealth:
    with grpc.insecure_channel(process.address) as channel:
        return check_health(channel, name, timeout_s=10.0)


def wait_health(process: ServiceProcess, status: str, name: str = "") -> RemoteHealth:
    """Poll ``process``'s health until it says ``status`` (fails after a generous deadline)."""
    deadline = time.monotonic() + scaled(DEADLINE_S)
    while True:
        health = health_of(process, name)
        if health.status == status:
            return health
        assert time.monotonic() < deadline, f"{process.name} stayed {health.describe()}, expected {status}"
        time.sleep(0.05)


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


# --- store -----------------------------------------------------------------------------------------


def test_store_and_searcher_follow_the_sqlite_database(tmp_path: Path) -> None:
    db_dir = tmp_path / "db"
    with LocalCluster(tmp_path / "cluster") as cluster:
        store = cluster.start("store", ["--url", f"sqlite:///{db_dir / 'store.db'}", *FAST])
        searcher = cluster.start("searcher", ["--store", store.address, *FAST])
        stub = store_pb2_grpc.StoreStub(grpc.insecure_channel(store.address))
        assert metric(store, 'facenas_dependency_up{dependency="database"}') == 1

        db_dir.rename(tmp_path / "db-away")
        reason = f"database: the database directory {db_dir} is gone"
        assert wait_health(store, "NOT_SERVING").reason == reason
        assert wait_health(store, "NOT_SERVING", "facenas.v1.Store").reason == reason
        assert health_of(store, LIVENESS).serving, "a missing database is no reason to restart the store"
        err = refused(lambda: stub.GetSearch(store_pb2.GetSearchRequest(search_id="s"), timeout=10))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert err.details() == f"database unavailable: the database directory {db_dir} is gone"
        assert metric(store, 'facenas_dependency_up{dependency="database"}') == 0
        searcher_health = wait_health(searcher, "NOT_SERVING", "facenas.v1.Searcher")
        assert searcher_health.reason == f"store: store at {store.address} is NOT_SERVING: {reason}"
        assert health_of(searcher, LIVENESS).serving

        (tmp_path / "db-away").rename(db_dir)
        wait_health(store, "SERVING")
        wait_health(searcher, "SERVING")
        err = refused(lambda: stub.GetSearch(store_pb2.GetSearchRequest(search_id="s"), timeout=10))
        assert err.code() == grpc.StatusCode.NOT_FOUND, "calls reach the database again"
        assert metric(store, 'facenas_dependency_up{dependency="database"}') == 1

        store.kill()
        unreachable = wait_health(searcher, "NOT_SERVING")
        assert unreachable.reason.startswith(f"store: store at {store.address} is unreachable (")
        assert 'facenas_dependency_up{dependency="store"} 0.0' in _metrics_text(searcher)


def _metrics_text(process: ServiceProcess) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=10) as page:
        return str(page.read().decode())


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema in the test database (fails when PostgreSQL is not running)."""

    from sqlalchemy import create_engine, text

    engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    schema = f"facenas_health_{uuid.uuid4().hex[:12]}"
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as err:
        engine.dispose()
        postgres_unreachable(err)
    yield schema
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def test_postgresql_store_is_not_serving_while_its_database_is_unreachable(
    tmp_path: Path, pg_schema: str
) -> None:
    with Proxy("127.0.0.1", 5432) as link, LocalCluster(tmp_path / "cluster") as cluster:
        url = f"postgresql://postgres@127.0.0.1:{link.port}/test?options=-csearch_path%3D{pg_schema}"
        store = cluster.start("store", ["--url", url, *FAST])
        stub = store_pb2_grpc.StoreStub(grpc.insecure_channel(store.address))
        link.cut()
        health = wait_health(store, "NOT_SERVING")
        assert health.reason.startswith(
            f"database: database postgresql+psycopg://postgres@127.0.0.1:{link.port}"
        )
        assert "does not answer" in health.reason
        err = refused(lambda: stub.ListSearches(store_pb2.ListSearchesRequest(), timeout=10))
        assert err.code() == grpc.StatusCode.UNAVAILABLE and err.details().startswith(
            "database unavailable: "
        )
        link.restore()
        wait_health(store, "SERVING")
        assert stub.ListSearches(store_pb2.ListSearchesRequest(), timeout=30).searches is not None
        link.cut()


# --- latency_snp -------------------------------------------------------------------------------------


def _request(seed: int) -> common_pb2.EvaluateRequest:
    arch = HgnetSearchSpace(SearchSpaceParams(img_size=(64, 64)), seed=seed).sample_valid(
        ParamRange(1e5, 5e5)
    )
    return common_pb2.EvaluateRequest(
        architecture=common_pb2.Architecture(archid=arch.archid, json=arch.to_json()),
        objective="SNP Quantized Latency (s)",
        space=common_pb2.SearchSpace(num_classes=18, in_channels=3, img_width=64, img_height=64),
    )


def test_latency_snp_without_boards_is_not_serving_until_one_is_attached(
    fake_snpe: FakeSnpe, tmp_path: Path, dataset: Path
) -> None:
    args = ["--dataset-dir", str(dataset), "--backend", "snpe", "--snpe-root", str(fake_snpe.sdk_root), *FAST]
    with LocalCluster(tmp_path / "cluster", env=fake_snpe.env()) as cluster:
        snp = cluster.start("latency_snp", [*args, "--adb-timeout", "20"], require_serving=False)
        health = wait_health(snp, "NOT_SERVING", "facenas.v1.Evaluator")
        assert health.reason == "boards: no healthy Snapdragon board is attached (adb devices lists none)"
        assert health_of(snp, LIVENESS).serving
        assert metric(snp, 'facenas_dependency_up{dependency="boards"}') == 0
        stub = common_pb2_grpc.EvaluatorStub(grpc.insecure_channel(snp.address))
        submit = common_pb2.SubmitJobRequest(request=_request(1))
        err = refused(lambda: stub.SubmitJob(submit, timeout=30))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert err.details() == f"boards unavailable: {health.reason.removeprefix('boards: ')}"

        fake_snpe.add_device("HDK1", model="HDK 888", soc="SM8350")
        wait_health(snp, "SERVING", "facenas.v1.Evaluator")
        assert metric(snp, 'facenas_dependency_up{dependency="boards"}') == 1
        assert stub.SubmitJob(submit, timeout=30).job.job_id


# --- trainer -----------------------------------------------------------------------------------------


def test_trainer_follows_its_dataset_and_the_launcher_names_what_is_missing(
    tmp_path: Path, dataset: Path
) -> None:
    faces = tmp_path / "faces"
    shutil.copytree(dataset, faces)
    args = ["--dataset-dir", str(faces), "--val-fraction", "0.2", "--threads", "1", *FAST]
    with LocalCluster(tmp_path / "cluster") as cluster:
        missing = tmp_path / "no-cache"
        with pytest.raises(Unavailable) as err:
            cluster.start("trainer", [*args, "--data-cache", str(missing)], name="uncached", not_serving_s=1)
        message = str(err.value)
        assert message.startswith("uncached at 127.0.0.1:")
        assert f"is NOT_SERVING: data-cache: data cache {missing} is missing; see " in message
        assert "uncached" not in cluster.processes, "the launcher stopped what it could not use"

        trainer = cluster.start("trainer", args)
        stub = common_pb2_grpc.EvaluatorStub(grpc.insecure_channel(trainer.address))
        faces.rename(tmp_path / "faces-away")
        health = wait_health(trainer, "NOT_SERVING", "facenas.v1.Trainer")
        assert health.reason == f"dataset: dataset dir {faces} is missing"
        assert health_of(trainer, "facenas.v1.Evaluator").not_serving
        assert stub.ListJobs(common_pb2.ListJobsRequest(), timeout=30).jobs == [], (
            "following jobs still works"
        )
        request = _request(2)
        request.objective = "Partial Training Val. IOU"
        err = refused(lambda: stub.SubmitJob(common_pb2.SubmitJobRequest(request=request), timeout=30))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert err.details() == f"dataset unavailable: dataset dir {faces} is missing"

        (tmp_path / "faces-away").rename(faces)
        wait_health(trainer, "SERVING")
        assert metric(trainer, 'facenas_dependency_up{dependency="dataset"}') == 1
