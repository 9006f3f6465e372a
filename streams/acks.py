"""At-least-once: hold each Kafka event until its row is written and its window closed and written.

faust commits a partition's offset only up to its first unacknowledged message, so acking an
event here is what lets its offset be committed. An event whose window is still open, or whose
batch is still being written, stays unacked; after a crash it is consumed again and its window
rebuilt, and idempotent writes make the second pass harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import Any

_Held = tuple[Future | None, Any, Any]  # (batch write, stream, event)


class AckTracker:
    """Events held per window start (None: no window); ``release`` acks what is safe to commit."""

    def __init__(self) -> None:
        self._held: dict[int | None, list[_Held]] = {}

    def hold(
        self, stream: Any, events: Sequence[Any], windows: Sequence[int | None], durable: Future | None = None
    ) -> None:
        """Register a processed batch: its events, the window each fed, and its pending write."""
        held = self._held
        for ev, w in zip(events, windows, strict=True):
            entry = (durable, stream, ev)
            if w in held:
                held[w].append(entry)
            else:
                held[w] = [entry]

    async def release(self, open_windows: Iterable[int]) -> int:
        """Ack the events written and no longer in an open window; return how many were acked.

        A failed write re-raises here, so the worker stops without committing those offsets.
        """
        still_open = set(open_windows)
        acked = 0
        for w in [w for w in self._held if w not in still_open]:
            keep: list[_Held] = []
            for fut, stream, ev in self._held.pop(w):
                if fut is not None and not fut.done():
                    keep.append((fut, stream, ev))
                    continue
                if fut is not None:
                    fut.result()
                await stream.ack(ev)
                acked += 1
            if keep:
                self._held[w] = keep
        return acked

    @property
    def held(self) -> int:
        return sum(len(v) for v in self._held.values())
