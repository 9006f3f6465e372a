"""Event-time tumbling windows: which window an event belongs to, and when a window closes.

A window ``[start, start + size)`` closes once the watermark passes its end. The watermark is
the slowest source's newest event time minus the allowed lateness (one source per Kafka
partition, or the single file in replay), so a partition that is behind does not make the
others' events late. A source that has sent nothing for ``source_idle_s`` of wall time stops
holding the watermark back (a model that went quiet must not freeze every window). An event
whose window has already closed is *late*: it is stored but no longer counted in that window's
signals.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence


class WindowClock:
    """Tracks open windows and the watermark.

    >>> clock = WindowClock(size_s=60, allowed_lateness_s=30)
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
    """

    def __init__(
        self,
        size_s: int,
        allowed_lateness_s: float,
        source_idle_s: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.size = int(size_s)
        self.lateness = float(allowed_lateness_s)
        self.source_idle_s = source_idle_s
        self._clock = clock
        self._source_max: dict[Hashable, float] = {}
        self._source_seen: dict[Hashable, float] = {}  # wall time of each source's last event
        self._open: set[int] = set()
        self._closed_until = -math.inf  # every window ending at or before this is closed

    @property
    def watermark(self) -> float:
        if not self._source_max:
            return self._closed_until
        now, seen = self._clock(), self._source_seen
        active = [m for s, m in self._source_max.items() if now - seen[s] < self.source_idle_s]
        return max(self._closed_until, min(active or self._source_max.values()) - self.lateness)

    def assign(self, source: Hashable, ts: float) -> int | None:
        """Window start for an event at ``ts`` (epoch seconds), or None when it is late."""
        return self.assign_batch([source], [ts])[0]

    def assign_batch(self, sources: Sequence[Hashable], ts: Sequence[float]) -> list[int | None]:
        """``assign`` for a whole batch (same results: the watermark moves only in ``advance``)."""
        size, closed = self.size, self._closed_until
        starts: list[int | None] = [int(t // size) * size for t in ts]
        smax = self._source_max
        for i, (src, t, start) in enumerate(zip(sources, ts, starts, strict=True)):
            if start + size <= closed:
                starts[i] = None
            elif t > smax.get(src, -math.inf):
                smax[src] = t
        self._open.update(s for s in set(starts) if s is not None)
        now = self._clock()
        for src in set(sources):
            self._source_seen[src] = now
        return starts

    def advance(self) -> list[int]:
        """Close and return (oldest first) the windows whose end the watermark has passed."""
        wm = self.watermark
        closed = sorted(s for s in self._open if s + self.size <= wm)
        self._close(closed)
        return closed

    def close_all(self) -> list[int]:
        """Close every open window (end of input, or a stream gone idle)."""
        closed = sorted(self._open)
        self._close(closed)
        return closed

    def forget_source(self, source: Hashable) -> None:
        """Stop waiting for a source (a partition revoked from this worker)."""
        self._source_max.pop(source, None)
        self._source_seen.pop(source, None)

    def open_windows(self) -> set[int]:
        return set(self._open)

    def _close(self, starts: list[int]) -> None:
        if starts:
            self._open.difference_update(starts)
            self._closed_until = max(self._closed_until, starts[-1] + self.size)
