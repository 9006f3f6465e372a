"""Event-time tumbling windows: which window an event belongs to, and when a window closes.

A window ``[start, start + size)`` closes once the watermark passes its end. Each source (a
Kafka partition, or the one file of a replay) has an event-time *position*: the median of its
last ``2k - 1`` timestamps (the k-th newest of them; k is ``confirm``, ``windows.watermark_confirm``),
and none until k events reached it. The watermark is the slowest busy source's position minus
the allowed lateness: a partition that is behind (or has sent too little yet) holds it back, so
its events are not late for the others. A live worker also caps each position at its own clock.

What that guarantees: fewer than k of a source's last 2k - 1 timestamps cannot move its position
past the rest of them, however far ahead they are. A burst of up to k - 1 events stamped in the
future (16 by default: 15), or a steady share of a partition's traffic well under half (a
producer whose clock runs fast, measured with 10% of events 60 s ahead), never makes a correctly
stamped event late: an event is late only when it is more than the allowed lateness older than
the newest correctly stamped event of the slowest busy partition. Timestamps from the past only
hold windows open longer. What it costs: with events in order, a position trails its source's
newest event by k - 1 events (1.5 s at 10 events/s per partition, 15 ms at 1,000/s); a partition
slower than that goes idle instead.

The transport names the *idle* sources (caught up with their partition and silent for a while):
they stop holding the watermark back, and when every source is idle event time advances with
the wall clock (``now - lateness``), but never past the window of the newest event seen (nor at
all before the first event), so the last windows of a burst close without waiting for traffic
that may never come, and a backlog that arrives later is not late for a clock that ran ahead.

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
_NONE = np.empty(0)


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

    With ``confirm=2`` a source's position is the median of its last three timestamps:

    >>> clock = WindowClock(size_s=60, allowed_lateness_s=0, confirm=2)
    >>> _ = clock.assign_batch([0, 0, 0], [1000.0, 1010.0, 9000.0])  # one wild timestamp
    >>> clock.position(0)
    1010.0
    """

    def __init__(self, size_s: int, allowed_lateness_s: float, confirm: int = 16):
        self.size = int(size_s)
        self.lateness = float(allowed_lateness_s)
        self.confirm = max(1, int(confirm))
        self.sample = 2 * self.confirm - 1  # timestamps per source the position is the median of
        self._recent: dict[Hashable, np.ndarray] = {}  # per source, its last ``sample`` timestamps
        self._pos: dict[Hashable, float] = {}  # per source, its position
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
        """The source's event-time position: the median of its last ``2 * confirm - 1`` timestamps
        (-inf before ``confirm`` of them)."""
        return self._pos.get(source, -math.inf)

    def watermark(self, idle: Collection[Hashable] = (), now: float | None = None) -> float:
        """Windows ending at or before this may close (see the module docstring)."""
        busy = [self.position(s) for s in self._pos if s not in idle]
        if busy:
            wm = min(busy) if now is None else min(min(busy), now)
            wm -= self.lateness
        elif now is not None and math.isfinite(self._newest):  # all idle: up to the newest event's window
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
        """Window start and status (``OK``, ``LATE``, ``REPLAYED``) of each event (in arrival order);
        positions move here, the watermark only in ``advance``. ``move=False`` keeps the windows
        open without moving event time (an input that only waits for its window: an OTLP
        evaluation result)."""
        t = np.asarray(ts, dtype=np.float64)
        size = self.size
        starts = (np.floor_divide(t, size) * size).astype(np.int64)
        ends = starts + size
        status = np.where(ends <= self._closed_until, LATE, OK).astype(np.int8)
        status[self.counted(sources, t)] = REPLAYED
        uniq = set(sources) if move else set()
        src = None if len(uniq) <= 1 else np.asarray(sources, dtype=object)
        k, n = self.confirm, self.sample
        for s in uniq:
            mine = t if src is None else t[src == s]
            recent = np.concatenate((self._recent.get(s, _NONE), mine[-n:]))[-n:]
            self._recent[s] = recent
            if len(recent) >= k:
                self._pos[s] = float(np.partition(recent, len(recent) - k)[len(recent) - k])
            else:
                self._pos.setdefault(s, -math.inf)
        self._open.update(np.unique(starts[status == OK]).tolist())
        if len(t) and move:
            self._newest = max(self._newest, float(t.max()))
        return starts, status

    def counted(self, sources: Sequence[Hashable], ts: Sequence[float] | np.ndarray) -> np.ndarray:
        """Whether each event's window was already counted and written before a restart (``restore``)."""
        out = np.zeros(len(ts), dtype=bool)
        if not self._restored or not len(ts):
            return out
        ends = np.floor_divide(np.asarray(ts, dtype=np.float64), self.size) * self.size + self.size
        uniq = set(sources)
        src = None if len(uniq) == 1 else np.asarray(sources, dtype=object)
        for s in uniq & self._restored.keys():
            done = ends <= self._restored[s]
            out |= done if src is None else done & (src == s)
        return out

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
        self._pos.setdefault(source, -math.inf)

    def restore(self, source: Hashable, closed_until: float) -> None:
        """A restarted source: its windows ending by ``closed_until`` were already counted and written."""
        self._restored[source] = closed_until

    def restored(self, source: Hashable) -> float:
        """Up to where the source's windows were counted before a restart (-inf: nothing restored)."""
        return self._restored.get(source, -math.inf)

    def forget_source(self, source: Hashable) -> None:
        """Stop waiting for a source (a partition revoked from this worker)."""
        self._pos.pop(source, None)
        self._recent.pop(source, None)
        self._restored.pop(source, None)

    def reset(self) -> None:
        """Forget every source, open window and how far windows closed (a worker whose partitions
        were all revoked: the ones it is given next continue from their own checkpoints, which may
        be behind how far this clock had closed windows)."""
        self._pos.clear()
        self._recent.clear()
        self._restored.clear()
        self._newest = self._closed_until = -math.inf
        self._open.clear()

    def sources(self) -> set[Hashable]:
        return set(self._pos)

    def open_windows(self) -> set[int]:
        return set(self._open)

    def _close(self, starts: list[int]) -> None:
        if starts:
            self._open.difference_update(starts)
            self._closed_until = max(self._closed_until, float(starts[-1] + self.size))
