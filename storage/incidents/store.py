"""The SQL incident store: what the rule engine opens and on-call acknowledges, resolves and rates.

``apply`` takes the rule engine's changes in one transaction and is idempotent: replaying a
window after a restart changes nothing that was already stored. A change finds its incident by
``incident_id`` first, then by the non-resolved incident with its ``dedup_key``; at most one of
those exists (a partial unique index guarantees it). Stale changes (event time older than the
stored ``updated_at``) and changes for incidents already resolved are skipped.

Every transition is written to ``incident_events`` so that ``history`` shows who did what, when.
"""

from __future__ import annotations

import builtins
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any, TypeVar

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from raiwatch.core.errors import StorageError
from raiwatch.core.matchers import MatcherError
from raiwatch.core.matchers import matchers as compile_matchers
from raiwatch.core.records import Incident, IncidentChange
from storage.incidents.db import WRITE, make_engine, safe_url, upgrade
from storage.incidents.models import (
    FEEDBACKS,
    NOTIFICATION_KINDS,
    SEVERITIES,
    STATUSES,
    IncidentEventRow,
    IncidentRow,
    NotificationRow,
    SilenceRow,
    to_utc,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
Route = Callable[[Incident, str], Sequence[str]]  # incident, "opened"/"resolved" -> route names

ENGINE_ACTOR = "rule-engine"  # actor of the history rows that ``apply`` writes
ATTEMPTS = 3  # a transaction that lost a race or hit a transient error is retried this often
_BACKOFF_S = (0.05, 0.25)


def _now() -> datetime:
    return datetime.now(UTC)


def _jsonable(x: float | None) -> float | str | None:
    return x if x is None or math.isfinite(x) else str(x)


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


def _record(row: IncidentRow) -> Incident:
    return Incident(
        incident_id=row.incident_id,
        dedup_key=row.dedup_key,
        rule=row.rule,
        signal=row.signal,
        severity=row.severity,  # type: ignore[arg-type]  # CHECK constraint keeps it in the Literal
        status=row.status,  # type: ignore[arg-type]
        opened_at=row.opened_at,
        acknowledged_at=row.acknowledged_at,
        resolved_at=row.resolved_at,
        labels=dict(row.labels or {}),
        summary=row.summary,
        runbook_url=row.runbook_url,
        value=row.value,
        threshold=row.threshold,
        feedback=row.feedback,  # type: ignore[arg-type]
        group_id=row.group_id,
        updated_at=row.updated_at,
    )


def _leads(inc: Incident) -> bool:
    """Whether an incident started its problem."""
    return inc.group_id is None or inc.group_id == inc.incident_id


def _notification(s: Session, incident_id: str, route: str, kind: str) -> NotificationRow | None:
    """The outbox row of one incident, route and kind (at most one: a unique index)."""
    return s.scalars(
        select(NotificationRow).where(
            NotificationRow.incident_id == incident_id,
            NotificationRow.route == route,
            NotificationRow.kind == kind,
        )
    ).one_or_none()


def _check(change: IncidentChange) -> None:
    inc = change.incident
    where = f"incident change {change.kind!r} for {inc.incident_id!r}"
    if change.kind not in ("opened", "updated", "resolved", "reopened"):
        raise ValueError(f"{where}: kind must be opened, updated, resolved or reopened")
    if not inc.incident_id or not inc.dedup_key:
        raise ValueError(f"{where}: incident_id and dedup_key must not be empty")
    if inc.severity not in SEVERITIES:
        raise ValueError(f"{where}: severity {inc.severity!r} is not one of {', '.join(SEVERITIES)}")
    if inc.feedback is not None and inc.feedback not in FEEDBACKS:
        raise ValueError(f"{where}: feedback {inc.feedback!r} is not one of {', '.join(FEEDBACKS)}")


class IncidentStore:
    """Incidents in a SQL database (SQLite file or PostgreSQL), migrated on open by default."""

    def __init__(self, url: str, migrate: bool = True) -> None:
        self._engine = make_engine(url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self.url = safe_url(self._engine.url)
        if migrate:
            upgrade(self._engine)

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> IncidentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"IncidentStore({self.url!r})"

    # -- rule engine -----------------------------------------------------------------------------

    def apply(
        self, changes: Sequence[IncidentChange], routes: Route | None = None
    ) -> builtins.list[Incident]:
        """Store the rule engine's changes, all or none; re-applying the same changes is a no-op.

        With ``routes`` (incident, "opened" or "resolved" -> route names), each opening and
        resolution also goes to the outbox, in the same transaction: one notification per route,
        delivered later by ``claim_notifications``/``mark_delivered``, never lost and never twice
        queued. Returns the stored incidents the changes touched, as the store now has them (with
        what on-call did to them, which the rule engine does not know).
        """
        for change in changes:
            _check(change)

        def run(s: Session) -> builtins.list[Incident]:
            rows = [self._apply_one(s, change) for change in changes]
            s.flush()
            if routes is not None:  # a problem's first incident first: the others are its updates
                leads = sorted(zip(changes, rows, strict=True), key=lambda cr: not _leads(cr[0].incident))
                for change, row in leads:
                    if row is None or change.kind not in NOTIFICATION_KINDS:
                        continue
                    if change.kind == "opened" and row.status == "resolved":
                        continue  # a replayed opening of an incident already over: nobody to page
                    self._queue(s, _record(row), change.kind, routes)
            return [_record(r) for r in dict.fromkeys(r for r in rows if r is not None)]

        return self._transact(run, write=True) if changes else []

    def changed_since(self, cursor: int = 0, limit: int = 1000) -> tuple[builtins.list[Incident], int]:
        """Incidents with a history line newer than ``cursor`` (0: all), and the cursor to pass next.

        What a mirror polls to follow the store, on-call's acknowledgements and feedback included.
        """

        def read(s: Session) -> tuple[builtins.list[Incident], int]:
            q = (
                select(IncidentEventRow.id, IncidentEventRow.incident_id)
                .where(IncidentEventRow.id > cursor)
                .order_by(IncidentEventRow.id)
                .limit(limit)
            )
            rows = s.execute(q).all()
            if not rows:
                return [], cursor
            ids = list(dict.fromkeys(i for _, i in rows))
            found = s.scalars(select(IncidentRow).where(IncidentRow.incident_id.in_(ids))).all()
            return [_record(r) for r in found], rows[-1][0]

        return self._transact(read)

    def _apply_one(self, s: Session, change: IncidentChange) -> IncidentRow | None:
        inc = change.incident
        row = s.get(IncidentRow, inc.incident_id, with_for_update=True)
        if row is None:
            row = s.scalars(
                select(IncidentRow)
                .where(IncidentRow.dedup_key == inc.dedup_key, IncidentRow.status != "resolved")
                .with_for_update()
            ).one_or_none()
        if row is None and change.kind == "opened":
            return self._insert(s, inc)
        if change.kind == "reopened":
            return (
                self._reopen(s, row, inc) if row is not None and row.incident_id == inc.incident_id else row
            )
        if row is None or row.status == "resolved":
            log.debug("incident change %s for %s: no open incident, skipped", change.kind, inc.dedup_key)
            return row
        if change.kind == "resolved":
            self._resolve_by_engine(s, row, inc)
        else:
            self._refresh(s, row, inc)
        return row

    def _insert(self, s: Session, inc: Incident) -> IncidentRow:
        opened_at = to_utc(inc.opened_at)
        row = IncidentRow(
            incident_id=inc.incident_id,
            dedup_key=inc.dedup_key,
            rule=inc.rule,
            signal=inc.signal,
            severity=inc.severity,
            status="open",
            opened_at=opened_at,
            labels=dict(inc.labels),
            summary=inc.summary,
            runbook_url=inc.runbook_url,
            value=inc.value,
            threshold=inc.threshold,
            updated_at=to_utc(inc.updated_at) or opened_at,
            group_id=inc.group_id,
        )
        s.add(row)
        detail = {
            "severity": inc.severity,
            "value": _jsonable(inc.value),
            "threshold": _jsonable(inc.threshold),
            "summary": inc.summary,
        }
        self._event(s, inc.incident_id, "opened", opened_at, ENGINE_ACTOR, detail)
        s.flush()  # a concurrent open of the same dedup_key fails here, and the retry updates it
        return row

    def _refresh(self, s: Session, row: IncidentRow, inc: Incident) -> None:
        at = to_utc(inc.updated_at or inc.opened_at)
        if at is not None and row.updated_at is not None and at < row.updated_at:
            return  # older than what is stored: a replayed window
        if _same(row.value, inc.value) and row.summary == inc.summary and row.updated_at == at:
            return
        changed = not _same(row.value, inc.value) or row.summary != inc.summary
        row.value, row.summary, row.updated_at = inc.value, inc.summary, at
        if changed:  # a re-confirmation alone moves updated_at and leaves no history row
            detail = {"value": _jsonable(inc.value), "summary": inc.summary}
            self._event(s, row.incident_id, "updated", at or _now(), ENGINE_ACTOR, detail)

    def _reopen(self, s: Session, row: IncidentRow, inc: Incident) -> IncidentRow:
        """The rule fired again soon after resolving: the same incident is open again (no new page)."""
        if row.status != "resolved":
            return row
        at = to_utc(inc.updated_at) or _now()
        detail = {
            "reopened": True,
            "was_resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
        }
        row.status, row.resolved_at, row.updated_at = "open", None, at
        self._event(s, row.incident_id, "updated", at, ENGINE_ACTOR, detail)
        return row

    def _resolve_by_engine(self, s: Session, row: IncidentRow, inc: Incident) -> None:
        at = to_utc(inc.resolved_at or inc.updated_at) or _now()
        if at < row.opened_at:
            log.debug("resolve of %s at %s predates its opening: skipped", row.incident_id, at)
            return
        row.status, row.resolved_at = "resolved", at
        self._event(s, row.incident_id, "resolved", at, ENGINE_ACTOR, {})

    def open_incidents(self) -> builtins.list[Incident]:
        """Every incident not resolved (open or acknowledged), oldest first."""
        q = (
            select(IncidentRow)
            .where(IncidentRow.status != "resolved")
            .order_by(IncidentRow.opened_at, IncidentRow.incident_id)
        )
        return self._transact(lambda s: [_record(r) for r in s.scalars(q)])

    # -- on-call ---------------------------------------------------------------------------------

    def get(self, incident_id: str) -> Incident:
        """The incident with this id, or with this unique id prefix; KeyError otherwise."""
        return self._transact(lambda s: _record(self._find(s, incident_id)))

    def list(
        self, status: str | None = None, rule: str | None = None, limit: int = 50
    ) -> builtins.list[Incident]:
        """Incidents newest first (by ``opened_at``), optionally of one status and/or rule."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        q = select(IncidentRow).order_by(IncidentRow.opened_at.desc(), IncidentRow.incident_id.desc())
        if status is not None:
            q = q.where(IncidentRow.status == status)
        if rule is not None:
            q = q.where(IncidentRow.rule == rule)
        return self._transact(lambda s: [_record(r) for r in s.scalars(q.limit(limit))])

    def acknowledge(
        self, incident_id: str, actor: str = "", at: datetime | None = None, routes: Route | None = None
    ) -> Incident:
        """Mark an open incident acknowledged (no-op if it already is); ValueError if resolved.
        With ``routes``, the acknowledgement goes to the outbox too (PagerDuty's ``acknowledge``)."""

        def ack(s: Session) -> Incident:
            row = self._find(s, incident_id, lock=True)
            if row.status == "resolved":
                when = row.resolved_at.isoformat() if row.resolved_at else "an unknown time"
                raise ValueError(
                    f"incident {row.incident_id} was resolved at {when} and cannot be acknowledged; "
                    "a new incident opens if the rule fires again"
                )
            if row.status == "open":
                row.status, row.acknowledged_at = "acknowledged", to_utc(at) or _now()
                self._event(s, row.incident_id, "acknowledged", row.acknowledged_at, actor, {})
                if routes is not None:
                    self._queue(s, _record(row), "acknowledged", routes)
            return _record(row)

        return self._transact(ack, write=True)

    def resolve(self, incident_id: str, actor: str = "", at: datetime | None = None) -> Incident:
        """Resolve an incident by hand (no-op if it already is resolved)."""

        def res(s: Session) -> Incident:
            row = self._find(s, incident_id, lock=True)
            if row.status != "resolved":
                row.status, row.resolved_at = "resolved", to_utc(at) or _now()
                self._event(s, row.incident_id, "resolved", row.resolved_at, actor, {})
            return _record(row)

        return self._transact(res, write=True)

    def set_feedback(self, incident_id: str, feedback: str, actor: str = "", note: str = "") -> Incident:
        """Record on-call's verdict, ``true_positive`` or ``false_positive``, in any status."""
        if feedback not in FEEDBACKS:
            raise ValueError(f"feedback {feedback!r} is not one of {', '.join(FEEDBACKS)}")

        def rate(s: Session) -> Incident:
            row = self._find(s, incident_id, lock=True)
            row.feedback, row.feedback_by, row.feedback_at = feedback, actor or None, _now()
            if note:
                row.notes = note
            detail = {"feedback": feedback, "note": note}
            self._event(s, row.incident_id, "feedback", row.feedback_at, actor, detail)
            return _record(row)

        return self._transact(rate, write=True)

    def history(self, incident_id: str) -> builtins.list[dict[str, Any]]:
        """The incident's audit trail in the order it was written: at, kind, actor, detail."""

        def read(s: Session) -> builtins.list[dict[str, Any]]:
            row = self._find(s, incident_id)
            q = (
                select(IncidentEventRow)
                .where(IncidentEventRow.incident_id == row.incident_id)
                .order_by(IncidentEventRow.id)
            )
            return [
                {
                    "incident_id": e.incident_id,
                    "at": e.at,
                    "kind": e.kind,
                    "actor": e.actor,
                    "detail": e.detail,
                }
                for e in s.scalars(q)
            ]

        return self._transact(read)

    # -- specialists -----------------------------------------------------------------------------

    def precision(self, rule: str | None = None) -> dict[str, Any]:
        """On-call feedback per rule and overall: counts and precision = TP / (TP + FP).

        ``{"rules": {rule: {"incidents", "true_positive", "false_positive", "unlabelled",
        "precision"}}, "overall": {...}}``; precision is None while no incident has feedback.
        """
        q = select(IncidentRow.rule, IncidentRow.feedback, func.count()).group_by(
            IncidentRow.rule, IncidentRow.feedback
        )
        if rule is not None:
            q = q.where(IncidentRow.rule == rule)
        counts = self._transact(lambda s: s.execute(q).all())

        def zero() -> dict[str, Any]:
            return {"incidents": 0, "true_positive": 0, "false_positive": 0, "unlabelled": 0}

        rules: dict[str, dict[str, Any]] = {} if rule is None else {rule: zero()}
        overall = zero()
        for name, feedback, n in counts:
            for figures in (rules.setdefault(name, zero()), overall):
                figures["incidents"] += n
                figures[feedback or "unlabelled"] += n
        for figures in (*rules.values(), overall):
            rated = figures["true_positive"] + figures["false_positive"]
            figures["precision"] = figures["true_positive"] / rated if rated else None
        return {"rules": dict(sorted(rules.items())), "overall": overall}

    # -- the notification outbox -----------------------------------------------------------------

    def _queue(self, s: Session, inc: Incident, kind: str, routes: Route) -> None:
        """Queue ``kind`` for each route that takes it, a page per problem: the opening of an
        incident whose problem the route already heard of goes as ``grouped`` (an update of that
        page), and a resolution only once no incident of its problem is still open."""
        now = _now()
        for route in routes(inc, kind):
            sent = kind
            if inc.group_id and kind == "opened" and self._heard(s, inc, route):
                sent = "grouped"
            elif inc.group_id and kind == "resolved" and (
                self._still_open(s, inc) or not self._heard(s, inc, route, also_own=True)
            ):
                continue
            if _notification(s, inc.incident_id, route, sent) is None:
                s.add(NotificationRow(incident_id=inc.incident_id, route=route, kind=sent, created_at=now,
                                      attempts=0, next_attempt_at=now))  # fmt: skip

    @staticmethod
    def _heard(s: Session, inc: Incident, route: str, also_own: bool = False) -> bool:
        """Whether ``route`` has a notification of another incident of ``inc``'s problem (or of
        ``inc`` itself too, with ``also_own``)."""
        q = (
            select(NotificationRow.id)
            .join(IncidentRow, IncidentRow.incident_id == NotificationRow.incident_id)
            .where(
                IncidentRow.group_id == inc.group_id,
                NotificationRow.route == route,
                NotificationRow.kind.in_(("opened", "grouped")),
            )
            .limit(1)
        )
        if not also_own:
            q = q.where(IncidentRow.incident_id != inc.incident_id)
        return s.scalars(q).first() is not None

    @staticmethod
    def _still_open(s: Session, inc: Incident) -> bool:
        """Whether another incident of ``inc``'s problem is open or acknowledged."""
        q = select(IncidentRow.incident_id).where(
            IncidentRow.group_id == inc.group_id,
            IncidentRow.incident_id != inc.incident_id,
            IncidentRow.status != "resolved",
        )
        return s.scalars(q.limit(1)).first() is not None

    def problem(self, group_id: str) -> builtins.list[Incident]:
        """Every incident of a problem, oldest first."""
        q = select(IncidentRow).where(IncidentRow.group_id == group_id).order_by(IncidentRow.opened_at)
        return self._transact(lambda s: [_record(r) for r in s.scalars(q).all()])

    def claim_notifications(
        self, now: datetime | None = None, lease_s: float = 60.0, limit: int = 100, route: str | None = None
    ) -> builtins.list[tuple[int, str, str, int, str, Incident]]:
        """Take the undelivered notifications whose next attempt is due (of one ``route``, or of
        all), oldest first, for ``lease_s``: ``(id, route, kind, attempts so far, last error or
        note, incident as stored now)``.

        Their next attempt moves ``lease_s`` ahead in the same transaction, so workers sharing the
        store never send one twice (PostgreSQL skips rows another worker is claiming; SQLite runs
        one writer at a time); one that dies holding a claim leaves it due again when it lapses.
        """
        now = now or _now()
        q = (
            select(NotificationRow, IncidentRow)
            .join(IncidentRow, IncidentRow.incident_id == NotificationRow.incident_id)
            .where(NotificationRow.delivered_at.is_(None), NotificationRow.next_attempt_at <= now)
            .order_by(NotificationRow.id)
            .limit(limit)
            .with_for_update(of=NotificationRow, skip_locked=True)
        )
        if route is not None:
            q = q.where(NotificationRow.route == route)

        def claim(s: Session) -> builtins.list[tuple[int, str, str, int, str, Incident]]:
            out = []
            for n, i in s.execute(q).all():
                n.next_attempt_at = now + timedelta(seconds=lease_s)
                out.append((n.id, n.route, n.kind, n.attempts, n.last_error or "", _record(i)))
            return out

        return self._transact(claim, write=True)

    def park_unrouted(self, routes: Collection[str], note: str, until: datetime, now: datetime) -> int:
        """Postpone until ``until`` the due notifications of routes not in ``routes`` (a route taken
        out of the config: none of the per-route senders claims them); how many."""
        q = (
            update(NotificationRow)
            .where(
                NotificationRow.delivered_at.is_(None),
                NotificationRow.next_attempt_at <= now,
                NotificationRow.route.not_in(list(routes)),
            )
            .values(last_error=note[:1000], next_attempt_at=until)
        )
        return self._transact(lambda s: s.execute(q).rowcount, write=True)

    def mark_delivered(self, notification_id: int, at: datetime | None = None) -> None:
        self._settle(notification_id, attempts=1, delivered_at=at or _now(), last_error=None)

    def mark_failed(self, notification_id: int, error: str, retry_at: datetime) -> None:
        self._settle(notification_id, attempts=1, last_error=error[:1000], next_attempt_at=retry_at)

    def postpone(self, notification_id: int, note: str, until: datetime) -> None:
        """Hold a notification back until ``until`` (a silence), without counting an attempt."""
        self._settle(notification_id, last_error=note[:1000], next_attempt_at=until)

    def skip(self, notification_id: int, note: str, at: datetime | None = None) -> None:
        """Close a notification without sending it (its incident resolved while it was silenced)."""
        self._settle(notification_id, delivered_at=at or _now(), last_error=note[:1000])

    def _settle(self, notification_id: int, attempts: int = 0, **fields: object) -> None:
        """Set ``fields`` on a notification not delivered yet (and count ``attempts``), under its row lock;
        a delivered one is left as it is."""

        def run(s: Session) -> None:
            n = s.get(NotificationRow, notification_id, with_for_update=True)
            if n is not None and n.delivered_at is None:
                n.attempts += attempts
                for name, value in fields.items():
                    setattr(n, name, value)

        self._transact(run, write=True)

    def grouped_pending(self, group_id: str, route: str) -> builtins.list[tuple[int, Incident]]:
        """The undelivered ``grouped`` notifications of a problem to ``route``, oldest first."""
        q = (
            select(NotificationRow.id, IncidentRow)
            .join(IncidentRow, IncidentRow.incident_id == NotificationRow.incident_id)
            .where(
                IncidentRow.group_id == group_id,
                NotificationRow.route == route,
                NotificationRow.kind == "grouped",
                NotificationRow.delivered_at.is_(None),
            )
            .order_by(NotificationRow.id)
        )
        return self._transact(lambda s: [(nid, _record(row)) for nid, row in s.execute(q).all()])

    def opening_pending(self, group_id: str, route: str) -> bool:
        """Whether a problem's first page (``opened``) to ``route`` has yet to go out."""
        q = (
            select(NotificationRow.id)
            .join(IncidentRow, IncidentRow.incident_id == NotificationRow.incident_id)
            .where(
                IncidentRow.group_id == group_id,
                NotificationRow.route == route,
                NotificationRow.kind == "opened",
                NotificationRow.delivered_at.is_(None),
            )
        )
        return self._transact(lambda s: s.scalars(q.limit(1)).first() is not None)

    def last_page(self, group_id: str, route: str) -> datetime | None:
        """When ``route`` was last sent a notification of this problem's incidents (None: never)."""
        q = (
            select(func.max(NotificationRow.delivered_at))
            .join(IncidentRow, IncidentRow.incident_id == NotificationRow.incident_id)
            .where(
                IncidentRow.group_id == group_id,
                NotificationRow.route == route,
                NotificationRow.kind.in_(("opened", "grouped")),
                or_(NotificationRow.last_error.is_(None), NotificationRow.last_error.not_like("not sent%")),
            )
        )
        return self._transact(lambda s: to_utc(s.scalar(q)))

    def notification_state(self, incident_id: str, route: str, kind: str) -> str:
        """``sent``, ``skipped`` (closed unsent), ``pending`` or ``none`` (never queued)."""
        n = self._transact(lambda s: _notification(s, incident_id, route, kind))
        if n is None:
            return "none"
        if n.delivered_at is None:
            return "pending"
        return "skipped" if (n.last_error or "").startswith("not sent") else "sent"

    # -- silences ----------------------------------------------------------------------------------

    def add_silence(
        self, matchers: dict[str, str], starts_at: datetime, ends_at: datetime, author: str, comment: str
    ) -> dict[str, Any]:
        """Store a silence; returns it with its id."""
        if ends_at <= starts_at:
            raise ValueError("a silence must end after it starts")
        if not matchers:
            raise ValueError("a silence needs at least one matcher (it would hold back every notification)")
        if not author or not comment:
            raise ValueError("a silence needs an author and a comment saying why")
        try:  # checked once here, so a stored silence never fails to compile in delivery
            compile_matchers(matchers)
        except MatcherError as e:
            raise MatcherError(f"silence matcher {e}") from None
        sid = "sil-" + uuid.uuid4().hex[:12]
        row = SilenceRow(silence_id=sid, matchers=dict(matchers), starts_at=starts_at, ends_at=ends_at,
                         author=author, comment=comment, created_at=_now())  # fmt: skip
        self._transact(lambda s: s.add(row), write=True)
        return self.silences(include_expired=True, silence_id=sid)[0]

    def silences(
        self, now: datetime | None = None, include_expired: bool = False, silence_id: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Silences, newest first: active and pending ones (or every one with ``include_expired``)."""
        q = select(SilenceRow).order_by(SilenceRow.created_at.desc())
        if silence_id is not None:
            q = q.where(SilenceRow.silence_id == silence_id)
        elif not include_expired:
            q = q.where(SilenceRow.ends_at > (now or _now()))
        cols = ("silence_id", "matchers", "starts_at", "ends_at", "author", "comment", "created_at")
        return self._transact(lambda s: [{c: getattr(r, c) for c in cols} for r in s.scalars(q)])

    def active_silences(self, now: datetime) -> builtins.list[dict[str, Any]]:
        """The silences in force at ``now`` (started, not ended), newest first."""
        return [x for x in self.silences(now) if x["starts_at"] <= now]

    def expire_silence(self, silence_id: str, at: datetime | None = None) -> dict[str, Any]:
        """End a silence now (a unique id prefix is enough)."""

        def run(s: Session) -> str:
            rows = s.scalars(select(SilenceRow).where(SilenceRow.silence_id.startswith(silence_id))).all()
            if len(rows) != 1:
                raise KeyError(
                    f"no silence {silence_id!r}" if not rows else f"{silence_id!r} names several silences"
                )
            sil = rows[0]
            sil.ends_at = min(sil.ends_at, at or _now())
            held = s.scalars(
                select(NotificationRow).where(
                    NotificationRow.delivered_at.is_(None),
                    NotificationRow.last_error.startswith(f"silenced by {sil.silence_id} "),
                )
            )
            for n in held:  # what it held back is due when it ends, not when it would have
                n.next_attempt_at = min(n.next_attempt_at, sil.ends_at)
            return sil.silence_id

        sid = self._transact(run, write=True)
        return self.silences(include_expired=True, silence_id=sid)[0]

    def notifications(self, incident_id: str | None = None) -> builtins.list[dict[str, Any]]:
        """The outbox rows of one incident (or all), oldest first, as dicts."""
        q = select(NotificationRow).order_by(NotificationRow.id)
        if incident_id is not None:
            q = q.where(NotificationRow.incident_id == incident_id)
        cols = ("id", "incident_id", "route", "kind", "created_at", "attempts", "next_attempt_at",
                "delivered_at", "last_error")  # fmt: skip
        return self._transact(lambda s: [{c: getattr(n, c) for c in cols} for n in s.scalars(q)])

    def outbox_depth(self) -> int:
        """Notifications not delivered yet."""
        q = select(func.count()).select_from(NotificationRow).where(NotificationRow.delivered_at.is_(None))
        return int(self._transact(lambda s: s.scalar(q)) or 0)

    def stats(self, since: datetime | None = None) -> builtins.list[dict[str, Any]]:
        """Per rule (incidents opened at or after ``since``): how many, their severity, on-call's
        verdicts, precision and false-positive share, and the median minutes from opening to
        acknowledgement and to resolution (of those acknowledged, resolved)."""
        q = select(IncidentRow)
        if since is not None:
            q = q.where(IncidentRow.opened_at >= since)
        rows = self._transact(lambda s: [_record(r) for r in s.scalars(q)])
        by_rule: dict[str, builtins.list[Incident]] = {}
        for inc in rows:
            by_rule.setdefault(inc.rule, []).append(inc)
        out = []
        for rule, incs in sorted(by_rule.items()):
            tp = sum(i.feedback == "true_positive" for i in incs)
            fp = sum(i.feedback == "false_positive" for i in incs)
            ack = [(i.acknowledged_at - i.opened_at).total_seconds() / 60 for i in incs if i.acknowledged_at]
            res = [(i.resolved_at - i.opened_at).total_seconds() / 60 for i in incs if i.resolved_at]
            out.append({
                "rule": rule,
                "severity": Counter(i.severity for i in incs).most_common(1)[0][0],
                "incidents": len(incs),
                "true_positive": tp,
                "false_positive": fp,
                "unlabelled": len(incs) - tp - fp,
                "precision": tp / (tp + fp) if tp + fp else None,
                "false_positive_share": fp / (tp + fp) if tp + fp else None,
                "median_minutes_to_ack": median(ack) if ack else None,
                "median_minutes_to_resolve": median(res) if res else None,
            })  # fmt: skip
        return out

    # -- plumbing --------------------------------------------------------------------------------

    @staticmethod
    def _event(
        s: Session, incident_id: str, kind: str, at: datetime | None, actor: str, detail: dict
    ) -> None:
        s.add(
            IncidentEventRow(incident_id=incident_id, kind=kind, at=at or _now(), actor=actor, detail=detail)
        )

    @staticmethod
    def _find(s: Session, key: str, lock: bool = False) -> IncidentRow:
        row = s.get(IncidentRow, key, with_for_update=lock) if key else None
        if row is not None:
            return row
        if not key:
            raise KeyError("an incident id (or a prefix of one) is required")
        ids = s.scalars(
            select(IncidentRow.incident_id)
            .where(func.substr(IncidentRow.incident_id, 1, len(key)) == key)
            .order_by(IncidentRow.incident_id)
            .limit(6)
        ).all()
        if not ids:
            raise KeyError(f"no incident has the id or id prefix {key!r}")
        if len(ids) > 1:
            shown = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
            raise KeyError(f"incident id prefix {key!r} is ambiguous: it matches {shown}; give more of it")
        found = s.get(IncidentRow, ids[0], with_for_update=lock)
        if found is None:  # deleted between the two reads
            raise KeyError(f"no incident has the id or id prefix {key!r}")
        return found

    def _transact(self, fn: Callable[[Session], T], write: bool = False) -> T:
        """Run ``fn`` in one transaction; retry lost races and transient errors, then StorageError."""
        options = {WRITE: True} if write else {}
        last: DBAPIError | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(_BACKOFF_S[min(attempt - 1, len(_BACKOFF_S) - 1)])
            try:
                with self._sessions() as s, s.begin():
                    s.connection(execution_options=options)
                    return fn(s)
            except (IntegrityError, OperationalError) as e:
                last = e
                log.warning("incident store %s: attempt %d failed: %s", self.url, attempt + 1, e.orig or e)
            except DBAPIError as e:
                raise StorageError(f"incident store {self.url}: {e.orig or e}") from e
        raise StorageError(
            f"incident store {self.url}: failed after {ATTEMPTS} attempts: {last.orig if last else ''}"
        ) from last
