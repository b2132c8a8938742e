"""ONNX Runtime CPU latency, measured reproducibly.

Archai timed ONE ``session.run`` with no warm-up under ORT's default threading, which makes the figure
depend on first-run allocation and on the host's load. Here a measurement is:

* a session with fixed, recorded options: ``intra_op_threads`` (default 1; 0 = "all cores" is refused
  because it ties the result to the host's core count and load), sequential execution, no spinning
  (a spinning pool burns the only other core of a 2-core VM, slowing whatever else runs there; with
  one intra-op thread there is no pool and spinning is moot);
* a warm-up (first runs pay for allocation and cache misses), bounded by run count and time;
* ``rounds`` x ``runs_per_round`` back-to-back runs, each timed with ``perf_counter_ns`` around
  ``session.run`` alone, in a tight sleep-free loop with the garbage collector paused;
* optionally the calling thread (which runs the graph when ``intra_op_threads`` is 1) and ORT's pool
  threads pinned to fixed CPUs; off by default: on a shared 2-core VM a pinned thread cannot escape a core
  another process is using, and pinning showed no gain in dispersion there;
* per round, the measuring thread's CPU time against wall time and the host's other runnable tasks
  (:mod:`facenas.latency.contention`): an attempt whose ``cpu_fraction`` is below ``min_cpu_fraction``
  ran on a contended host, whatever its ``cv``;
* a fresh attempt (new session, new warm-up) while no attempt is both uncontended and within
  ``cv_target``, up to ``max_attempts`` and within ``max_seconds``; the uncontended attempt with the
  lowest ``cv`` is kept (if all were contended, the one with the highest ``cpu_fraction``);
* the kept attempt is ``stable`` if uncontended and its ``cv`` is at most ``max_cv``; otherwise
  ``unstable_reasons`` says why and :func:`ensure_stable` refuses it.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from facenas.errors import ArchNotEvaluable, InvalidInput, MeasurementError, UnstableMeasurement
from facenas.latency.contention import RoundMeter, RoundUsage, Usage, contention_reasons
from facenas.latency.host import HostInfo, host_info

PROVIDER = "CPUExecutionProvider"

_OPT_LEVELS: dict[str, Any] = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_EXEC_MODES: dict[str, Any] = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}
_INPUT_DTYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}

# The sample clock; a module attribute so tests can substitute a fake one. Budgets use time.monotonic.
_now_ns: Callable[[], int] = time.perf_counter_ns


def _bad(field: str, problem: str) -> InvalidInput:
    """Return an InvalidInput naming a protocol field."""
    return InvalidInput(f"LatencyProtocol.{field}: {problem}")


@dataclass(frozen=True)
class LatencyProtocol:
    """How to measure; every value is validated on construction and recorded with each result.

    ``warmup_runs`` warm-up runs are made (at least one), continuing until ``warmup_min_seconds`` have
    passed, but not beyond ``warmup_max_seconds``. ``rounds`` (>= 2, so that ``cv`` is defined) rounds of
    ``runs_per_round`` runs are then timed; fast models get more runs per round, enough to fill
    ``min_round_seconds`` (estimated from the fastest warm-up run), so that a round median does not
    rest on a handful of sub-millisecond runs. ``max_seconds`` bounds the whole measurement: no round
    starts past it once two are done, and a new attempt starts only if one more would still fit.

    Another attempt is made while no attempt is both within ``cv_target`` and uncontended (its
    ``cpu_fraction`` at least ``min_cpu_fraction``); the result is refused as unstable if it is contended
    or its ``cv`` exceeds ``max_cv`` (>= ``cv_target``). The defaults come from experiments on a 2-vCPU
    VM (docs/latency-contention.md): quiet and ``nice 19`` neighbours gave fractions of 0.93 to 1.0, a
    neighbour sharing the core 0.34 to 0.80. ``max_cv`` (0.20) is set above what quiet hosts give (a
    quarter of quiet measurements of small models on that VM exceeded 10 %, none 15 %): the median of 7
    round medians then has a standard error under 8 %. With several intra-op threads the fraction also
    counts pool threads' idle time (0.87 for a small model at 2 threads on a quiet host): lower the
    threshold there.
    """

    warmup_runs: int = 10
    warmup_min_seconds: float = 0.1
    warmup_max_seconds: float = 2.0
    rounds: int = 7
    runs_per_round: int = 10
    min_round_seconds: float = 0.05
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    execution_mode: str = "sequential"
    graph_optimization_level: str = "all"
    allow_spinning: bool = False
    pin_threads: bool = False
    cv_target: float = 0.03
    max_cv: float = 0.20
    min_cpu_fraction: float = 0.90
    max_attempts: int = 3
    max_seconds: float = 60.0

    def __post_init__(self) -> None:
        self._check_ints()
        self._check_floats()
        self._check_choices()

    def _check_ints(self) -> None:
        minima = {
            "warmup_runs": 0,
            "rounds": 2,
            "runs_per_round": 1,
            "intra_op_threads": 1,
            "inter_op_threads": 1,
            "max_attempts": 1,
        }
        for name, minimum in minima.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise _bad(name, f"must be an int, got {value!r}")
            if value < minimum:
                raise _bad(name, f"must be >= {minimum}, got {value}")

    def _check_floats(self) -> None:
        for name in (
            "warmup_min_seconds",
            "warmup_max_seconds",
            "min_round_seconds",
            "cv_target",
            "max_cv",
            "min_cpu_fraction",
            "max_seconds",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise _bad(name, f"must be a finite number, got {value!r}")
            if value < 0:
                raise _bad(name, f"must be >= 0, got {value}")
        if self.max_seconds <= 0:
            raise _bad("max_seconds", f"must be > 0, got {self.max_seconds}")
        if self.warmup_min_seconds > self.warmup_max_seconds:
            raise _bad("warmup_min_seconds", "must not exceed warmup_max_seconds")
        if self.max_cv < self.cv_target:
            raise _bad("max_cv", f"must be >= cv_target ({self.cv_target}), got {self.max_cv}")
        if self.min_cpu_fraction > 1:
            raise _bad("min_cpu_fraction", f"must be <= 1, got {self.min_cpu_fraction}")

    def _check_choices(self) -> None:
        for name in ("allow_spinning", "pin_threads"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, f"must be a bool, got {getattr(self, name)!r}")
        if self.execution_mode not in _EXEC_MODES:
            raise _bad("execution_mode", f"must be one of {sorted(_EXEC_MODES)}, got {self.execution_mode!r}")
        if self.graph_optimization_level not in _OPT_LEVELS:
            raise _bad(
                "graph_optimization_level",
                f"must be one of {sorted(_OPT_LEVELS)}, got {self.graph_optimization_level!r}",
            )

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-friendly dict."""
        return asdict(self)


