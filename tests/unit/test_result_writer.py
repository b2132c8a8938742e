"""ResultWriter: a search's store writes, in order, off its evaluations' path."""

from __future__ import annotations

import threading

import pytest

from facenas.search.writer import ResultWriter
from tests.timing import scaled


def test_writes_run_in_order_in_another_thread_and_flush_waits_for_them() -> None:
    writer = ResultWriter("t")
    gate = threading.Event()
    done: list[int] = []
    threads: set[str] = set()

    def write(i: int) -> None:
        gate.wait()
        threads.add(threading.current_thread().name)
        done.append(i)

    for i in range(50):
        writer.submit(lambda i=i: write(i))  # returns at once: the first write is still held
    assert writer.pending == 50 and not done
    assert writer.flush(timeout=0.01) is False
    gate.set()
    assert writer.flush() is True
    assert done == list(range(50)) and writer.pending == 0
    assert threads == {"writer-t"}
    writer.close()


def test_a_failed_write_is_raised_by_later_calls_and_nothing_after_it_is_written() -> None:
    writer = ResultWriter("t")
    gate = threading.Event()
    done: list[str] = []

    def fail() -> None:
        gate.wait()
        raise RuntimeError("stored with a different value")

    writer.submit(fail)
    writer.submit(lambda: done.append("after"))
    gate.set()
    with pytest.raises(RuntimeError, match="different value"):
        writer.flush()
    with pytest.raises(RuntimeError, match="different value"):
        writer.submit(lambda: done.append("later"))
    assert done == []
    writer.close()


def test_submit_waits_for_room_past_the_limit() -> None:
    writer = ResultWriter("t", limit=2)
    gate, taken = threading.Event(), threading.Event()

    def held() -> None:
        taken.set()
        gate.wait()

    writer.submit(held)
    assert taken.wait(scaled(30))  # off the queue, and held
    writer.submit(lambda: None)
    writer.submit(lambda: None)  # two wait now: the queue is full
    third = threading.Event()

    def submit_third() -> None:
        writer.submit(lambda: None)
        third.set()

    thread = threading.Thread(target=submit_third)
    thread.start()
    assert not third.wait(0.05)  # (a short look: it must still be waiting; the check below is exact)
    assert writer.pending == 3
    gate.set()
    assert third.wait(scaled(30))
    thread.join()
    assert writer.flush() and writer.pending == 0
    writer.close()


def test_close_writes_what_is_queued_and_drops_what_cannot_be_written_in_time() -> None:
    writer = ResultWriter("t")
    done: list[int] = []
    for i in range(5):
        writer.submit(lambda i=i: done.append(i))
    writer.close()
    assert done == list(range(5))
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(lambda: None)

    stuck = ResultWriter("s")
    gate = threading.Event()
    stuck.submit(gate.wait)
    stuck.submit(lambda: done.append(99))
    stuck.close(timeout=0.05)
    gate.set()
    assert 99 not in done
