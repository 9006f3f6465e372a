"""Alert delivery: routes pick receivers for each incident; a thread per route drains the outbox.

The pipeline stores each incident change together with its notifications (``route``); each
route's thread sends its own, oldest first, and marks each delivered once its receiver answered
2xx, so a receiver that hangs delays only its own route, by at most its ``timeout_s`` per
notification. A failed one is retried after ``retry_min_s``, doubling up to ``retry_max_s``, for
as long as it takes: a receiver outage never blocks the pipeline and never loses a notification.
Firing incidents are re-sent to Alertmanager routes every ``resend_s``, as Alertmanager expects.

A problem (incidents grouped by ``notify.group_by``, ``alert_rules.grouping``) is paged once per
route, as Alertmanager groups alerts: its first incident's page waits the route's ``group_wait_s``
and carries every incident of the problem that opened meanwhile; later ones (``grouped``) go as one
update at most every ``group_interval_s``, each update carrying all that are due.
Nothing about one notification (a silence that cannot be read, a receiver's odd answer, a store
error) stops the others: it is logged, retried later, and the round goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from raiwatch.core import metrics
from raiwatch.core.config import NotifyConfig, RouteConfig
from raiwatch.core.matchers import Matcher, MatcherError, accept_all, matchers
from raiwatch.core.records import Incident
from storage.incidents import IncidentStore
from streams.notify import DeliveryError, post, request

log = logging.getLogger(__name__)
BATCH = 20  # notifications a route claims at once; their lease covers sending them all
GROUP_WAIT = "waiting group_wait_s for the rest of its problem"  # a first page's note while it waits
Silences = list[tuple[dict, dict[str, Matcher]]]  # (silence, its compiled matchers)


class Router:
    """The names of the routes each incident change goes to (matchers compiled once, here)."""

    def __init__(self, routes: list[RouteConfig]) -> None:
        self._routes = [(r, matchers(r.match)) for r in routes]

    def __call__(self, inc: Incident, kind: str) -> list[str]:
        return [r.name for r, ms in self._routes if takes(r, ms, inc)]


def takes(route: RouteConfig, ms: Mapping[str, Matcher], inc: Incident) -> bool:
    """Whether ``route`` takes ``inc``: its severity is listed (or none are) and every ``match``
    (the rule ``match`` syntax: ``v``, ``!v``, ``~re``, ``!~re``) accepts the incident's label."""
    if route.severities and inc.severity not in route.severities:
        return False
    return accept_all(ms, inc.labels)


def silenced_by(inc: Incident, silences: Silences) -> dict | None:
    """The first of these (active) silences whose matchers all accept the incident's labels,
    ``alertname`` (its rule) and ``severity``; None when none does."""
    labels = {**inc.labels, "alertname": inc.rule, "severity": inc.severity}
    for s, ms in silences:
        if accept_all(ms, labels):
            return s
    return None


def router(cfg: NotifyConfig) -> Router | None:
    """The names of the routes each incident change goes to; None when no route is configured."""
    return Router(list(cfg.routes)) if cfg.routes else None


