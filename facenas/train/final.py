"""Final training of one architecture (Archai's ``train.py``), resumable from checkpoints.

Layout of ``output_dir``: ``arch.json``, ``checkpoints/epoch_NNN.ckpt`` (one per epoch),
``checkpoints/last.ckpt``, then ``model.ckpt`` (weights), ``model.onnx`` and ``metrics.json``.
Every file is written to a temporary name and renamed, so a crash never leaves a torn checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from facenas.errors import InvalidInput
from facenas.model import build_model, export_onnx, verify_onnx
from facenas.space.hgnet import Arch
from facenas.space.params import SearchSpaceParams
from facenas.train.accel import resolve_accel
from facenas.train.loop import Batch, TrainingConfig, evaluate, make_loader, resolve_device, train_steps

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class FinalTrainingResult:
    """Where the outputs went and the per-epoch history."""

    output_dir: Path
    epochs_done: int
    resumed_from: int
    history: list[dict[str, Any]]
    onnx_path: Path

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["output_dir"] = str(self.output_dir)
        out["onnx_path"] = str(self.onnx_path)
        return out


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _save(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _load_last(checkpoints: Path, archid: str) -> dict[str, Any] | None:
    last = checkpoints / "last.ckpt"
    if not last.exists():
        return None
    state: dict[str, Any] = torch.load(last, map_location="cpu", weights_only=False)
    if state.get("archid") != archid:
        raise InvalidInput(
            f"{last} belongs to architecture {state.get('archid')}, not {archid}; "
            "use another --output-dir or remove the checkpoints"
        )
    return state


def train_final(
    arch: Arch,
    params: SearchSpaceParams,
    train_set: torch.utils.data.Dataset[Batch],
    val_set: torch.utils.data.Dataset[Batch],
    output_dir: str | Path,
    epochs: int,
    config: TrainingConfig,
    on_epoch: EpochCallback | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> FinalTrainingResult:
    """Train ``arch`` for ``epochs`` epochs, resuming from ``output_dir/checkpoints/last.ckpt``."""
    if epochs < 1:
        raise InvalidInput(f"epochs: {epochs} must be >= 1")
    out = Path(output_dir)
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "arch.json", lambda tmp: tmp.write_text(arch.to_json(), encoding="utf-8"))

    state = _load_last(checkpoints, arch.archid)
    accel = resolve_accel(resolve_device(config.device), config.num_workers, config.precision)
    torch.manual_seed(config.seed)
    model = accel.setup(build_model(arch.spec, params.num_classes, params.in_channels))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scaler = accel.grad_scaler()
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])

    workers, pin = accel.loader_workers, accel.pin_memory
    val_loader = make_loader(val_set, config.eval_batch_size, False, config.seed, workers, pin)
    for epoch in range(start_epoch + 1, epochs + 1):
        loader = make_loader(train_set, config.batch_size, True, config.seed + epoch, workers, pin)
        began = time.perf_counter()
        steps = train_steps(model, loader, optimizer, len(loader), accel.device, on_step, accel, scaler)
        losses = steps.losses
        meter = evaluate(model, val_loader, params.num_classes, accel.device, config.max_eval_batches, accel)
        record = {
            "epoch": epoch,
            "train_loss": sum(losses) / len(losses),
            "val_miou": meter.archai_miou,
            "val_miou_global": meter.global_miou,
            "seconds": time.perf_counter() - began,
        }
        history.append(record)
        snapshot = {
            "archid": arch.archid,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "history": history,
            "config": asdict(config),
        }
        _save(snapshot, checkpoints / f"epoch_{epoch:03d}.ckpt")
        _save(snapshot, checkpoints / "last.ckpt")
        if on_epoch is not None:
            on_epoch(record)

    accel.release(model).cpu()
    _save(model.state_dict(), out / "model.ckpt")
    export = export_onnx(model, params.img_size, params.in_channels)
    diff = verify_onnx(model, export, atol=1e-3)
    onnx_path = out / "model.onnx"
    _atomic_write(onnx_path, lambda tmp: tmp.write_bytes(export.model_bytes))
    metrics = {"archid": arch.archid, "epochs": epochs, "history": history, "onnx_max_abs_diff": diff}
    _atomic_write(out / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics, indent=2)))
    return FinalTrainingResult(out, epochs, start_epoch, history, onnx_path)
