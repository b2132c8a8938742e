"""A search on your own data with one command: ``facenas search run`` (Archai's ``search.py``).

It starts the services as processes on loopback -- the store as a SQLite file in the output directory,
trainers on the GPUs found (or the CPU), latency_cpu, and latency_snp when the target needs it -- and
waits until each one's health is SERVING (one that stays NOT_SERVING, e.g. its dataset or data cache is
missing, stops the run with the service's name and reason), runs the search with live progress,
writes Archai's outputs into the output directory and stops everything.
The output directory remembers its search (``search.json``): the same command again resumes it, and
the store, being the cache, re-evaluates nothing that finished. Every process of the run shares one
quiet gate, so CPU latency is never measured while a training step runs on the same cores.

``backend="sim"`` starts the objective services with ``--backend sim`` instead: simulated values under
target keys of their own, no dataset, no training, each evaluation taking ``sim_delay`` -- a search
config or an algorithm tried in minutes (see :mod:`facenas.workers.sim`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from facenas.errors import ConfigError, InvalidInput
from facenas.launcher import LocalCluster, ServiceProcess
from facenas.search.config import SearchConfig, parse_search_config

STATE_FILE = "search.json"
#: Archai runs two partial trainings per GPU (``--gpus_per_job 0.5``).
JOBS_PER_GPU = 2
BACKENDS = ("real", "sim")


@dataclass(frozen=True)
class TrainerPlan:
    """One trainer process: its devices, trainings per device and torch CPU threads."""

    device: str
    capacity: int
    threads: int


@dataclass(frozen=True)
class LocalRunSettings:
    """What ``facenas search run`` was asked for."""

    config_text: str
    dataset_dir: Path | None  # None only with backend "sim"
    output_dir: Path
    trainers: int | None = None  # CPU trainer processes (default: 1 per 2 cores, at most 4)
    device: str = "auto"  # auto (every GPU, else the CPU), cpu, cuda, cuda:N[,cuda:M...]
    jobs_per_device: int | None = None  # default: 2 per GPU (Archai), 1 on the CPU
    serial: bool = False  # one training at a time (Archai's --serial_training)
    name: str = ""
    val_fraction: float = 0.02  # Archai's split: 2 % validation, 10 % test
    data_cache: bool = True  # decode the dataset once into a cache at the training size first
    backend: str = "real"  # real: train and measure; sim: simulated values (facenas.workers.sim)
    sim_delay: str = "0"  # --sim-delay of every objective service with backend "sim"
    sim_seed: int = 0

    def config(self) -> SearchConfig:
        return parse_search_config(self.config_text)

    def backend_label(self) -> str:
        """The backend with what changes its values' target keys: ``real`` or ``sim --sim-seed N``."""
        return "real" if self.backend == "real" else f"sim --sim-seed {self.sim_seed}"

    def check(self) -> None:
        """InvalidInput for settings no run can start with (a missing dataset, a bad --sim-delay)."""
        if self.backend not in BACKENDS:
            raise InvalidInput(f"--backend: {self.backend!r} must be one of {', '.join(BACKENDS)}")
        if self.backend == "sim":
            from facenas.sim.delay import DelayError, parse_delay

            try:
                parse_delay(self.sim_delay)
            except DelayError as err:
                raise InvalidInput(f"--sim-delay: {err}") from None
            return
        if self.dataset_dir is None:
            raise InvalidInput("--dataset-dir: required (except with --backend sim)")
        if not self.dataset_dir.is_dir():
            raise InvalidInput(f"--dataset-dir: {self.dataset_dir} is not a directory")


@dataclass(frozen=True)
class LocalRunResult:
    search_id: str
    status: str
    resumed: bool
    evaluations_run: int  # results this run produced (0 when the store already had everything)
    seconds: float
    output_dir: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "search_id": self.search_id,
            "status": self.status,
            "resumed": self.resumed,
            "evaluations_run": self.evaluations_run,
            "seconds": round(self.seconds, 2),
            "output_dir": str(self.output_dir),
        }


