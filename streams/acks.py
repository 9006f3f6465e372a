"""At-least-once: hold each Kafka event until the window it fed has been closed and written.

faust commits a partition's offset only up to its first unacknowledged message, so acking an
event here is what lets its offset be committed. An event whose window is still open stays
unacked; after a crash it is consumed again and its window rebuilt, and idempotent writes
make the second pass harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class AckTracker:
    """Events held per window start; ``release`` acks every event of a closed window."""

    def __init__(self) -> None:
        self._held: dict[int, list[tuple[Any, Any]]] = {}
        self._ready: list[tuple[Any, Any]] = []

    def hold(self, stream: Any, events: Sequence[Any], windows: Sequence[int | None]) -> None:
        """Register a processed batch; events with no window (rejected, late) are ready at once."""
        for ev, w in zip(events, windows, strict=True):
            if w is None:
                self._ready.append((stream, ev))
            else:
                self._held.setdefault(w, []).append((stream, ev))

    async def release(self, open_windows: Iterable[int]) -> int:
        """Ack the events of every window not in ``open_windows``; return how many were acked."""
        still_open = set(open_windows)
        ready, self._ready = self._ready, []
        for w in [w for w in self._held if w not in still_open]:
            ready += self._held.pop(w)
        for stream, ev in ready:
            await stream.ack(ev)
        return len(ready)

    @property
    def held(self) -> int:
        return sum(len(v) for v in self._held.values()) + len(self._ready)
