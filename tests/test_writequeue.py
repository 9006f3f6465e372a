"""Group commit (raiwatch.writequeue): order, grouping, bounded queue, failures raised once."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from raiwatch.writequeue import WriteQueue


class Writer:
    """Records each group; the first group waits for ``release`` so that later batches queue."""

    def __init__(self, fail_on: int | None = None):
        self.groups: list[list[int]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, group: Sequence[int]) -> list[str]:
        self.started.set()
        assert self.release.wait(10)
        if self.fail_on is not None and self.fail_on in group:
            raise RuntimeError(f"insert refused at batch {self.fail_on}")
        self.groups.append(list(group))
        return [f"written {i}" for i in group]


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=1) as ex:
        yield ex


def test_batches_queued_while_the_writer_is_busy_are_written_together_in_order(pool) -> None:
    w = Writer()
    q: WriteQueue[int, str] = WriteQueue(pool, w, max_queued=3)
    first = q.submit(0)
    assert w.started.wait(10)  # batch 0 is being written alone
    rest = [q.submit(i) for i in (1, 2, 3)]
    w.release.set()
    assert q.flush() == "written 3"
    assert w.groups == [[0], [1, 2, 3]]
    assert [f.result() for f in (first, *rest)] == [f"written {i}" for i in range(4)]
    assert q.groups == 2


def test_an_idle_writer_writes_each_batch_at_once(pool) -> None:
    w = Writer()
    w.release.set()
    q: WriteQueue[int, str] = WriteQueue(pool, w)
    for i in range(3):
        assert q.submit(i).result(10) == f"written {i}"
    assert w.groups == [[0], [1], [2]]


def _held_back(q: WriteQueue[int, str], w: Writer, item: int) -> None:
    """Submitting ``item`` waits while the writer is stuck, and goes once it is released."""
    queued = threading.Event()

    def submit() -> None:
        q.submit(item)
        queued.set()

    t = threading.Thread(target=submit)
    t.start()
    assert not queued.wait(0.3)  # held back while the writer is stuck
    w.release.set()
    assert queued.wait(10)
    t.join(10)
    q.flush()


def test_submit_waits_while_the_queue_is_full(pool) -> None:
    w = Writer()
    q: WriteQueue[int, str] = WriteQueue(pool, w, max_queued=2)
    q.submit(0)
    assert w.started.wait(10)
    q.submit(1)
    q.submit(2)  # the queue is full now
    _held_back(q, w, 3)
    assert [i for g in w.groups for i in g] == [0, 1, 2, 3]


def test_the_bound_counts_sizes_and_a_batch_larger_than_it_still_goes(pool) -> None:
    w = Writer()
    q: WriteQueue[int, str] = WriteQueue(pool, w, max_queued=10, size=lambda i: i)
    q.submit(50)  # larger than the bound: taken, the queue being empty
    assert w.started.wait(10)
    q.submit(4)
    q.submit(6)  # 10 waiting: full
    _held_back(q, w, 1)
    assert w.groups[:2] == [[50], [4, 6]]


def test_a_failed_group_fails_what_queued_behind_it_and_is_raised_once(pool) -> None:
    w = Writer(fail_on=1)
    q: WriteQueue[int, str] = WriteQueue(pool, w, max_queued=5)
    ok = q.submit(0)
    assert w.started.wait(10)
    failing = q.submit(1)
    w.release.set()
    assert ok.result(10) == "written 0"
    with pytest.raises(RuntimeError, match="batch 1"):
        failing.result(10)
    with pytest.raises(RuntimeError, match="batch 1"):
        q.submit(2)  # the next call raises it, and 2 is not queued
    assert q.submit(3).result(10) == "written 3"  # raised once: writing goes on
    assert q.flush() == "written 3"
    assert w.groups == [[0], [3]]


def test_flush_raises_the_failure_of_the_last_batch(pool) -> None:
    w = Writer(fail_on=0)
    w.release.set()
    q: WriteQueue[int, str] = WriteQueue(pool, w)
    q.submit(0)
    with pytest.raises(RuntimeError, match="batch 0"):
        q.flush()
    assert q.flush() is None


def test_max_queued_must_be_positive(pool) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        WriteQueue(pool, Writer(), max_queued=0)


def test_rows_clickhouse_refuses_in_a_group_go_back_to_their_batches() -> None:
    from raiwatch.pipeline import _refused_events, _Writes

    def batch(name: str, n: int) -> _Writes:
        raws = [f"{name}{i}".encode() for i in range(n)]
        idx = [10 * i for i in range(n)]  # each event's message index in its batch
        return _Writes([], [], raws, idx, [], [], [], lambda i, name=name: f"{name}@{i}", ((), ()), [], None)

    group = [batch("a", 3), batch("b", 0), batch("c", 2)]
    out = _refused_events(group, [(0, "bad"), (2, "worse"), (3, "odd"), (4, "last")])
    assert [[(r.raw, r.source, r.index, r.reason) for r in rs] for rs in out] == [
        [(b"a0", "a@0", 0, "bad"), (b"a2", "a@20", 20, "worse")],
        [],
        [(b"c0", "c@0", 0, "odd"), (b"c1", "c@10", 10, "last")],
    ]
    assert _refused_events(group, []) == [[], [], []]


def test_a_lingering_writer_waits_for_more_batches_to_write_them_together(pool) -> None:
    w = Writer()
    w.release.set()
    q: WriteQueue[int, str] = WriteQueue(pool, w, max_queued=3, linger_s=3600)
    futs = [q.submit(i) for i in range(3)]  # a full queue is written without waiting out the linger
    assert [f.result(10) for f in futs] == [f"written {i}" for i in range(3)]
    assert w.groups == [[0, 1, 2]]


@pytest.mark.timeout(60)
def test_flush_does_not_wait_out_the_linger(pool) -> None:
    w = Writer()
    w.release.set()
    q: WriteQueue[int, str] = WriteQueue(pool, w, max_queued=10, linger_s=3600)
    q.submit(0)
    assert q.flush() == "written 0"  # honouring the linger, this would take an hour
    assert w.groups == [[0]]
    late = q.submit(1)  # and the linger holds again after the flush
    assert not late.done()
    assert q.flush() == "written 1"


def test_a_lingering_writer_writes_a_lone_batch_once_the_linger_is_over(pool) -> None:
    w = Writer()
    w.release.set()
    q: WriteQueue[int, str] = WriteQueue(pool, w, max_queued=10, linger_s=0.05)
    assert q.submit(0).result(10) == "written 0"
    assert w.groups == [[0]]


@pytest.mark.timeout(60)
def test_a_batch_queued_without_linger_is_written_at_once_with_what_waits(pool) -> None:
    """What a pipeline closes while its input is idle has nothing to wait for: it and the batches
    lingering before it are written together, now; the next batch lingers again."""
    w = Writer()
    w.release.set()
    q: WriteQueue[int, str] = WriteQueue(pool, w, max_queued=10, linger_s=3600)
    first = q.submit(0)
    assert q.submit(1, linger=False).result(30) == "written 1"  # honouring the linger: an hour
    assert first.result(0) == "written 0"
    assert w.groups == [[0, 1]]
    late = q.submit(2)
    assert not late.done()
    assert q.flush() == "written 2"
