"""The simulation backend (``--backend sim``): deterministic, labelled values under keys of their own,
seeded delays that report progress and honour cancellation, refused bad flags, and no torch."""

from __future__ import annotations

import functools
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from facenas.domain import Budget, EvalKey, EvalSpace, JobState
from facenas.errors import Cancelled, ConfigError, InvalidInput
from facenas.jobs import JobManager, JobSpec, JobView
from facenas.localrun import LocalRunSettings, _search_id
from facenas.sim.cost import CPU_FP32, SNP_INT8, Cost, cost_of
from facenas.sim.delay import Delay, DelayError, parse_delay, spend
from facenas.space import HgnetSearchSpace, ParamRange, SearchSpaceParams
from facenas.space.hgnet import Arch
from facenas.workers.base import DetachedWork, TargetInfo
from facenas.workers.sim import (
    CPU_LATENCY,
    IOU,
    KINDS,
    QUANTIZED_IOU,
    SERVICE_OBJECTIVES,
    SNP_LATENCY,
    SimBackend,
)
from tests.timing import scaled

ROOT = Path(__file__).resolve().parents[2]
SPACE = EvalSpace(img_size=(64, 64))
BUDGET = Budget(steps=30, batch_size=16)
ALL = tuple(KINDS)


@functools.cache
def archs(n: int = 4) -> list[Arch]:
    space = HgnetSearchSpace(SearchSpaceParams(img_size=(64, 64)), seed=5)
    found: dict[str, Arch] = {}
    while len(found) < n:
        arch = space.sample_valid(ParamRange(1e5, 2e6))
        found[arch.archid] = arch
    return list(found.values())


def values(backend: SimBackend, arch: Arch, budget: Budget = BUDGET) -> dict[str, float]:
    return {o: backend.evaluate(arch, o, SPACE, budget, DetachedWork()).value for o in backend.objectives}