DEFAULT_PROTOCOL = LatencyProtocol()


@dataclass(frozen=True)
class LatencyResult:
    """One latency measurement (the kept attempt), with everything needed to reproduce or reject it.

    Times are seconds per ``session.run``. ``median_s``, ``mean_s``, ``stdev_s`` (sample, n-1),
    ``p10_s``, ``p90_s``, ``min_s`` and ``max_s`` are over all ``samples`` runs of the kept attempt
    (``len(round_medians_s)`` rounds of ``runs_per_round`` runs).

    ``cv`` is the coefficient of variation of the per-round medians,
    ``stdev(round_medians_s, n-1) / mean(round_medians_s)``. It estimates how much a median over
    ``runs_per_round`` runs moves from one stretch of time to the next, i.e. how reproducible the
    reported median is: isolated outliers (a preemption, a page fault) barely move a round median, so
    they do not inflate it the way they inflate a per-sample stdev/mean, while sustained interference
    (a noisy neighbour, frequency changes) does. ``attempt_cvs`` lists the ``cv`` of every attempt made,
    in order; ``attempts`` is their count.

    A low ``cv`` does not prove an idle host: sustained contention shifts every round alike. So
    ``cpu_fraction`` is the CPU time the measuring thread got over the wall time of the kept attempt's
    timed rounds (``round_cpu_fractions`` per round, ``attempt_cpu_fractions`` per attempt), and
    ``neighbours`` the host's other runnable tasks sampled after each round (empty where unknown).
    ``contended`` is ``cpu_fraction < protocol.min_cpu_fraction``. ``stable`` is: not contended and
    ``cv <= protocol.max_cv``; ``unstable_reasons`` says why not (empty when stable). ``load_1min`` and
    ``load_1min_end`` are the host's 1-minute load average when measurement began and ended (``None``
    where unavailable).
    """

    median_s: float
    mean_s: float
    stdev_s: float
    cv: float
    p10_s: float
    p90_s: float
    min_s: float
    max_s: float
    samples: int
    runs_per_round: int
    round_medians_s: tuple[float, ...]
    attempts: int
    attempt_cvs: tuple[float, ...]
    stable: bool
    contended: bool
    unstable_reasons: tuple[str, ...]
    cpu_fraction: float
    round_cpu_fractions: tuple[float, ...]
    attempt_cpu_fractions: tuple[float, ...]
    neighbours: tuple[int, ...]
    intra_op_threads: int
    inter_op_threads: int
    pinned_cpus: tuple[int, ...]
    load_1min: float | None
    load_1min_end: float | None
    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: str
    seed: int
    onnxruntime_version: str
    provider: str
    protocol: LatencyProtocol
    host: HostInfo

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-friendly dict (tuples as lists, nested protocol and host as dicts)."""
        data: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        data["protocol"] = self.protocol.to_dict()
        data["host"] = self.host.to_dict()
        return data


@dataclass(frozen=True)
class _Attempt:
    """The raw timings of one attempt, in nanoseconds, grouped by round, and what the host did to it."""

    rounds_ns: tuple[tuple[int, ...], ...]
    usage: Usage

    @property
    def round_medians_s(self) -> tuple[float, ...]:
        return tuple(statistics.median(r) / 1e9 for r in self.rounds_ns)

    @property
    def cv(self) -> float:
        medians = self.round_medians_s
        mean = statistics.fmean(medians)
        if mean <= 0:
            raise MeasurementError("timer resolution too coarse: runs measured as taking no time")
        return statistics.stdev(medians) / mean

    def contention(self, protocol: LatencyProtocol, cpus: int) -> list[str]:
        """Return why this attempt counts as contended (empty: it does not)."""
        return contention_reasons(self.usage, protocol.min_cpu_fraction, cpus)

    def reasons(self, protocol: LatencyProtocol, cpus: int) -> list[str]:
        """Return why this attempt is not a stable result (empty: it is)."""
        reasons = self.contention(protocol, cpus)
        if self.cv > protocol.max_cv:
            reasons.append(f"cv {self.cv:.1%} > max_cv {protocol.max_cv:.1%}")
        return reasons


# ---------------------------------------------------------------------------------------------- session


def _model_source(model: bytes | str | Path) -> bytes | str:
    """Return what InferenceSession accepts: the bytes, or an existing file's path."""
    if isinstance(model, bytes):
        if not model:
            raise MeasurementError("cannot load ONNX model: the model bytes are empty")
        return model
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.is_file():
            raise InvalidInput(f"ONNX model file not found: {path}")
        return str(path)
    raise InvalidInput(f"model must be bytes, str or Path, got {type(model).__name__}")


