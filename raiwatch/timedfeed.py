"""A side file (delayed labels, evaluations) fed to a replay's pipeline in event time."""

from __future__ import annotations

from collections.abc import Callable, Iterator


class TimedFeed:
    """Numbered lines handed on (``send``, in batches of ``batch``) once the main stream has reached
    their timestamp (``stamp``: epoch seconds, -inf for a line to hand on at once); blank lines are
    skipped.

    >>> sent = []
    >>> feed = TimedFeed(iter([(1, b"a"), (2, b""), (3, b"b")]), lambda ln: 5.0 if ln == b"b" else 1.0,
    ...                  sent.append, batch=10)
    >>> feed.feed_until(2.0); feed.feed_until(9.0); sent
    [[(1, b'a')], [(3, b'b')]]
    """

    def __init__(
        self,
        lines: Iterator[tuple[int, bytes]],
        stamp: Callable[[bytes], float],
        send: Callable[[list[tuple[int, bytes]]], None],
        batch: int = 200,
    ):
        self._lines, self._stamp, self._send, self._batch = lines, stamp, send, batch
        self._next: tuple[int, bytes, float] | None = None

    def feed_until(self, until: float) -> None:
        """Hand on every line dated up to ``until``."""
        batch: list[tuple[int, bytes]] = []
        while True:
            if self._next is None:
                got = next(self._lines, None)
                if got is None:
                    break
                self._next = (*got, self._stamp(got[1]))
            number, line, ts = self._next
            if ts > until:
                break
            self._next = None
            if line.strip():
                batch.append((number, line))
            if len(batch) >= self._batch:
                self._send(batch)
                batch = []
        if batch:
            self._send(batch)