@dataclass
class RecordingWork:
    """A Work that records reports and is cancelled by setting ``cancelled``."""

    device: str = "cpu"
    reports: list[tuple[str, int, int, float | None]] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    first_report: threading.Event = field(default_factory=threading.Event)

    def check_alive(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled("cancelled by the test")

    def report(self, phase: str, step: int = 0, total: int = 0, loss: float | None = None) -> None:
        self.reports.append((phase, step, total, loss))
        self.first_report.set()
        self.check_alive()


# --- values ------------------------------------------------------------------------------------------


def test_values_are_deterministic_per_arch_objective_budget_and_seed() -> None:
    arch, other = archs()[:2]
    first = values(SimBackend(ALL, seed=3), arch)
    assert first == values(SimBackend(ALL, seed=3), arch)  # another process would compute the same
    assert first != values(SimBackend(ALL, seed=3), other)
    reseeded = values(SimBackend(ALL, seed=4), arch)
    assert all(reseeded[o] != first[o] for o in ALL)
    longer = values(SimBackend(ALL, seed=3), arch, replace(BUDGET, steps=60))
    assert longer[IOU] > first[IOU] and longer[QUANTIZED_IOU] > first[QUANTIZED_IOU]
    assert longer[CPU_LATENCY] == first[CPU_LATENCY]  # a latency's key names no training budget
    assert 0 < first[QUANTIZED_IOU] < first[IOU] < 1 and 0 < first[SNP_LATENCY] < first[CPU_LATENCY]


def test_every_result_is_labelled_simulated_under_a_target_key_no_real_backend_makes() -> None:
    backend = SimBackend(ALL, seed=7)
    keys = set()
    for objective in ALL:
        target = backend.target(objective, SPACE)
        assert target.simulated and target.key.startswith("sim:") and not target.emulated
        assert "seed7" in target.key and "not a measurement" in target.description
        keys.add(target.key)
        result = backend.evaluate(archs()[0], objective, SPACE, BUDGET, DetachedWork())
        assert result.details["simulated"] is True and result.details["seed"] == 7
    assert len(keys) == len(ALL)
    assert backend.target(CPU_LATENCY, SPACE).key.endswith("/64x64")
    assert SimBackend(ALL, seed=8).target(IOU, SPACE).key != backend.target(IOU, SPACE).key
    for real in ("cpu/3f2a9c1b07de/t1/64x64", "train/faces-40-0a1b2c3d4e/val0.02-test0.1", "snpe/x"):
        assert not TargetInfo(real, "").simulated


def test_a_real_cpu_latency_key_is_not_simulated() -> None:
    from facenas.workers.cpu_latency import CpuLatencyBackend

    assert not CpuLatencyBackend().target(CPU_LATENCY, SPACE).simulated


def test_the_learning_curve_is_monotone_in_steps_and_saturates() -> None:
    backend = SimBackend((IOU, QUANTIZED_IOU))
    for arch in archs():
        curve = [
            values(backend, arch, replace(BUDGET, steps=s)) for s in (1, 10, 100, 1_000, 10_000, 100_000)
        ]
        ious = [v[IOU] for v in curve]
        assert all(a < b for a, b in itertools.pairwise(ious)), ious
        assert 0 < ious[0] < 0.05 and 0.5 < ious[-1] < 1
        assert all(v[QUANTIZED_IOU] < v[IOU] for v in curve)
    epoch = values(backend, archs()[0], Budget(epochs=1.0, batch_size=16))  # 5,500 steps of an 88k epoch
    assert values(backend, archs()[0], replace(BUDGET, steps=5_500))[IOU] == epoch[IOU]


def test_latency_follows_compute_memory_and_ops() -> None:
    arch = archs()[0]
    cost = cost_of(arch.spec, 18, (64, 64))
    assert cost.macs == arch.spec.macs(18, (64, 64)) and cost.params == arch.spec.num_parameters(18)
    for model in (CPU_FP32, SNP_INT8):
        base = model.seconds(cost)
        for more in ("macs", "activations", "weights", "ops"):
            assert model.seconds(replace(cost, **{more: getattr(cost, more) * 2})) > base
    bigger = cost_of(arch.spec, 18, (128, 128))
    assert CPU_FP32.seconds(bigger) > 3 * CPU_FP32.seconds(cost)
    assert isinstance(cost, Cost) and cost.to_dict()["ops"] == cost.ops


def test_an_image_size_the_arch_cannot_take_is_refused_as_the_real_backends_do() -> None:
    with pytest.raises(InvalidInput, match="multiples of"):
        SimBackend(ALL).evaluate(archs()[0], IOU, EvalSpace(img_size=(66, 64)), BUDGET, DetachedWork())
    with pytest.raises(InvalidInput, match="objective"):
        SimBackend((IOU,)).evaluate(archs()[0], CPU_LATENCY, SPACE, BUDGET, DetachedWork())


# --- delays ------------------------------------------------------------------------------------------


def test_delays_parse_in_every_form() -> None:
    assert parse_delay("0") == Delay("fixed", 0.0) and parse_delay(" 2.5 ") == Delay("fixed", 2.5)
    assert parse_delay("uniform:1,3") == Delay("uniform", 1.0, 3.0)
    assert parse_delay("lognormal:2,0.5") == Delay("lognormal", 2.0, 0.5)
    bad = {
        "": "must be SECONDS",
        "soon": "must be SECONDS",
        "-1": "negative or non-finite",
        "nan": "negative or non-finite",
        "uniform:3,1": "has LOW 3 > HIGH 1",
        "uniform:1": "must be SECONDS",
        "gamma:1,2": "must be SECONDS",
        "lognormal:1,9": "SIGMA 9",
        "1e9": "at most 86400",
    }
    for text, problem in bad.items():
        with pytest.raises(DelayError, match=problem):
            parse_delay(text)


def test_drawn_delays_are_fixed_per_evaluation() -> None:
    for delay in (parse_delay("uniform:1,3"), parse_delay("lognormal:2,0.5")):
        draws = [delay.draw(0, archid, IOU, "steps=3") for archid in ("a", "b", "c", "d")]
        assert draws == [delay.draw(0, archid, IOU, "steps=3") for archid in ("a", "b", "c", "d")]
        assert len(set(draws)) == 4 and all(d > 0 for d in draws)
        assert delay.draw(1, "a", IOU, "steps=3") != draws[0]  # the seed changes them
    assert all(1 <= parse_delay("uniform:1,3").draw(i) <= 3 for i in range(50))
    assert parse_delay("2.5").draw("anything") == 2.5


def test_bad_sim_flags_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.latency_cpu import server as latency_cpu
    from services.latency_snp import server as latency_snp
    from services.trainer import server as trainer

    for service in (trainer, latency_cpu, latency_snp):
        args, problems = service.parser().parse(["--backend", "sim", "--sim-delay", "uniform:1,3"])
        assert problems == [] and args.sim_delay == Delay("uniform", 1, 3)  # no --dataset-dir needed
        _, problems = service.parser().parse(["--backend", "sim", "--sim-delay", "uniform:3,1"])
        assert problems == ["--sim-delay: 'uniform:3,1' has LOW 3 > HIGH 1"]
    monkeypatch.setenv("FACENAS_SIM_DELAY", "later")
    monkeypatch.setenv("FACENAS_SIM_SEED", "-2")
    assert trainer.main(["--backend", "sim", "--port", "0"]) == 2  # nothing starts
    err = capsys.readouterr().err
    assert "--sim-delay (FACENAS_SIM_DELAY): 'later' must be SECONDS, uniform:LOW,HIGH" in err
    assert "--sim-seed (FACENAS_SIM_SEED): '-2' must be in [0, " in err
    _, problems = trainer.parser().parse(["--backend", "torch"])
    assert "--dataset-dir (or FACENAS_DATASET_DIR): required except by --backend sim" in problems


def test_a_delay_reports_steps_as_training_does() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    work = RecordingWork()
    spend(1.0, work, "train", 40, lambda step: 2.0 - step / 40, sleep=sleep, clock=lambda: now[0])
    steps = [step for _, step, _, _ in work.reports]
    assert steps[0] == 0 and steps[-1] == 40 and steps == sorted(steps) and len(steps) == 11  # 0.1 s ticks
    assert now[0] == pytest.approx(1.0)
    assert all(phase == "train" and total == 40 for phase, _, total, _ in work.reports)
    assert work.reports[-1][3] == pytest.approx(1.0)

    instant = RecordingWork()
    SimBackend((IOU,)).evaluate(archs()[0], IOU, SPACE, BUDGET, instant)
    assert [(p, s, t) for p, s, t, _ in instant.reports] == [("train", 0, 30), ("train", 30, 30)]
    losses = [loss for *_, loss in instant.reports]
    assert losses[0] is not None and losses[1] is not None and losses[1] < losses[0]


def test_cancellation_stops_a_delay() -> None:
    backend = SimBackend((IOU,), Delay("fixed", 3600.0))
    work = RecordingWork()
    raised: list[BaseException] = []

    def evaluate() -> None:
        try:
            backend.evaluate(archs()[0], IOU, SPACE, BUDGET, work)
        except BaseException as err:
            raised.append(err)

    thread = threading.Thread(target=evaluate, daemon=True)
    thread.start()
    assert work.first_report.wait(scaled(10))
    work.cancelled.set()
    thread.join(scaled(10))
    assert not thread.is_alive() and len(raised) == 1 and isinstance(raised[0], Cancelled)


def _first(manager: JobManager, job_id: str, wanted: Callable[[JobView], bool]) -> JobView:
    """The first view of the job that is ``wanted`` or finished (followed, never polled)."""
    for view in manager.follow(job_id, heartbeat_s=0.05, min_interval_s=0):
        if wanted(view) or view.state.finished:
            return view
    raise AssertionError("follow ended early")


def test_a_cancelled_job_frees_its_slot_during_the_delay() -> None:
    backend = SimBackend((IOU,), Delay("fixed", 3600.0))
    manager = JobManager(backend, "trainer", ["cpu"])  # one slot: the second job runs once it is free
    try:
        specs = []
        for arch in archs()[:2]:
            target = backend.target(IOU, SPACE)
            key = EvalKey(arch.archid, IOU, BUDGET.key(SPACE.img_size), target.key)
            specs.append(JobSpec(key, arch, SPACE, BUDGET, target))
        first = manager.submit(specs[0], "s")[0]
        second = manager.submit(specs[1], "s")[0]
        running = _first(manager, first.job_id, lambda view: view.state == JobState.RUNNING)
        assert running.state == JobState.RUNNING
        assert manager.cancel(first.job_id, "s")[0].state == JobState.CANCELLED
        training = _first(manager, second.job_id, lambda view: view.progress.phase == "train")
        assert training.state == JobState.RUNNING and training.progress.total == 30
    finally:
        manager.cancel("", "s")
        manager.close()


# --- no torch, local runs ----------------------------------------------------------------------------

_NO_TORCH = """
import json, sys
from facenas.domain import Budget, EvalSpace
from facenas.workers.base import DetachedWork, parse_arch
import services.trainer.server, services.latency_cpu.server, services.latency_snp.server
space = EvalSpace(img_size=(64, 64))
arch = parse_arch(sys.argv[1], sys.argv[2], space)
values = {}
for name in ("trainer", "latency_cpu", "latency_snp"):
    server = sys.modules[f"services.{name}.server"]
    args, problems = server.parser().parse(["--backend", "sim", "--sim-delay", "0"])
    assert not problems, problems
    registrations, stop, probes = server.build(args)
    stop()
    from facenas.sim.flags import sim_backend
    backend = sim_backend(name, args)
    for objective in backend.objectives:
        values[objective] = backend.evaluate(arch, objective, space, Budget(steps=5), DetachedWork()).value
heavy = [m for m in ("torch", "onnxruntime") if m in sys.modules]
from facenas.space import HgnetSearchSpace, SearchSpaceParams  # Archai's search space still works after
sampled = HgnetSearchSpace(SearchSpaceParams(img_size=(64, 64)), seed=1).random_sample().archid
print(json.dumps({"heavy": heavy, "values": values, "sampled": sampled}))
"""


@pytest.mark.slow
def test_sim_workers_never_import_torch() -> None:
    arch = archs()[0]
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, arch.to_json(), arch.archid],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert (
        result["sampled"]
        == HgnetSearchSpace(SearchSpaceParams(img_size=(64, 64)), seed=1).random_sample().archid
    )
    assert set(result["values"]) == set(ALL)
    here = SimBackend(ALL)
    for objective, value in result["values"].items():  # the same values in another process
        assert value == here.evaluate(arch, objective, SPACE, Budget(steps=5), DetachedWork()).value


