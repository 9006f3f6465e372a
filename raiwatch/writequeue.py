"""Group commit: batches queued while the writer thread is busy are written together, in order.

A ClickHouse insert has a fixed cost (a part per insert: 14-30 ms on chdb for a table of 40
columns, whatever its rows), so a stream of small batches spends most of its writer's time on
it. ``WriteQueue`` hands the writer everything queued since its last write, as one group: under
load groups grow and the fixed costs are shared. With ``linger_s`` (as Kafka producers'
``linger.ms``) the writer first waits up to that long for the queue to fill, unless a ``flush`` or
a blocked ``submit`` waits for it: fewer, larger groups for a stream that keeps the writer just
ahead of it; without, an idle pipeline gets each batch written at once. A batch submitted with
``linger=False`` (what a pipeline closes while its input is idle: nothing will come to join it)
ends the wait too. Each batch keeps its own future, done when its group is written.

A failed group fails every batch in it and every batch queued behind it (none of them is
written: what follows a failed write must not land before it), and the next ``submit`` or
``flush`` raises that error once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Generic, TypeVar

LINGER_STEP_S = 0.01  # how soon a lingering writer sees a flush, a blocked submit or a full queue
T = TypeVar("T")
R = TypeVar("R")


class WriteQueue(Generic[T, R]):
    """Queue of batches for ``write(group) -> one result per batch``, run on ``executor`` (one thread).

    ``submit`` waits while the batches already waiting reach ``max_queued`` (counted by ``size``,
    one per batch by default), so memory stays bounded when the writer is the slower side; a
    batch is always taken when none waits.
    """

    def __init__(
        self,
        executor: Executor,
        write: Callable[[Sequence[T]], list[R]],
        max_queued: int = 3,
        size: Callable[[T], int] = lambda _: 1,
        linger_s: float = 0.0,
    ):
        if max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, not {max_queued}")
        self._executor = executor
        self._write = write
        self.max_queued = max_queued
        self._size = size
        self.linger_s = linger_s
        self._hurry = False  # flush waits: write what is queued without lingering
        self._urgent = False  # a batch queued without linger waits: write without lingering
        self._blocked = 0  # submits waiting for room
        self._queued = 0  # the waiting batches' sizes, summed
        self._cond = threading.Condition()
        self._queue: list[tuple[T, Future[R]]] = []
        self._draining = False
        self._failed: BaseException | None = None
        self._last: Future[R] | None = None
        self.groups = 0  # groups written (tests read it)

    def submit(self, item: T, linger: bool = True) -> Future[R]:
        """Queue ``item``; its future is done when it is written. Raises a failure not yet raised.
        ``linger=False``: its group is written without waiting out the linger."""
        fut: Future[R] = Future()
        with self._cond:
            self._raise_failed()
            n = self._size(item)
            while self._queue and self._queued + n > self.max_queued and self._failed is None:
                self._blocked += 1
                self._cond.wait()
                self._blocked -= 1
            self._raise_failed()
            self._queue.append((item, fut))
            self._queued += n
            if not linger:
                self._urgent = True
            self._last = fut
            if not self._draining:
                self._draining = True
                self._executor.submit(self._drain)
        return fut

    def flush(self) -> R | None:
        """Wait until everything queued is written; the last batch's result (raises a failure)."""
        last, self._last = self._last, None
        with self._cond:
            self._hurry = True
        try:
            return last.result() if last is not None else None
        except BaseException:
            with self._cond:
                self._failed = None  # raised here: once
            raise
        finally:
            with self._cond:
                self._hurry = False
                self._raise_failed()

    def _raise_failed(self) -> None:
        """Under the lock: raise the pending failure, once."""
        err, self._failed = self._failed, None
        if err is not None:
            raise err

    def _linger(self) -> None:
        """Under the lock: wait up to ``linger_s`` for the queue to fill, unless a flush, a
        blocked submit or a batch queued without linger waits for it. It sleeps in short steps
        rather than in a timed wait on the condition: under a shifted clock (libfaketime, as
        ``tests/test_clock_ahead.py`` runs) a timed lock wait reads its deadline from the shifted
        clock and never ends."""
        deadline = time.monotonic() + self.linger_s
        while (
            self._queue
            and self._queued < self.max_queued
            and not (self._hurry or self._urgent or self._blocked)
        ):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.release()
            try:
                time.sleep(min(left, LINGER_STEP_S))
            finally:
                self._cond.acquire()

    def _drain(self) -> None:
        """The writer thread: write what is queued, as groups, until the queue is empty."""
        while True:
            with self._cond:
                self._linger()
                group, self._queue = self._queue, []
                self._queued = 0
                self._urgent = False
                self._cond.notify_all()
                if not group:
                    self._draining = False
                    return
            try:
                results = self._write([item for item, _ in group])
                if len(results) != len(group):
                    raise RuntimeError(f"a write of {len(group)} batches gave {len(results)} results")
            except BaseException as e:  # handed to every waiting caller
                with self._cond:
                    behind, self._queue = self._queue, []
                    self._queued = 0
                    self._failed = e
                    self._cond.notify_all()
                for _, fut in group + behind:
                    fut.set_exception(e)
                continue
            self.groups += 1
            for (_, fut), res in zip(group, results, strict=True):
                fut.set_result(res)
