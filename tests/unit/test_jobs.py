"""Evaluation jobs on a worker: keyed by the evaluation key, attachable, owned, followed, kept."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from facenas.domain import Budget, EvalKey, EvalSpace, FailureKind, JobState
from facenas.errors import DatasetError, InvalidInput, NotFound, Unavailable
from facenas.jobs import JobManager, JobSpec, JobView
from facenas.space import HgnetSearchSpace, ParamRange, SearchSpaceParams
from facenas.space.hgnet import Arch
from facenas.workers.base import Measurement
from tests.unit.eval_fakes import CPU_LATENCY, IOU, FakeLatency, StepTrainer, value_of

SPACE = EvalSpace(img_size=(64, 64))


def archs(n: int, seed: int = 1) -> list[Arch]:
    return _sampled(seed)[:n]


@functools.cache
def _sampled(seed: int) -> list[Arch]:
    space = HgnetSearchSpace(SearchSpaceParams(img_size=(64, 64)), seed=seed)
    out: dict[str, Arch] = {}
    while len(out) < 6:
        arch = space.sample_valid(ParamRange(1e5, 5e5))
        out[arch.archid] = arch
    return list(out.values())


def spec(manager: JobManager, arch: Arch, objective: str = IOU) -> JobSpec:
    target = manager.backend.target(objective, SPACE)
    return JobSpec(EvalKey(arch.archid, objective, "steps=8", target.key), arch, SPACE, Budget(), target)


@pytest.fixture
def trainer() -> StepTrainer:
    return StepTrainer(steps=8, hold_at=4)


@pytest.fixture
def manager(trainer: StepTrainer) -> Iterator[JobManager]:
    jobs = JobManager(trainer, "trainer", ["cpu", "cpu"])
    yield jobs
    trainer.released.set()
    jobs.close()


def _until(manager: JobManager, job_id: str, state: JobState) -> JobView:
    for view in manager.follow(job_id, heartbeat_s=0.05, min_interval_s=0):
        if view.state == state or view.state.finished:
            return view
    raise AssertionError("follow ended early")


@pytest.mark.slow
def test_the_same_key_is_the_same_job(manager: JobManager, trainer: StepTrainer) -> None:
    arch = archs(1)[0]
    first, attached = manager.submit(spec(manager, arch), "search-a")
    assert not attached and first.state == JobState.QUEUED
    trainer.wait_held(1)
    again, attached = manager.submit(spec(manager, arch), "search-b")
    assert attached and again.job_id == first.job_id and again.owners == ("search-a", "search-b")
    trainer.released.set()
    done = _until(manager, first.job_id, JobState.SUCCEEDED)
    assert done.state == JobState.SUCCEEDED and done.result is not None
    assert done.result.value == value_of(arch.archid)
    assert trainer.started[arch.archid] == 1 and trainer.steps_done[arch.archid] == 8
    # a finished job is kept: submitting it again returns the result without training
    kept, attached = manager.submit(spec(manager, arch), "search-c")
    assert attached and kept.state == JobState.SUCCEEDED and trainer.started[arch.archid] == 1
    assert set(done.result.details["host_load"]) == {"start", "end"}


def test_progress_streams_with_heartbeats_and_eta(manager: JobManager, trainer: StepTrainer) -> None:
    trainer.step_s = 0.02
    arch = archs(1)[0]
    view, _ = manager.submit(spec(manager, arch), "s")
    trainer.wait_held(1)
    seen = []
    for update in manager.follow(view.job_id, heartbeat_s=0.05, min_interval_s=0):
        seen.append(update)
        if len(seen) == 5:  # nothing changes while the job is held: these are heartbeats
            break
    assert [v.progress.step for v in seen[-3:]] == [3, 3, 3]
    assert seen[-1].progress.phase == "train" and seen[-1].progress.total == 8
    assert seen[-1].progress.loss == pytest.approx(1 / 3)
    assert seen[-1].progress.eta_s is not None and seen[-1].progress.eta_s > 0
    assert seen[-1].progress.elapsed_s > 0
    trainer.released.set()
    assert _until(manager, view.job_id, JobState.SUCCEEDED).progress.step == 8


def test_a_job_stops_when_its_last_owner_cancels(manager: JobManager, trainer: StepTrainer) -> None:
    arch = archs(1)[0]
    view, _ = manager.submit(spec(manager, arch), "a")
    manager.submit(spec(manager, arch), "b")
    trainer.wait_held(1)
    assert manager.cancel(view.job_id, "a")[0].state == JobState.RUNNING  # b still wants it
    assert manager.cancel("", "b")[0].state == JobState.CANCELLED  # all of b's jobs
    assert trainer.steps_done[arch.archid] < 8
    # the slot frees when the backend notices; a new submission starts the job again
    again, attached = manager.submit(spec(manager, arch), "c")
    assert not attached and again.state in (JobState.QUEUED, JobState.RUNNING)
    with pytest.raises(NotFound):
        manager.cancel("no-such-job", "a")
    with pytest.raises(InvalidInput):
        manager.cancel("", "")


def test_queued_jobs_report_their_place_and_run_in_order(trainer: StepTrainer) -> None:
    manager = JobManager(trainer, "trainer", ["cpu"])
    try:
        first, second, third = (manager.submit(spec(manager, a), "s")[0] for a in archs(3))
        trainer.wait_held(1)
        assert manager.get(second.job_id).progress.queue_position == 1
        assert manager.get(third.job_id).progress.queue_position == 2
        manager.cancel(second.job_id, "s")
        assert manager.get(third.job_id).progress.queue_position == 1
        trainer.released.set()
        assert _until(manager, third.job_id, JobState.SUCCEEDED).state == JobState.SUCCEEDED
        assert manager.get(second.job_id).state == JobState.CANCELLED
        assert [v.job_id for v in manager.list("s", active_only=True)] == []
        assert {v.job_id for v in manager.list("s")} == {first.job_id, second.job_id, third.job_id}
    finally:
        trainer.released.set()
        manager.close()


def test_slots_carry_their_device(trainer: StepTrainer) -> None:
    trainer.hold_at = None
    manager = JobManager(trainer, "trainer", ["cuda:0", "cuda:0", "cuda:1", "cuda:1"])
    try:
        assert manager.capacity == 4
        views = [manager.submit(spec(manager, a), "s")[0] for a in archs(6)]
        devices = {_until(manager, v.job_id, JobState.SUCCEEDED).device for v in views}
        assert devices <= {"cuda:0", "cuda:1"} and set(trainer.devices) == devices
    finally:
        manager.close()


def test_failures_are_classified_by_cause() -> None:
    bad, flaky = archs(2)
    latency = FakeLatency(unstable={flaky.archid: 1}, invalid={bad.archid})
    manager = JobManager(latency, "latency_cpu")
    try:
        invalid = manager.submit(spec(manager, bad, CPU_LATENCY), "s")[0]
        unstable = manager.submit(spec(manager, flaky, CPU_LATENCY), "s")[0]
        done = _until(manager, invalid.job_id, JobState.FAILED)
        assert (done.state, done.failure) == (JobState.FAILED, FailureKind.INVALID)
        assert "cannot be exported" in done.error
        done = _until(manager, unstable.job_id, JobState.FAILED)
        assert (done.state, done.failure) == (JobState.FAILED, FailureKind.UNSTABLE)
        # a failed job runs again when submitted again (the figure settles the second time)
        again, attached = manager.submit(spec(manager, flaky, CPU_LATENCY), "s")
        assert not attached
        assert _until(manager, again.job_id, JobState.SUCCEEDED).state == JobState.SUCCEEDED
    finally:
        manager.close()


@pytest.mark.slow
def test_closing_fails_unfinished_jobs_as_unavailable(manager: JobManager, trainer: StepTrainer) -> None:
    running, _queued, waiting = (manager.submit(spec(manager, a), "s")[0] for a in archs(3))
    trainer.wait_held(2)
    finished = threading.Event()
    ends: list[JobView] = []

    def follow() -> None:
        ends.extend(manager.follow(running.job_id, heartbeat_s=0.05, min_interval_s=0))
        finished.set()

    threading.Thread(target=follow, daemon=True).start()
    manager.close(timeout_s=5)
    assert finished.wait(10)
    assert (ends[-1].state, ends[-1].failure) == (JobState.FAILED, FailureKind.UNAVAILABLE)
    assert manager.get(waiting.job_id).failure == FailureKind.UNAVAILABLE
    with pytest.raises(Unavailable):
        manager.submit(spec(manager, archs(1, seed=9)[0]), "s")


def test_finished_jobs_are_forgotten_after_their_retention(trainer: StepTrainer) -> None:
    trainer.hold_at = None
    manager = JobManager(trainer, "trainer", ["cpu"], retention_s=3600, max_finished=2)
    try:
        views = [manager.submit(spec(manager, a), "s")[0] for a in archs(3)]
        for view in views:
            _until(manager, view.job_id, JobState.SUCCEEDED)
        kept = {v.job_id for v in manager.list()}
        assert kept == {views[1].job_id, views[2].job_id}
        assert manager.get(views[2].job_id).key == views[2].key  # a kept job answers in full...
        assert all(job.spec is None for job in manager._jobs.values())  # ...holding no architecture
        with pytest.raises(NotFound):
            manager.get(views[0].job_id)
    finally:
        manager.close()


def test_a_job_run_again_is_kept_once(trainer: StepTrainer) -> None:
    """A cancelled job submitted again runs again; retention counts the new run only, so forgetting
    the old record never forgets the new job."""
    manager = JobManager(trainer, "trainer", ["cpu"], retention_s=3600, max_finished=2)
    try:
        a, b, c = archs(3)
        first = manager.submit(spec(manager, a), "s")[0]
        trainer.wait_held(1)
        assert manager.cancel(first.job_id, "s")[0].state == JobState.CANCELLED
        trainer.hold_at = None
        trainer.released.set()
        again, attached = manager.submit(spec(manager, a), "s")
        assert not attached
        views = [again] + [manager.submit(spec(manager, x), "s")[0] for x in (b, c)]
        for view in views:
            assert _until(manager, view.job_id, JobState.SUCCEEDED).state == JobState.SUCCEEDED
        assert {v.job_id for v in manager.list()} == {views[1].job_id, views[2].job_id}
        assert manager.submit(spec(manager, b), "t")[1]  # still kept: attaches
    finally:
        manager.close()


def test_steps_are_counted_once_each(trainer: StepTrainer) -> None:
    """The trainers' step counter, which tests of resumed searches compare with the training budget."""
    trainer.hold_at = None
    manager = JobManager(trainer, "trainer-steps", ["cpu"])
    try:
        views = [manager.submit(spec(manager, a), "s")[0] for a in archs(2)]
        for view in views:
            _until(manager, view.job_id, JobState.SUCCEEDED)
        labels = {"service": "trainer-steps", "phase": "train"}
        assert REGISTRY.get_sample_value("facenas_job_steps_total", labels) == 2 * 8
    finally:
        manager.close()


def test_a_worker_without_its_data_is_unavailable_not_the_models_fault() -> None:
    class NoData(FakeLatency):
        def evaluate(self, *args: object, **kwargs: object) -> Measurement:
            raise DatasetError("data cache /data/.facenas-cache/64x64 is stale; run `facenas data prepare`")

    manager = JobManager(NoData(), "latency_cpu")
    try:
        view = manager.submit(spec(manager, archs(1)[0], CPU_LATENCY), "s")[0]
        done = _until(manager, view.job_id, JobState.FAILED)
        assert done.failure == FailureKind.UNAVAILABLE and "facenas data prepare" in done.error
    finally:
        manager.close()