def test_search_run_settings_for_the_simulation(tmp_path: Path) -> None:
    sim = LocalRunSettings("config", None, tmp_path, backend="sim", sim_delay="uniform:1,2")
    sim.check()  # no dataset needed
    with pytest.raises(InvalidInput, match="--sim-delay: 'uniform:2,1' has LOW 2 > HIGH 1"):
        replace(sim, sim_delay="uniform:2,1").check()
    with pytest.raises(InvalidInput, match="--dataset-dir: required"):
        replace(sim, backend="real").check()
    with pytest.raises(InvalidInput, match="--backend"):
        replace(sim, backend="fake").check()
    search_id, resumed = _search_id(tmp_path, sim, None)
    assert not resumed and _search_id(tmp_path, sim, None) == (search_id, True)
    with pytest.raises(ConfigError, match=r"the backend differs.*--backend sim --sim-seed 0"):
        _search_id(tmp_path, replace(sim, backend="real", dataset_dir=tmp_path), tmp_path)
    with pytest.raises(ConfigError, match="the backend differs"):
        _search_id(tmp_path, replace(sim, sim_seed=1), None)  # other seeds, other target keys


def test_every_service_simulates_its_own_objectives() -> None:
    assert SERVICE_OBJECTIVES == {
        "trainer": (IOU,),
        "latency_cpu": (CPU_LATENCY,),
        "latency_snp": (SNP_LATENCY, QUANTIZED_IOU),
    }
    with pytest.raises(InvalidInput, match="no simulation"):
        SimBackend(("Model Size (b)",))
