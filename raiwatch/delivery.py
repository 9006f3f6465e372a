"""Alert delivery: routes pick receivers for each incident; a thread drains the store's outbox.

The pipeline stores each incident change together with its notifications (``route``); this
thread sends them, oldest first, and marks each delivered once its receiver answered 2xx. A
failed one is retried after ``retry_min_s``, doubling up to ``retry_max_s``, for as long as it
takes: a receiver outage never blocks the pipeline and never loses a notification. Firing
incidents are re-sent to Alertmanager routes every ``resend_s``, as Alertmanager expects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from alert_rules.loader import Matcher
from raiwatch.core import metrics
from raiwatch.core.config import NotifyConfig, RouteConfig
from raiwatch.core.records import Incident
from storage.incidents import IncidentStore
from streams.notify import DeliveryError, post, request

log = logging.getLogger(__name__)


def matches(route: RouteConfig, inc: Incident) -> bool:
    """Whether ``route`` takes ``inc``: its severity is listed (or none are) and every ``match``
    (the rule ``match`` syntax: ``v``, ``!v``, ``~re``, ``!~re``) accepts the incident's label."""
    if route.severities and inc.severity not in route.severities:
        return False
    return all(Matcher.of([want]).accepts(inc.labels.get(key)) for key, want in route.match.items())


def silenced_by(inc: Incident, silences: list[dict]) -> dict | None:
    """The first of these (active) silences whose matchers all accept the incident's labels,
    ``alertname`` (its rule) and ``severity``; None when none does."""
    labels = {**inc.labels, "alertname": inc.rule, "severity": inc.severity}
    for s in silences:
        if all(Matcher.of([v]).accepts(labels.get(k)) for k, v in s["matchers"].items()):
            return s
    return None


def router(cfg: NotifyConfig) -> Callable[[Incident, str], list[str]] | None:
    """The names of the routes each incident change goes to; None when no route is configured."""
    if not cfg.routes:
        return None
    routes = list(cfg.routes)
    return lambda inc, kind: [r.name for r in routes if matches(r, inc)]


class Delivery:
    """Routes incidents to receivers and delivers the outbox (``start``/``stop`` a thread, or
    call ``run_once`` from a test)."""

    def __init__(self, store: IncidentStore, cfg: NotifyConfig, wall: Callable[[], float] = time.time):
        self.store = store
        self.cfg = cfg
        self.routes = {r.name: r for r in cfg.routes}
        self.wall = wall
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_resend = 0.0

    def run_once(self) -> int:
        """Send every due notification, and re-send firing alerts when due; return how many were sent."""
        now = datetime.fromtimestamp(self.wall(), UTC)
        silences = self.store.active_silences(now)
        sent = 0
        for nid, name, kind, attempts, note, inc in self.store.claim_notifications(now):
            route = self.routes.get(name)
            if route is None:
                self.store.mark_failed(
                    nid, f"route {name!r} is no longer configured", now + timedelta(hours=1)
                )
                continue
            if self._held(nid, name, kind, note, inc, now, silences):
                continue
            try:
                post(*request(route, inc, kind, now, self.cfg.resend_s), route.timeout_s)
            except DeliveryError as e:
                delay = min(self.cfg.retry_max_s, self.cfg.retry_min_s * 2**attempts)
                self.store.mark_failed(nid, str(e), now + timedelta(seconds=delay))
                metrics.NOTIFICATIONS.labels(name, "failed").inc()
                log.warning("notification of %s to %s failed (attempt %d, next in %.0f s): %s",
                            inc.incident_id, name, attempts + 1, delay, e)  # fmt: skip
                continue
            self.store.mark_delivered(nid, now)
            metrics.NOTIFICATIONS.labels(name, "delivered").inc()
            sent += 1
        if self.wall() >= self._next_resend:
            self._next_resend = self.wall() + self.cfg.resend_s
            sent += self._resend(now, silences)
        metrics.OUTBOX_DEPTH.set(self.store.outbox_depth())
        return sent

    def _held(
        self, nid: int, name: str, kind: str, note: str, inc: Incident, now: datetime, silences: list[dict]
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
            return False
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

    def _resend(self, now: datetime, silences: list[dict]) -> int:
        """Firing incidents to Alertmanager routes again (their ``endsAt`` moves ahead)."""
        managers = [r for r in self.routes.values() if r.type == "alertmanager"]
        if not managers:
            return 0
        sent = 0
        for inc in self.store.open_incidents():
            if silenced_by(inc, silences) is not None:
                continue
            for r in managers:
                if matches(r, inc):
                    try:
                        post(*request(r, inc, "opened", now, self.cfg.resend_s), r.timeout_s)
                        sent += 1
                    except DeliveryError as e:  # the next round tries again; the outbox has the first
                        log.warning("re-sending %s to %s failed: %s", inc.incident_id, r.name, e)
        return sent

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="raiwatch-delivery", daemon=True)
        self._thread.start()

    def wake(self, _changes: object = None) -> None:
        """Deliver now rather than at the next poll (the pipeline calls it when it queued changes)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the store away for a moment: try again next round
                log.exception("alert delivery round failed")
            self._wake.wait(self.cfg.poll_s)
            self._wake.clear()