def _session_options(protocol: LatencyProtocol, pool_cpus: Sequence[int]) -> Any:
    """Return the fixed SessionOptions of a protocol; ``pool_cpus`` pins ORT's pool threads."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = protocol.intra_op_threads
    opts.inter_op_num_threads = protocol.inter_op_threads
    opts.execution_mode = _EXEC_MODES[protocol.execution_mode]
    opts.graph_optimization_level = _OPT_LEVELS[protocol.graph_optimization_level]
    opts.log_severity_level = 3
    spin = "1" if protocol.allow_spinning else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    if pool_cpus:  # ORT wants 1-based logical processor ids, one per pool thread (not the caller's)
        opts.add_session_config_entry(
            "session.intra_op_thread_affinities", ";".join(str(c + 1) for c in pool_cpus)
        )
    return opts


#: onnxruntime's errors for a model it will not load (an invalid graph, an op or type it lacks). Others are
#: not the architecture's: bytes that do not parse (a truncated file), a bad session option (a plain
#: RuntimeError), no memory, a missing file.
_ORT_MODEL_ERRORS: tuple[type[BaseException], ...] = tuple(
    getattr(ort_state, name)
    for name in ("InvalidGraph", "NotImplemented", "Fail")
    if isinstance(getattr(ort_state, name, None), type)
)
_NO_MEMORY = ("bad_alloc", "out of memory", "failed to allocate")


def ort_rejects_model(exc: BaseException) -> bool:
    """Whether ``exc``, raised by onnxruntime loading or quantizing a model, is that model's fault."""
    return isinstance(exc, _ORT_MODEL_ERRORS) and not out_of_memory(exc)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the host ran out of memory (not the model's fault)."""
    return isinstance(exc, MemoryError) or any(word in str(exc).lower() for word in _NO_MEMORY)


def load_error(message: str, exc: BaseException) -> MeasurementError | ArchNotEvaluable:
    """The error for a model onnxruntime failed to load: ArchNotEvaluable when the model is to blame."""
    return ArchNotEvaluable(message) if ort_rejects_model(exc) else MeasurementError(message)


def _make_session(source: bytes | str, protocol: LatencyProtocol, pool_cpus: Sequence[int]) -> Any:
    """Create a CPU InferenceSession; ArchNotEvaluable if onnxruntime rejects the model, MeasurementError
    if it cannot be loaded for another reason."""
    try:
        return ort.InferenceSession(source, _session_options(protocol, pool_cpus), providers=[PROVIDER])
    except Exception as exc:
        what = "model bytes" if isinstance(source, bytes) else source
        raise load_error(f"cannot load ONNX model ({what}): {exc}", exc) from exc


def _resolve_input(session: Any, input_shape: Sequence[int] | None) -> tuple[str, tuple[int, ...], str]:
    """Return the single input's name, concrete shape and ONNX type; InvalidInput if unusable."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise InvalidInput(f"model must have exactly one input, it has {len(inputs)}")
    name, dims, onnx_type = str(inputs[0].name), list(inputs[0].shape), str(inputs[0].type)
    if onnx_type not in _INPUT_DTYPES:
        raise InvalidInput(f"input {name!r} has type {onnx_type}; expected one of {sorted(_INPUT_DTYPES)}")
    if input_shape is None:
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise InvalidInput(f"input {name!r} has dynamic dims {dims}; pass input_shape")
        return name, tuple(dims), onnx_type
    return name, _checked_shape(name, dims, input_shape), onnx_type


def _checked_shape(name: str, dims: list[Any], input_shape: Sequence[int]) -> tuple[int, ...]:
    """Validate a caller-supplied shape against the model's (possibly symbolic) dims."""
    shape = tuple(input_shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise InvalidInput(f"input_shape must be positive ints, got {shape}")
    if len(shape) != len(dims):
        raise InvalidInput(f"input_shape {shape} has rank {len(shape)}; input {name!r} has rank {len(dims)}")
    for axis, (want, have) in enumerate(zip(shape, dims, strict=True)):
        if isinstance(have, int) and have > 0 and have != want:
            raise InvalidInput(
                f"input_shape {shape} axis {axis} is {want}; input {name!r} fixes it to {have}"
            )
    return shape


def _make_input(shape: tuple[int, ...], onnx_type: str, seed: int) -> npt.NDArray[Any]:
    """Return a uniform [0, 1) tensor from a seeded generator."""
    data = np.random.default_rng(seed).random(shape, dtype=np.float32)
    return data.astype(_INPUT_DTYPES[onnx_type], copy=False)


# ---------------------------------------------------------------------------------------------- timing


def _load_1min() -> float | None:
    """Return the host's 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _pinned_cpus(protocol: LatencyProtocol) -> tuple[int, ...]:
    """Return the CPUs to pin to (caller first, then pool threads), highest ids first; () if off."""
    if not protocol.pin_threads or not hasattr(os, "sched_setaffinity"):
        return ()
    return tuple(sorted(os.sched_getaffinity(0), reverse=True)[: protocol.intra_op_threads])


@contextlib.contextmanager
def _calling_thread_on(cpu: int | None) -> Iterator[None]:
    """Pin the calling thread (Linux: pid 0 is the calling thread) to ``cpu``, restoring afterwards."""
    if cpu is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Collect, then keep the cyclic garbage collector off (its pauses would land in samples)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _warm_up(run: Callable[[], object], protocol: LatencyProtocol) -> float:
    """Run untimed until the warm-up count and minimum time are met, never past the maximum time.

    Returns the fastest run's duration in seconds (one extra run is timed if the warm-up made none).
    """
    start = time.monotonic()
    fastest = math.inf
    done = 0
    while True:
        elapsed = time.monotonic() - start
        enough = done >= protocol.warmup_runs and elapsed >= protocol.warmup_min_seconds
        if (enough or elapsed >= protocol.warmup_max_seconds) and done:
            return fastest
        t0 = time.perf_counter()
        run()
        fastest = min(fastest, time.perf_counter() - t0)
        done += 1


def _runs_per_round(protocol: LatencyProtocol, run_seconds: float) -> int:
    """Return ``runs_per_round``, raised so that a round lasts about ``min_round_seconds``."""
    fill = math.ceil(protocol.min_round_seconds / max(run_seconds, 1e-9))
    return max(protocol.runs_per_round, fill)


def _time_round(run: Callable[[], object], n: int) -> tuple[int, ...]:
    """Time ``n`` back-to-back runs; only ``run`` lies between the two clock reads."""
    samples = [0] * n
    now = _now_ns
    for i in range(n):
        t0 = now()
        run()
        samples[i] = now() - t0
    return tuple(samples)


def _time_attempt(run: Callable[[], object], protocol: LatencyProtocol, deadline: float) -> _Attempt:
    """Warm up, then time the protocol's rounds (fewer, but at least 2, if ``deadline`` passes)."""
    per_round = _runs_per_round(protocol, _warm_up(run, protocol))
    rounds: list[tuple[int, ...]] = []
    usage: list[RoundUsage] = []
    meter = RoundMeter(protocol.intra_op_threads)
    with _gc_paused():
        for _ in range(protocol.rounds):
            if len(rounds) >= 2 and time.monotonic() > deadline:
                break
            meter.start()
            rounds.append(_time_round(run, per_round))
            usage.append(meter.stop())
    return _Attempt(tuple(rounds), Usage.of(usage))


def _runner(session: Any, feed: dict[str, npt.NDArray[Any]]) -> Callable[[], object]:
    """Return a zero-argument callable doing one inference; MeasurementError if it fails."""
    outputs = [o.name for o in session.get_outputs()]

    def run() -> object:
        return session.run(outputs, feed)

    try:
        run()
    except Exception as exc:
        raise MeasurementError(f"inference failed: {exc}") from exc
    return run


# ---------------------------------------------------------------------------------------------- public


@dataclass(frozen=True)
class _Setup:
    """What a session actually ran with."""

    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: str
    threads: tuple[int, int]
    provider: str


def _one_attempt(
    source: bytes | str,
    input_shape: Sequence[int] | None,
    protocol: LatencyProtocol,
    seed: int,
    pinned: tuple[int, ...],
    deadline: float,
) -> tuple[_Attempt, _Setup]:
    """Make one attempt on a fresh session (fresh allocations, fresh warm-up)."""
    session = _make_session(source, protocol, pinned[1:])
    name, shape, onnx_type = _resolve_input(session, input_shape)
    run = _runner(session, {name: _make_input(shape, onnx_type, seed)})
    attempt = _time_attempt(run, protocol, deadline)
    opts = session.get_session_options()
    threads = (int(opts.intra_op_num_threads), int(opts.inter_op_num_threads))
    return attempt, _Setup(name, shape, onnx_type, threads, str(session.get_providers()[0]))


def measure_onnx_latency(
    model: bytes | str | Path,
    input_shape: Sequence[int] | None = None,
    protocol: LatencyProtocol = DEFAULT_PROTOCOL,
    seed: int = 0,
) -> LatencyResult:
    """Measure the CPU latency of an ONNX model's ``session.run`` under ``protocol``.

    ``model`` is serialized ONNX bytes or a path. The model must have one float input; its shape is
    read from the model, and ``input_shape`` is required where it has dynamic dims. The input is uniform
    [0, 1) from ``numpy.random.default_rng(seed)``. Raises InvalidInput for bad arguments (including
    ``intra_op_threads`` above the usable CPUs) and MeasurementError if the model cannot be loaded or run.
    """
    if not isinstance(protocol, LatencyProtocol):
        raise InvalidInput(f"protocol must be a LatencyProtocol, got {type(protocol).__name__}")
    host = host_info()
    if protocol.intra_op_threads > host.usable_cpus:
        raise _bad(
            "intra_op_threads", f"{protocol.intra_op_threads} exceeds the {host.usable_cpus} usable CPUs"
        )
    source = _model_source(model)
    pinned = _pinned_cpus(protocol)
    loads = [_load_1min()]
    start = time.monotonic()
    made: list[tuple[_Attempt, _Setup]] = []
    with _calling_thread_on(pinned[0] if pinned else None):
        while _another_attempt([a for a, _ in made], protocol, start, host.usable_cpus):
            made.append(
                _one_attempt(source, input_shape, protocol, seed, pinned, start + protocol.max_seconds)
            )
    loads.append(_load_1min())
    best, setup = min(made, key=lambda m: _rank(m[0], protocol, host.usable_cpus))
    return _result(best, [a for a, _ in made], protocol, setup, pinned, loads, seed, host)


def ensure_stable(result: LatencyResult) -> LatencyResult:
    """Return ``result`` if it is stable; else raise UnstableMeasurement with its reasons.

    The message says what to do: a busy host calls for measuring again once it is quiet, a high ``cv``
    alone for more rounds or attempts.
    """
    if result.stable:
        return result
    reasons = list(result.unstable_reasons)
    what = "host busy" if result.contended else "latency would not settle"
    raise UnstableMeasurement(
        f"{what}: {'; '.join(reasons)} (median {result.median_s * 1e3:.3f} ms after {result.attempts} "
        f"attempt(s), load {_fmt_load(result.load_1min)} -> {_fmt_load(result.load_1min_end)}); "
        "not kept: measure again when the host is quiet",
        reasons,
    )


def _fmt_load(load: float | None) -> str:
    return "?" if load is None else f"{load:.2f}"


def _rank(attempt: _Attempt, protocol: LatencyProtocol, cpus: int) -> tuple[bool, float]:
    """Sort key of attempts, best first: uncontended by lowest cv, then contended by highest CPU share."""
    if attempt.contention(protocol, cpus):
        return (True, -attempt.usage.cpu_fraction)
    return (False, attempt.cv)


def _another_attempt(attempts: list[_Attempt], protocol: LatencyProtocol, start: float, cpus: int) -> bool:
    """Whether to make another attempt: none yet, or none both uncontended and within ``cv_target``,
    with attempts and time left for one more."""
    if not attempts:
        return True
    if len(attempts) >= protocol.max_attempts:
        return False
    if any(a.cv <= protocol.cv_target and not a.contention(protocol, cpus) for a in attempts):
        return False
    elapsed = time.monotonic() - start
    return elapsed + elapsed / len(attempts) <= protocol.max_seconds


def _result(
    best: _Attempt,
    made: list[_Attempt],
    protocol: LatencyProtocol,
    setup: _Setup,
    pinned: tuple[int, ...],
    loads: list[float | None],
    seed: int,
    host: HostInfo,
) -> LatencyResult:
    """Assemble a LatencyResult from the kept attempt's samples."""
    samples = np.array([s for r in best.rounds_ns for s in r], dtype=np.float64) / 1e9
    p10, p90 = (float(p) for p in np.percentile(samples, [10, 90]))
    cv = best.cv
    reasons = best.reasons(protocol, host.usable_cpus)
    contended = bool(best.contention(protocol, host.usable_cpus))
    return LatencyResult(
        median_s=float(np.median(samples)),
        mean_s=float(samples.mean()),
        stdev_s=float(samples.std(ddof=1)) if samples.size > 1 else 0.0,
        cv=cv,
        p10_s=p10,
        p90_s=p90,
        min_s=float(samples.min()),
        max_s=float(samples.max()),
        samples=int(samples.size),
        runs_per_round=len(best.rounds_ns[0]),
        round_medians_s=best.round_medians_s,
        attempts=len(made),
        attempt_cvs=tuple(a.cv for a in made),
        stable=not reasons,
        contended=contended,
        unstable_reasons=tuple(reasons),
        cpu_fraction=best.usage.cpu_fraction,
        round_cpu_fractions=best.usage.round_cpu_fractions,
        attempt_cpu_fractions=tuple(a.usage.cpu_fraction for a in made),
        neighbours=best.usage.neighbours,
        intra_op_threads=setup.threads[0],
        inter_op_threads=setup.threads[1],
        pinned_cpus=pinned,
        load_1min=loads[0],
        load_1min_end=loads[-1],
        input_name=setup.input_name,
        input_shape=setup.input_shape,
        input_dtype=setup.input_dtype,
        seed=seed,
        onnxruntime_version=host.onnxruntime_version,
        provider=setup.provider,
        protocol=protocol,
        host=host,
    )
