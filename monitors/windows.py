"""Event-time tumbling windows: which window an event belongs to, and when a window closes.

A window ``[start, start + size)`` closes once the watermark passes its end. Each source (a
Kafka partition, or the one file of a replay) has an event-time position: the ``confirm``-th
newest timestamp it has sent, so that one or two wild timestamps cannot move it. The watermark
is the slowest busy source's position minus the allowed lateness: a partition that is behind
(or has sent nothing yet) holds it back, so its events are not late for the others. The
transport names the *idle* sources (caught up with their partition and silent for a while):
they stop holding the watermark back, and when every source is idle event time advances with
the wall clock (``now - lateness``), but never past the window of the newest event seen, so the
last windows of a burst close without waiting for traffic that may never come.

An event whose window has already closed is *late*: stored, not counted. After a restart a
source can be given the point up to which its windows were already closed and written
(``restore``): its re-read events in those windows are *replayed* — already counted, so not
counted again and not late either.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Sequence

import numpy as np

OK, LATE, REPLAYED = 0, 1, 2  # what ``assign_batch`` says of each event


class WindowClock:
    """Tracks open windows and the watermark.

    >>> clock = WindowClock(size_s=60, allowed_lateness_s=30, confirm=1)
    >>> clock.assign(source=0, ts=1000.0), clock.assign(source=0, ts=1010.0)
    (960, 960)
    >>> clock.advance()  # watermark 980: window [960, 1020) still open
    []
    >>> clock.assign(source=0, ts=1055.0)
    1020
    >>> clock.advance()  # watermark 1025 passed 1020
    [960]
    >>> clock.assign(source=0, ts=1019.0) is None  # its window is closed: late
    True
    >>> clock.advance(idle={0}, now=1200.0)  # the only source is idle: event time follows the wall clock
    [1020]
    >>> clock.closed_until  # ... up to the end of the newest event's window, not to the wall clock
    1080.0
    """

    def __init__(self, size_s: int, allowed_lateness_s: float, confirm: int = 3):
        self.size = int(size_s)
        self.lateness = float(allowed_lateness_s)
        self.confirm = max(1, int(confirm))
        self._top: dict[Hashable, list[float]] = {}  # per source, its ``confirm`` newest timestamps
        self._restored: dict[Hashable, float] = {}  # per source, windows ending by this were counted
        self._newest = -math.inf  # the newest event time assigned
        self._open: set[int] = set()
        self._closed_until = -math.inf  # every window ending at or before this is closed

    @property
    def newest(self) -> float:
        """The newest event time assigned so far (-inf before the first)."""
        return self._newest

    @property
    def closed_until(self) -> float:
        """Every window ending at or before this is closed."""
        return self._closed_until

    def position(self, source: Hashable) -> float:
        """The source's event-time position: its ``confirm``-th newest timestamp (its oldest if fewer)."""
        top = self._top.get(source)
        return top[0] if top else -math.inf

    def watermark(self, idle: Collection[Hashable] = (), now: float | None = None) -> float:
        """Windows ending at or before this may close (see the module docstring)."""
        busy = [self.position(s) for s in self._top if s not in idle]
        if busy:
            wm = min(busy) - self.lateness
        elif now is not None and self._top:  # all idle: up to the newest event's window, as time allows
            newest_end = (self._newest // self.size + 1) * self.size
            wm = min(now - self.lateness, newest_end)
        else:
            wm = -math.inf
        return max(self._closed_until, wm)

    def assign(self, source: Hashable, ts: float) -> int | None:
        """Window start for an event at ``ts`` (epoch seconds), or None when it is not to be counted."""
        starts, status = self.assign_batch([source], [ts])
        return int(starts[0]) if status[0] == OK else None

    def assign_batch(
        self, sources: Sequence[Hashable], ts: Sequence[float], move: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Window start and status (``OK``, ``LATE``, ``REPLAYED``) of each event; positions move here,
        the watermark only in ``advance``. ``move=False`` keeps the windows open without moving
        event time (an input that only waits for its window: an OTLP evaluation result)."""
        t = np.asarray(ts, dtype=np.float64)
        size = self.size
        starts = (np.floor_divide(t, size) * size).astype(np.int64)
        ends = starts + size
        status = np.where(ends <= self._closed_until, LATE, OK).astype(np.int8)
        uniq = set(sources)
        single = len(uniq) == 1
        src = None if single else np.asarray(sources, dtype=object)
        for s in uniq:
            mask = None if single else src == s
            if s in self._restored:
                replayed = ends <= self._restored[s] if mask is None else (ends <= self._restored[s]) & mask
                status[replayed] = REPLAYED
            mine = t if mask is None else t[mask]
            if not move:
                continue
            k = min(self.confirm, len(mine))
            newest = np.partition(mine, len(mine) - k)[len(mine) - k :] if k else mine
            self._top[s] = sorted([*self._top.get(s, ()), *newest.tolist()])[-self.confirm :]
        self._open.update(np.unique(starts[status == OK]).tolist())
        if len(t) and move:
            self._newest = max(self._newest, float(t.max()))
        return starts, status

    def advance(self, idle: Collection[Hashable] = (), now: float | None = None) -> list[int]:
        """Close and return (oldest first) the windows whose end the watermark has passed."""
        wm = self.watermark(idle, now)
        closed = sorted(s for s in self._open if s + self.size <= wm)
        self._close(closed)
        if math.isfinite(wm):  # windows the watermark passed are closed, opened or not
            self._closed_until = max(self._closed_until, float(wm - wm % self.size))
        return closed

    def close_all(self) -> list[int]:
        """Close every open window (end of input)."""
        closed = sorted(self._open)
        self._close(closed)
        return closed

    def add_source(self, source: Hashable) -> None:
        """A source to wait for from now on, even before its first event (an assigned partition)."""
        self._top.setdefault(source, [])

    def restore(self, source: Hashable, closed_until: float) -> None:
        """A restarted source: its windows ending by ``closed_until`` were already counted and written."""
        self._restored[source] = closed_until

    def forget_source(self, source: Hashable) -> None:
        """Stop waiting for a source (a partition revoked from this worker)."""
        self._top.pop(source, None)
        self._restored.pop(source, None)

    def reset(self) -> None:
        """Forget every source, open window and how far windows closed (a worker whose partitions
        were all revoked: the ones it is given next continue from their own checkpoints, which may
        be behind how far this clock had closed windows)."""
        self._top.clear()
        self._restored.clear()
        self._newest = self._closed_until = -math.inf
        self._open.clear()

    def sources(self) -> set[Hashable]:
        return set(self._top)

    def open_windows(self) -> set[int]:
        return set(self._open)

    def _close(self, starts: list[int]) -> None:
        if starts:
            self._open.difference_update(starts)
            self._closed_until = max(self._closed_until, float(starts[-1] + self.size))