class Delivery:
    """Routes incidents to receivers and delivers the outbox (``start``/``stop`` a thread per
    route, or call ``run_once`` from a test)."""

    def __init__(self, store: IncidentStore, cfg: NotifyConfig, wall: Callable[[], float] = time.time):
        self.store = store
        self.cfg = cfg
        self.routes = {r.name: r for r in cfg.routes}
        self._matchers = {r.name: matchers(r.match) for r in cfg.routes}
        self.wall = wall
        self._stop = threading.Event()
        # one thread per route, and one (None) for the housekeeping
        self._wakes: dict[str | None, threading.Event] = {n: threading.Event() for n in [*self.routes, None]}
        self._threads: list[threading.Thread] = []
        self._next_resend = dict.fromkeys(self.routes, 0.0)
        self._unreadable: set[str] = set()  # silences already reported as unreadable
        self._more = dict.fromkeys(self.routes, False)

    def run_once(self) -> int:
        """One round of every route, one after the other, and the housekeeping; how many were sent."""
        sent = sum(self.run_route(name) for name in self.routes)
        self._housekeeping()
        return sent

    def run_route(self, name: str) -> int:
        """Send the due notifications of route ``name`` (and re-send firing alerts to it when
        due); how many were sent."""
        route = self.routes[name]
        now = datetime.fromtimestamp(self.wall(), UTC)
        silences = self._silences(now)
        lease = 60.0 + BATCH * route.timeout_s  # never lapses while this round is still sending
        sent = 0
        self._more[name] = False
        claimed = self.store.claim_notifications(now, lease, BATCH, name)
        self._more[name] = len(claimed) == BATCH  # more may be due: the thread goes on at once
        for nid, _, kind, attempts, note, inc in claimed:
            try:
                if self._held(nid, name, kind, note, inc, now, silences):
                    continue
                sent += self._send(route, nid, kind, attempts, inc, now)
            except Exception as e:  # one notification's trouble never stops the others
                log.error("notification %d of %s to %s: %s: %s; retried in %.0f s", nid, inc.incident_id,
                          name, type(e).__name__, e, self.cfg.retry_max_s)  # fmt: skip
                self._try(self.store.mark_failed, nid, f"{type(e).__name__}: {e}",
                          now + timedelta(seconds=self.cfg.retry_max_s))  # fmt: skip
        if route.type == "alertmanager" and self.wall() >= self._next_resend[name]:
            self._next_resend[name] = self.wall() + self.cfg.resend_s
            sent += self._resend(route, now, silences)
        return sent

    def _send(
        self, route: RouteConfig, nid: int, kind: str, attempts: int, inc: Incident, now: datetime
    ) -> int:
        related: list[tuple[int, Incident]] = []
        if kind in ("opened", "grouped") and inc.group_id:  # the problem's updates due go along
            related = [(n, i) for n, i in self.store.grouped_pending(inc.group_id, route.name) if n != nid]
        try:
            post(request(route, inc, kind, now, self.cfg.resend_s, [i for _, i in related]), route.timeout_s)
        except DeliveryError as e:  # its message shows no URL path, password or key
            delay = min(self.cfg.retry_max_s, self.cfg.retry_min_s * 2**attempts)
            self.store.mark_failed(nid, str(e), now + timedelta(seconds=delay))
            metrics.NOTIFICATIONS.labels(route.name, "failed").inc()
            log.warning("notification of %s to %s failed (attempt %d, next in %.0f s): %s",
                        inc.incident_id, route.name, attempts + 1, delay, e)  # fmt: skip
            return 0
        self.store.mark_delivered(nid, now)
        for n, _ in related:
            self.store.skip(n, f"sent with notification {nid} of its problem", now)
        metrics.NOTIFICATIONS.labels(route.name, "delivered").inc()
        return 1

    def _silences(self, now: datetime) -> Silences:
        """The active silences with their matchers compiled; one that does not compile (stored
        before matchers were checked) holds nothing back and is reported once."""
        out = []
        for s in self.store.active_silences(now):
            try:
                out.append((s, matchers(s["matchers"])))
            except MatcherError as e:
                if s["silence_id"] not in self._unreadable:
                    self._unreadable.add(s["silence_id"])
                    log.error("silence %s holds nothing back: its matcher %s (expire it and add it again)",
                              s["silence_id"], e)  # fmt: skip
        return out

    @staticmethod
    def _try(fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # the store away: the claim lapses and the notification is due again
            log.exception("could not record a notification's outcome")

    def _housekeeping(self) -> None:
        """Park the notifications of routes no longer configured; publish the outbox depth."""
        now = datetime.fromtimestamp(self.wall(), UTC)
        self.store.park_unrouted(
            list(self.routes),
            "route is no longer configured (looked at again hourly)",
            now + timedelta(hours=1),
            now,
        )
        metrics.OUTBOX_DEPTH.set(self.store.outbox_depth())

    def _held(
        self, nid: int, name: str, kind: str, note: str, inc: Incident, now: datetime, silences: Silences
    ) -> bool:
        """Postpone or close a notification that must not go out now; True when it did so."""
        silence = silenced_by(inc, silences)
        if silence is not None:
            note = (f"silenced by {silence['silence_id']} ({silence['author']}: {silence['comment']}) "
                    f"until {silence['ends_at']:%Y-%m-%d %H:%M}Z")  # fmt: skip
            self.store.postpone(nid, note, silence["ends_at"])
            metrics.NOTIFICATIONS.labels(name, "silenced").inc()
            return True
        if kind == "opened":
            if inc.status == "resolved" and note.startswith("silenced by"):
                self.store.skip(nid, "not sent: resolved while silenced", now)
                return True
            wait = self.routes[name].group_wait_s
            if inc.group_id and wait and not note.startswith(GROUP_WAIT):  # its problem may grow
                self.store.postpone(nid, GROUP_WAIT, now + timedelta(seconds=wait))
                return True
            return False
        if kind == "grouped":
            return self._update_due(nid, name, inc, now)
        if kind == "acknowledged":
            if self.routes[name].type == "alertmanager":
                self.store.skip(nid, "not sent: Alertmanager has no acknowledgement (silence it there)", now)
                return True
            return self._after_opening(nid, name, inc, now)
        if inc.status != "resolved":
            self.store.skip(nid, "not sent: the incident reopened (flap control)", now)
            return True
        hold = (inc.resolved_at or now) + timedelta(seconds=self.cfg.resolve_delay_s)
        if hold > now:  # a flap may still reopen it
            self.store.postpone(nid, f"held back until {hold:%H:%M:%S}Z (notify.resolve_delay_s)", hold)
            return True
        return self._after_opening(nid, name, inc, now)

    def _update_due(self, nid: int, name: str, inc: Incident, now: datetime) -> bool:
        """Hold a problem's update until its page went out and ``group_interval_s`` passed since the
        last message of the problem to this route; True when held."""
        group = inc.group_id or ""
        if self.store.opening_pending(group, name):  # its first page will carry this one
            self.store.postpone(nid, "waiting for its problem's first page", now + timedelta(seconds=1))
            return True
        last = self.store.last_page(group, name)
        if last is None:  # the first page never went (silenced): this one is the page
            return False
        due = last + timedelta(seconds=self.routes[name].group_interval_s)
        if due > now:
            self.store.postpone(nid, f"grouped into its problem's next update at {due:%H:%M:%S}Z", due)
            return True
        return False

    def _after_opening(self, nid: int, name: str, inc: Incident, now: datetime) -> bool:
        """Hold a follow-up (acknowledged, resolved) until the opening went out; drop it if it never will."""
        opening = self.store.notification_state(inc.incident_id, name, "opened")
        if opening == "skipped":
            self.store.skip(nid, "not sent: its opening was not sent", now)
            return True
        if opening == "pending":  # the receiver hears of it opening first
            wait = now + timedelta(seconds=self.cfg.retry_min_s)
            self.store.postpone(nid, "waiting for the opening to be delivered", wait)
            return True
        return False

    def _resend(self, route: RouteConfig, now: datetime, silences: Silences) -> int:
        """Firing incidents to an Alertmanager route again (their ``endsAt`` moves ahead)."""
        sent = 0
        for inc in self.store.open_incidents():
            if silenced_by(inc, silences) is not None or not takes(route, self._matchers[route.name], inc):
                continue
            try:
                post(request(route, inc, "opened", now, self.cfg.resend_s), route.timeout_s)
                sent += 1
            except DeliveryError as e:  # the next round tries again; the outbox has the first
                log.warning("re-sending %s to %s failed: %s", inc.incident_id, route.name, e)
        return sent

    def start(self) -> None:
        """A thread per route, and one for the housekeeping."""
        for name in self._wakes:
            label = f"raiwatch-delivery-{'outbox' if name is None else name}"
            t = threading.Thread(target=self._loop, args=(name,), name=label, daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self, _changes: object = None) -> None:
        """Deliver now rather than at the next poll (the pipeline calls it when it queued changes)."""
        for w in self._wakes.values():
            w.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _loop(self, name: str | None) -> None:
        wake = self._wakes[name]
        while not self._stop.is_set():
            try:
                if name is None:
                    self._housekeeping()
                else:
                    self.run_route(name)
            except Exception:  # the store away for a moment: try again next round
                log.exception("alert delivery round of %s failed", "the outbox" if name is None else name)
            if name is not None and self._more[name]:
                continue
            wake.wait(self.cfg.poll_s)
            wake.clear()
