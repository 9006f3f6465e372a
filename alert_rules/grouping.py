"""Problems: incidents that share a cause, grouped so that on-call is paged once per problem.

An incident that opens joins the *problem* of its grouping labels (``by``, the model by default)
while that problem is active: something happened in it less than ``hold`` ago (one of its
incidents opened or resolved). Otherwise it starts a problem of its own, named by its incident id.
An incident that keeps firing does not by itself keep its problem open to newcomers: a standing
condition paged on Monday is no cause of Thursday's drift, which is paged on its own. A
campaign's clusters, its effect on the safety rate and on prompt length, a drift and the slow
shift that follows it on one model in one span are then one problem: routes page its first
incident and send the others as updates of that page (``raiwatch.delivery``). Every incident
still counts as one, with its rule, its evidence and its feedback; only the page is shared.

Grouping runs in event time inside the rule engine, so a replay, a restarted worker and a
backtest assign the same problems.

>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> g = Problems(("model_id",), timedelta(minutes=30))
>>> a = g.join("inc-a", {"model_id": "m"}, t0)
>>> b = g.join("inc-b", {"model_id": "m"}, t0 + timedelta(minutes=5))
>>> g.resolved("inc-a", t0 + timedelta(minutes=6)); g.resolved("inc-b", t0 + timedelta(minutes=7))
>>> c = g.join("inc-c", {"model_id": "m"}, t0 + timedelta(minutes=20))   # within the hold
>>> g.resolved("inc-c", t0 + timedelta(minutes=25))
>>> d = g.join("inc-d", {"model_id": "m"}, t0 + timedelta(hours=2))      # quiet past the hold: a new one
>>> e = g.join("inc-e", {"model_id": "m"}, t0 + timedelta(hours=2, minutes=40))  # inc-d still fires
>>> a, b, c, d, e
('inc-a', 'inc-a', 'inc-a', 'inc-d', 'inc-e')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from raiwatch.core.records import Incident


@dataclass(slots=True)
class _Problem:
    group_id: str
    firing: set[str] = field(default_factory=set)  # its incidents still open
    quiet_since: datetime | None = None  # when its last incident resolved
    last: datetime | None = None  # when one of its incidents last opened or resolved


class Problems:
    """The active problem of each grouping key; ``join`` names the problem an opening incident is in."""

    def __init__(self, by: Iterable[str] = ("model_id",), hold: timedelta = timedelta(minutes=30)):
        self.by = tuple(by)
        self.hold = hold
        self._active: dict[tuple[str, ...], _Problem] = {}
        self._of: dict[str, tuple[str, ...]] = {}  # open incident id -> its key

    def key(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(labels.get(k, "") for k in self.by)

    def join(self, incident_id: str, labels: Mapping[str, str], at: datetime) -> str:
        """The problem (group id) of an incident opening ``at`` with these labels."""
        key = self.key(labels)
        p = self._active.get(key)
        if p is None or p.last is None or at - p.last > self.hold:
            p = self._active[key] = _Problem(incident_id)
        p.firing.add(incident_id)
        p.quiet_since = None
        p.last = max(p.last or at, at)
        self._of[incident_id] = key
        return p.group_id

    def reopened(self, inc: Incident) -> None:
        """A resolved incident firing again (flap control): it counts as firing in its problem."""
        key = self._of.get(inc.incident_id) or self.key(inc.labels)
        p = self._active.get(key)
        if p is not None and p.group_id == (inc.group_id or inc.incident_id):
            p.firing.add(inc.incident_id)
            p.quiet_since = None
            self._of[inc.incident_id] = key

    def resolved(self, incident_id: str, at: datetime) -> None:
        key = self._of.pop(incident_id, None)
        p = self._active.get(key) if key is not None else None
        if p is not None and incident_id in p.firing:  # not one of a problem a newer one replaced
            p.firing.discard(incident_id)
            p.last = max(p.last or at, at)
            if not p.firing:
                p.quiet_since = at

    def restore(self, incidents: Iterable[Incident]) -> None:
        """Take back problems from stored incidents (open ones, and ones resolved within the hold),
        oldest first, so a restarted worker groups as the one before it did."""
        for inc in sorted(incidents, key=lambda i: i.opened_at):
            key = self.key(inc.labels)
            gid = inc.group_id or inc.incident_id
            p = self._active.get(key)
            if p is None or p.group_id != gid:
                p = self._active[key] = _Problem(gid)
            p.last = max(p.last or inc.opened_at, inc.opened_at)
            if inc.status == "resolved" and inc.resolved_at is not None:
                p.firing.discard(inc.incident_id)
                p.last = max(p.last, inc.resolved_at)
                if not p.firing:
                    p.quiet_since = max(p.quiet_since or inc.resolved_at, inc.resolved_at)
            else:
                p.firing.add(inc.incident_id)
                p.quiet_since = None
                self._of[inc.incident_id] = key

    def evict(self, now: datetime) -> None:
        """Forget problems quiet for longer than the hold (bounded memory)."""
        since = now - self.hold
        quiet = [k for k, p in self._active.items() if not p.firing and (p.quiet_since or now) < since]
        for key in quiet:
            del self._active[key]

    def forget(self, models: Iterable[str]) -> None:
        """Drop the problems of these models (their partitions moved to another worker)."""
        gone = set(models)
        if "model_id" not in self.by:
            return
        i = self.by.index("model_id")
        for key in [k for k in self._active if k[i] in gone]:
            del self._active[key]
        for inc_id in [i_ for i_, k in self._of.items() if k[i] in gone]:
            del self._of[inc_id]
