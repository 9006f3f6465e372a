"""Recently seen event ids, in bounded memory: a redelivered event is counted once.

Producers retry, brokers redeliver: the same ``event_id`` can arrive twice, even with another
timestamp. ``RecentIds`` remembers the last ``capacity`` to ``2 * capacity`` ids (two
generations of sets: when the current one is full it becomes the previous one, and the previous
one is dropped), so memory is bounded whatever the traffic and a duplicate is caught as long as
it arrives within that many events of its first copy. A restarted worker refills it with the
ids of the events it had already counted (``remember``), so a copy arriving after a restart is
caught too.
"""

from __future__ import annotations

from collections.abc import Sequence


class RecentIds:
    """Bounded memory of recent ids.

    >>> seen = RecentIds(capacity=2)
    >>> seen.first_seen(["a", "b", "a"])
    [True, True, False]
    >>> seen.first_seen(["c", "b"])  # "a" and "b" moved to the previous generation; still remembered
    [True, False]
    """

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._current: set[str] = set()
        self._previous: set[str] = set()

    def first_seen(self, ids: Sequence[str]) -> list[bool]:
        """For each id, whether it is new (not seen before, nor earlier in ``ids``); remembers them."""
        current, previous = self._current, self._previous
        if not current.isdisjoint(ids) or not previous.isdisjoint(ids) or len(set(ids)) != len(ids):
            fresh = []
            for i in ids:
                fresh.append(i not in current and i not in previous)
                current.add(i)
        else:
            current.update(ids)
            fresh = [True] * len(ids)
        if len(current) >= self.capacity:
            self._previous, self._current = current, set()
        return fresh

    def remember(self, ids: Sequence[str]) -> None:
        """Take ``ids`` (oldest first) as seen, as ``first_seen`` would."""
        for start in range(0, len(ids), self.capacity):  # a generation at a time: the newest stay
            self.first_seen(ids[start : start + self.capacity])

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)
