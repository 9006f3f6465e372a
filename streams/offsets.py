"""At-least-once: an offset is committed only once every message before it is durable and done.

A message is *done* once its batch's writes are durable (and any row ClickHouse refused is in the
dead-letter topic) and the window it fed has closed and been written. The committed offset of a
partition is its lowest message that is not done: after a crash everything from there is read
again, and idempotent writes and the window-clock checkpoint make the second pass harmless.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Settled(Protocol):
    """What a held batch waits for: ``done()``, then ``result()`` (raises if its writes failed)."""

    def done(self) -> bool: ...

    def result(self) -> object: ...


@dataclass(slots=True)
class _Held:
    first: int  # lowest offset of the batch in this partition
    last: int  # highest
    settled: Settled | None
    window_min: dict[int | None, int] = field(default_factory=dict)  # window -> lowest offset feeding it


class OffsetTracker:
    """Messages handed to the pipeline, per partition (any key: a TopicPartition), until they are done.

    >>> from concurrent.futures import Future
    >>> t, written = OffsetTracker(), Future()
    >>> t.hold(0, [10, 11, 12], [60, 120, None], written)
    >>> t.committable(open_windows={120})  # batch not written yet: nothing moves
    {0: 10}
    >>> written.set_result([])
    >>> t.committable(open_windows={120})  # offset 11 still feeds an open window
    {0: 11}
    >>> t.committable(open_windows=set())
    {0: 13}
    """

    def __init__(self) -> None:
        self._held: dict[Hashable, deque[_Held]] = {}
        self._next: dict[Hashable, int] = {}  # partition -> offset to commit (next one not done)

    def hold(
        self,
        partition: Hashable,
        offsets: Sequence[int],
        windows: Sequence[int | None],
        settled: Settled | None,
    ) -> None:
        """Register a batch's messages of one partition (ascending offsets) and the window each fed."""
        if not offsets:
            return
        held = _Held(offsets[0], offsets[-1], settled)
        wm = held.window_min
        for off, w in zip(offsets, windows, strict=True):
            if w not in wm:
                wm[w] = off
        self._held.setdefault(partition, deque()).append(held)
        self._next.setdefault(partition, offsets[0])

    def committable(self, open_windows: Iterable[int]) -> dict[Hashable, int]:
        """Every partition held so far with the offset to commit now (raises a failed write)."""
        still_open = set(open_windows)
        for part, queue in self._held.items():
            while queue:
                h = queue[0]
                if h.settled is not None:
                    if not h.settled.done():
                        self._next[part] = h.first
                        break
                    h.settled.result()
                blocked = [off for w, off in h.window_min.items() if w is not None and w in still_open]
                if blocked:
                    self._next[part] = min(blocked)
                    break
                queue.popleft()
                self._next[part] = h.last + 1
        return dict(self._next)

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Drop what is held for partitions this worker no longer reads."""
        for p in partitions:
            self._held.pop(p, None)
            self._next.pop(p, None)

    def position(self, partition: Hashable) -> int | None:
        """The offset that would be committed for ``partition`` now (None if nothing was held)."""
        return self._next.get(partition)

    def pending(self) -> list[Settled]:
        """What the held batches still wait for."""
        return [h.settled for q in self._held.values() for h in q if h.settled is not None]

    @property
    def held(self) -> int:
        """Batches (per partition) not yet done."""
        return sum(len(q) for q in self._held.values())
