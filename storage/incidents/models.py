"""SQLAlchemy ORM model of the incident store: incident.v1 rows and their audit trail.

Every timestamp is stored as UTC and read back timezone-aware (``UTCDateTime``): PostgreSQL keeps
``timestamptz``; SQLite keeps naive UTC text, which sorts chronologically. The partial unique index
``uq_incidents_open_dedup_key`` allows at most one non-resolved incident per ``dedup_key``.

The migrations in ``migrations/versions`` create exactly this schema; a test compares them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from raiwatch.core.records import FEEDBACKS, SEVERITIES, STATUSES

EVENT_KINDS = ("opened", "updated", "acknowledged", "resolved", "feedback")

VERSION_TABLE = "incidents_alembic_version"  # alembic's bookkeeping table for this schema
OPEN_WHERE = "status != 'resolved'"  # the predicate of the partial unique index

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONDoc = JSON().with_variant(JSONB(), "postgresql")


def to_utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime; a naive value is taken to be UTC already."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it as naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        value = to_utc(value)
        if value is not None and dialect.name == "sqlite":
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return to_utc(value)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSONDoc,
        dict[str, str]: JSONDoc,
    }


class IncidentRow(Base):
    """One incident (incident.v1) plus what on-call added: who gave feedback, when, and a note."""

    __tablename__ = "incidents"

    incident_id: Mapped[str] = mapped_column(String, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String, index=True)
    rule: Mapped[str] = mapped_column(String, index=True)
    signal: Mapped[str] = mapped_column(String)
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    opened_at: Mapped[datetime] = mapped_column(index=True)
    acknowledged_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    labels: Mapped[dict[str, str]]
    summary: Mapped[str] = mapped_column(Text)
    runbook_url: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Double)
    threshold: Mapped[float | None] = mapped_column(Double)
    feedback: Mapped[str | None] = mapped_column(String(16))
    feedback_by: Mapped[str | None] = mapped_column(String)
    feedback_at: Mapped[datetime | None]
    notes: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None]
    group_id: Mapped[str | None] = mapped_column(String, index=True)  # its problem (alert_rules.grouping)
    events: Mapped[list[IncidentEventRow]] = relationship(
        back_populates="incident", order_by="IncidentEventRow.id", passive_deletes=True
    )

    __table_args__ = (
        CheckConstraint(_one_of("status", STATUSES), name="status"),
        CheckConstraint(_one_of("severity", SEVERITIES), name="severity"),
        CheckConstraint(f"feedback IS NULL OR {_one_of('feedback', FEEDBACKS)}", name="feedback"),
        Index(
            "uq_incidents_open_dedup_key",
            "dedup_key",
            unique=True,
            sqlite_where=text(OPEN_WHERE),
            postgresql_where=text(OPEN_WHERE),
        ),
    )


class IncidentEventRow(Base):
    """One line of an incident's history: what happened, when, by whom, with any detail."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.incident_id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String)
    detail: Mapped[dict[str, Any]]
    incident: Mapped[IncidentRow] = relationship(back_populates="events")

    __table_args__ = (CheckConstraint(_one_of("kind", EVENT_KINDS), name="kind"),)


NOTIFICATION_KINDS = ("opened", "acknowledged", "resolved")  # the incident changes routes hear of
# what a route is sent: an opening is "grouped" when the route already paged its problem
OUTBOX_KINDS = ("opened", "grouped", "acknowledged", "resolved")


class NotificationRow(Base):
    """The outbox: one notification of one incident change to one route, written in the same
    transaction as the change, and marked delivered once the receiver took it."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.incident_id", ondelete="CASCADE"), index=True
    )
    route: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(_one_of("kind", OUTBOX_KINDS), name="kind"),
        Index("uq_notifications_incident_id", "incident_id", "route", "kind", unique=True),
    )


class SilenceRow(Base):
    """A silence: while ``starts_at <= now < ends_at``, notifications of incidents whose labels
    (with ``alertname`` = the rule and ``severity``) match every matcher are held back."""

    __tablename__ = "silences"

    silence_id: Mapped[str] = mapped_column(String, primary_key=True)
    matchers: Mapped[dict[str, str]]
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime] = mapped_column(index=True)
    author: Mapped[str] = mapped_column(String)
    comment: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
