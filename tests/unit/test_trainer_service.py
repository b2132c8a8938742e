"""The Trainer gRPC service: final training streamed per epoch, resumable, safe output names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from facenas.cli.main import app
from facenas.jobs import JobManager
from facenas.rpc.evaluator import EvaluatorServicer
from facenas.rpc.server import RunningServer, ServerConfig, start
from facenas.rpc.trainer import TrainerServicer
from facenas.v1 import common_pb2, common_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from facenas.workers.trainer import TrainerBackend
from tests.unit.test_train import TINY_ARCH

ARCHID = "ab" * 20


@pytest.fixture
def server(synth_dataset: Path, tmp_path: Path) -> Iterator[RunningServer]:
    backend = TrainerBackend(synth_dataset, device="cpu", val_fraction=0.2)
    running = start(
        [
            (
                common_pb2_grpc.add_EvaluatorServicer_to_server,
                EvaluatorServicer(JobManager(backend, "trainer")),
                "e",
            ),
            (trainer_pb2_grpc.add_TrainerServicer_to_server, TrainerServicer(backend, tmp_path / "out"), "t"),
        ],
        ServerConfig(port=0, metrics_port=None),
    )
    yield running
    running.stop(0)


def _request(epochs: float, name: str = "") -> trainer_pb2.FullTrainRequest:
    return trainer_pb2.FullTrainRequest(
        architecture=common_pb2.Architecture(archid=ARCHID, json=json.dumps(TINY_ARCH)),
        space=common_pb2.SearchSpace(img_width=64, img_height=64),
        budget=common_pb2.TrainingBudget(epochs=epochs, batch_size=8, max_eval_batches=1),
        output_name=name,
    )


def test_full_training_streams_epochs_and_resumes(server: RunningServer, tmp_path: Path) -> None:
    stub = trainer_pb2_grpc.TrainerStub(grpc.insecure_channel(server.address))
    first = list(stub.FullTrain(_request(1), timeout=120))
    assert [m.epoch for m in first] == [1, 1] and first[-1].done
    assert first[0].train_loss > 0 and 0 <= first[0].val_miou <= 1
    out = Path(first[-1].output_dir)
    assert out == tmp_path / "out" / ARCHID and Path(first[-1].onnx_path).exists()
    second = list(stub.FullTrain(_request(2), timeout=120))
    assert [m.epoch for m in second] == [2, 2] and second[-1].resumed_from == 1
    assert (out / "checkpoints" / "epoch_002.ckpt").exists()


def _figures(message: trainer_pb2.FullTrainProgress) -> dict[str, float]:
    return {k: getattr(message, k) for k in ("train_loss", "val_miou", "val_miou_global", "seconds")}


def test_the_last_message_repeats_the_final_epoch(server: RunningServer) -> None:
    """As metrics.json has it, also when a resumed training has no epoch left to run."""
    stub = trainer_pb2_grpc.TrainerStub(grpc.insecure_channel(server.address))
    messages = list(stub.FullTrain(_request(1), timeout=120))
    done = messages[-1]
    metrics = json.loads((Path(done.output_dir) / "metrics.json").read_text())
    final = metrics["history"][-1]
    assert done.done and done.epoch == final["epoch"] == 1
    assert _figures(done) == _figures(messages[0]) == {k: final[k] for k in _figures(done)}
    assert final["train_loss"] > 0
    again = list(stub.FullTrain(_request(1), timeout=120))
    assert len(again) == 1 and again[0].done and _figures(again[0]) == _figures(done)


def test_search_train_json_prints_the_final_epoch(server: RunningServer, tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(TINY_ARCH))
    args = ["search", "train", str(arch), "--trainer", server.address, "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--img-size", "64", "--batch-size", "8", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    metrics = json.loads((Path(printed["output_dir"]) / "metrics.json").read_text())
    final = metrics["history"][-1]
    assert printed["done"] and printed["epoch"] == final["epoch"] == 1
    assert {k: printed[k] for k in ("train_loss", "val_miou", "val_miou_global")} == {
        k: final[k] for k in ("train_loss", "val_miou", "val_miou_global")
    }


@pytest.mark.parametrize(
    ("request_", "field"),
    [(_request(1, "../escape"), "output_name"), (_request(1.5), "budget"), (_request(0.0), "budget")],
)
def test_bad_full_training_requests(
    server: RunningServer, request_: trainer_pb2.FullTrainRequest, field: str
) -> None:
    stub = trainer_pb2_grpc.TrainerStub(grpc.insecure_channel(server.address))
    with pytest.raises(grpc.RpcError) as info:
        list(stub.FullTrain(request_, timeout=60))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (info.value.details() or "")
