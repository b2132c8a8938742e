"""The Trainer servicer: final training streamed epoch by epoch."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from facenas.errors import Cancelled
from facenas.rpc.evalconv import budget_from_proto, space_from_proto
from facenas.train.final import FinalTrainingResult
from facenas.v1 import trainer_pb2, trainer_pb2_grpc
from facenas.workers.base import parse_arch
from facenas.workers.trainer import TrainerBackend, full_train, output_path


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    """Runs final trainings into ``output_root``; one message per epoch, then a final one."""

    def __init__(self, backend: TrainerBackend, output_root: Path) -> None:
        self.backend = backend
        self.output_root = Path(output_root)

    def FullTrain(
        self, request: trainer_pb2.FullTrainRequest, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        space = space_from_proto(request.space)
        budget = budget_from_proto(request.budget)
        arch = parse_arch(request.architecture.json, request.architecture.archid, space)
        out = output_path(self.output_root, request.output_name or arch.archid)
        epochs = int(budget.epochs)
        updates: queue.Queue[dict[str, Any] | FinalTrainingResult | BaseException] = queue.Queue()

        def check_alive() -> None:
            if not context.is_active():
                raise Cancelled("the caller went away")

        def work() -> None:
            try:
                updates.put(full_train(self.backend, arch, space, budget, out, updates.put, check_alive))
            except BaseException as err:
                updates.put(err)

        threading.Thread(target=work, name=f"fulltrain-{arch.archid[:8]}", daemon=True).start()
        while True:
            item = updates.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, FinalTrainingResult):
                # the last message repeats the final epoch's figures (as metrics.json has them), also when
                # a resumed training had no epoch left to run
                if item.history:
                    done = _epoch(arch.archid, item.history[-1], epochs)
                else:
                    done = trainer_pb2.FullTrainProgress(archid=arch.archid, epochs=epochs)
                done.epoch = item.epochs_done
                done.done = True
                done.output_dir = str(item.output_dir)
                done.onnx_path = str(item.onnx_path)
                done.resumed_from = item.resumed_from
                yield done
                return
            yield _epoch(arch.archid, item, epochs)


def _epoch(archid: str, record: dict[str, Any], epochs: int) -> trainer_pb2.FullTrainProgress:
    """One epoch's record of :func:`~facenas.train.final.train_final` as a progress message."""
    return trainer_pb2.FullTrainProgress(
        archid=archid,
        epoch=int(record["epoch"]),
        epochs=epochs,
        train_loss=float(record["train_loss"]),
        val_miou=float(record["val_miou"]),
        val_miou_global=float(record["val_miou_global"]),
        seconds=float(record["seconds"]),
    )