def plan_trainers(settings: LocalRunSettings, gpus: int, cpus: int) -> list[TrainerPlan]:
    """Trainer processes for this host: one per GPU (``jobs_per_device`` trainings each), else CPU ones."""
    if settings.device not in ("auto", "cpu") and gpus == 0:
        raise ConfigError([f"--device {settings.device}: no CUDA GPU is visible on this host"])
    use_gpus = settings.device != "cpu" and gpus > 0
    if use_gpus:
        if settings.device in ("auto", "cuda"):
            devices = [f"cuda:{i}" for i in range(gpus)]
        else:
            devices = [d.strip() for d in settings.device.split(",") if d.strip()]
        per_device = 1 if settings.serial else settings.jobs_per_device or JOBS_PER_GPU
        plans = [TrainerPlan(d, per_device, max(1, cpus // len(devices))) for d in devices]
        return plans[:1] if settings.serial else plans
    count = 1 if settings.serial else settings.trainers or max(1, min(4, cpus // 2))
    per_device = 1 if settings.serial else settings.jobs_per_device or 1
    return [TrainerPlan("cpu", per_device, max(1, cpus // count)) for _ in range(count)]


def run_local_search(settings: LocalRunSettings, console: Console, gpus: int | None = None) -> LocalRunResult:
    """Start the services, run or resume the output directory's search, write outputs, stop."""
    from facenas.cli.search import follow
    from facenas.rpc.client import call
    from facenas.rpc.security import token_from_env
    from facenas.v1 import searcher_pb2, searcher_pb2_grpc, store_pb2

    config = settings.config()
    settings.check()
    simulated = settings.backend == "sim"
    dataset = None if simulated or settings.dataset_dir is None else settings.dataset_dir.resolve()
    out = settings.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with _exclusive(out):
        search_id, resumed = _search_id(out, settings, dataset)
        seq_before = _last_seq(out, search_id)
        if simulated:  # no GPU needed (nor torch imported to count them)
            plans = plan_trainers(replace(settings, device="cpu"), 0, os.cpu_count() or 1)
        else:
            plans = plan_trainers(settings, _gpus() if gpus is None else gpus, os.cpu_count() or 1)
        if dataset is None:
            objective_flags = ["--backend", "sim", "--sim-delay", settings.sim_delay]
            objective_flags += ["--sim-seed", str(settings.sim_seed)]
        else:
            cache = (
                prepare_data_cache(dataset, config.img_size, out, console) if settings.data_cache else "none"
            )
            objective_flags = ["--dataset-dir", str(dataset), "--val-fraction", f"{settings.val_fraction:g}"]
            objective_flags += ["--data-cache", cache]
        env = {"FACENAS_QUIET_LOCK": str(out / "quiet.lock")}
        with LocalCluster(out / "logs", env=env) as cluster:
            with console.status("starting services"):
                searcher = _start_services(cluster, config, out, plans, objective_flags, simulated)
            where = "simulated" if simulated else f"on {', '.join(sorted({p.device for p in plans}))}"
            console.print(
                f"services up in {time.perf_counter() - began:.1f} s ({len(plans)} trainer(s) {where}); "
                f"logs in {out / 'logs'}"
            )
            if simulated:
                console.print(
                    f"--backend sim: every value is simulated (target keys sim:...), each evaluation taking "
                    f"{settings.sim_delay} s; for trying a config or an algorithm, not for choosing a model"
                )
            token = token_from_env(cluster.env)  # the searcher requires it when FACENAS_API_TOKEN* is set
            stub = searcher_pb2_grpc.SearcherStub(cluster.channel(searcher.address, token))
            request = searcher_pb2.StartSearchRequest(
                config=settings.config_text, name=settings.name or out.name, search_id=search_id
            )
            summary = call(stub.StartSearch, request, 60.0)
            if summary.search.status != store_pb2.SEARCH_STATUS_COMPLETED:
                summary = call(stub.ResumeSearch, searcher_pb2.SearchRef(search_id=search_id), 60.0)
            verb = "resuming" if resumed else "started"
            console.print(f"search {search_id} {verb}; live progress below")
            follow(stub, search_id, out, json_out=False, display=console)
            final = call(stub.GetSearch, searcher_pb2.SearchRef(search_id=search_id), 60.0)
            status = store_pb2.SearchStatus.Name(final.search.status).removeprefix("SEARCH_STATUS_").lower()
        run = _evaluations_since(out, search_id, seq_before)
    result = LocalRunResult(search_id, status, resumed, run, time.perf_counter() - began, out)
    console.print(
        f"{status}: {run} evaluation(s) run now"
        + (" (the rest came from the store)" if resumed else "")
        + f"; outputs in {out}; {result.seconds:.0f} s"
    )
    return result


def prepare_data_cache(dataset: Path, img_size: tuple[int, int], out: Path, console: Console) -> str:
    """Decode the dataset once at the training size (all cores, resumable) unless a fresh cache is there;
    returns the services' ``--data-cache``: the dataset's own cache folder where it is writable, else one
    in the output directory."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from facenas.data.cache import cache_status, default_cache_dir, prepare_cache

    w, h = img_size
    if os.access(dataset, os.W_OK):
        directory, setting = default_cache_dir(dataset, img_size), "auto"
    else:
        directory, setting = out / "data-cache" / f"{w}x{h}", str(out / "data-cache")
    if cache_status(directory, dataset, img_size).state == "fresh":
        return setting
    with Progress(
        "decoding the dataset once", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    ) as progress:
        task = progress.add_task("cache", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        manifest = prepare_cache(dataset, img_size, directory, on_progress=advance)
    console.print(f"data cache of {manifest.count} frames at {w}x{h} in {directory}")
    return setting


def _start_services(
    cluster: LocalCluster,
    config: SearchConfig,
    out: Path,
    plans: list[TrainerPlan],
    objective_flags: list[str],
    simulated: bool,
) -> ServiceProcess:
    """The store, the trainers of ``plans``, latency_cpu, latency_snp for an snp target and the searcher;
    ``objective_flags`` go to every objective service (the dataset's, or ``--backend sim``'s)."""
    store = cluster.start("store", ["--url", f"sqlite:///{out / 'store.db'}"])
    data = objective_flags
    trainers = [
        cluster.start(
            "trainer",
            [*data, "--device", p.device, "--capacity", str(p.capacity), "--threads", str(p.threads)],
            name=f"trainer-{i + 1}",
        )
        for i, p in enumerate(plans)
    ]
    workers = ["--trainer", ",".join(t.address for t in trainers)]
    latency = cluster.start("latency_cpu", [*(data if simulated else []), "--threads", "1"])
    workers += ["--latency-cpu", latency.address]
    if config.target == "snp":
        snp = cluster.start("latency_snp", [*data, "--threads", "1"])
        workers += ["--latency-snp", snp.address]
    return cluster.start("searcher", ["--store", store.address, *workers])


def _search_id(out: Path, settings: LocalRunSettings, dataset: Path | None) -> tuple[str, bool]:
    """The output directory's search: (id, True) when it already holds one for this config, data and
    backend (a simulated search is never resumed with real services, nor the other way round)."""
    digest = hashlib.sha256(settings.config_text.encode()).hexdigest()
    state_path = out / STATE_FILE
    data = "" if dataset is None else str(dataset)
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            search_id, config_sha, data_dir = state["search_id"], state["config_sha256"], state["dataset_dir"]
            backend = state.get("backend", "real")  # (none before the simulation backend)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise InvalidInput(f"{state_path} is unreadable ({err}); use another --output-dir") from err
        problems = []
        if config_sha != digest:
            problems.append(
                f"the search config differs from the one search {search_id} in {out} started with"
            )
        if backend != settings.backend_label():
            problems.append(f"the backend differs: {out} holds a search run with --backend {backend}")
        elif data_dir != data:
            problems.append(f"the dataset differs: {out} holds a search on {data_dir}")
        if problems:
            raise ConfigError([*problems, "use another --output-dir for a new search"])
        return str(search_id), True
    search_id = f"run-{digest[:12]}"
    state = {
        "search_id": search_id,
        "config_sha256": digest,
        "dataset_dir": data,
        "backend": settings.backend_label(),
    }
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    tmp.replace(state_path)
    return search_id, False


def _last_seq(out: Path, search_id: str) -> int:
    """The search's last event number in the output directory's store (0 before it exists)."""
    from facenas.errors import NotFound
    from facenas.store import open_store

    if not (out / "store.db").exists():
        return 0
    store = open_store(f"sqlite:///{out / 'store.db'}")
    try:
        events = store.list_events(search_id, 0, 1_000_000)
    except NotFound:
        return 0
    finally:
        store.close()
    return events[-1].seq if events else 0


def _evaluations_since(out: Path, search_id: str, seq: int) -> int:
    from facenas.store import open_store

    store = open_store(f"sqlite:///{out / 'store.db'}")
    try:
        return sum(1 for e in store.list_events(search_id, seq, 1_000_000) if e.kind == "evaluation")
    finally:
        store.close()


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One run per output directory at a time."""
    with (out / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidInput(f"--output-dir: another facenas search run is using {out}") from None
        yield
