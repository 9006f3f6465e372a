"""Record types shared by every layer: telemetry and feedback events, signals, incidents.

The telemetry and feedback structs mirror the contracts (``raiwatch/core/contracts``) exactly;
msgspec decodes and validates them in C. Optional fields that the contract does not allow to be
null default to ``UNSET`` (falsy), so ``if ev.safety:`` reads naturally and a JSON ``null`` is a
type error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, get_args

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

Id = Annotated[str, Meta(min_length=1, max_length=128)]
Str128 = Annotated[str, Meta(max_length=128)]
Str64 = Annotated[str, Meta(max_length=64)]
NonNegInt = Annotated[int, Meta(ge=0, le=2**63 - 1)]  # what ClickHouse stores exactly
NonNegFloat = Annotated[float, Meta(ge=0)]
Score = Annotated[float, Meta(ge=0, le=1)]
EventTime = Annotated[datetime, Meta(tz=True)]

SIGNAL_FAMILIES = ("drift", "safety", "abuse", "fairness", "quality", "pipeline")


class Model(Struct, omit_defaults=True, gc=False):
    id: Id
    version: Str128 | UnsetType = UNSET
    kind: Literal["llm", "classifier", "regressor", "ranker", "other"] | UnsetType = UNSET


class Client(Struct, omit_defaults=True, gc=False):
    ip_hash: Str128 | UnsetType = UNSET
    user_agent_family: Str128 | UnsetType = UNSET


class Request(Struct, omit_defaults=True, gc=False):
    text: str | UnsetType = UNSET
    tokens: NonNegInt | UnsetType = UNSET
    language: Annotated[str, Meta(max_length=16)] | UnsetType = UNSET
    features: dict[str, float | str | bool | None] | UnsetType = UNSET
    embedding: Annotated[list[float], Meta(max_length=4096)] | UnsetType = UNSET


class Prediction(Struct, omit_defaults=True, gc=False):
    label: str | None = None
    score: float | None = None


class Response(Struct, omit_defaults=True, gc=False):
    tokens: NonNegInt | UnsetType = UNSET
    latency_ms: NonNegFloat | UnsetType = UNSET
    finish_reason: Str64 | UnsetType = UNSET
    error: Annotated[str, Meta(max_length=512)] | None = None
    prediction: Prediction | UnsetType = UNSET
    text: str | UnsetType = UNSET


class Safety(Struct, omit_defaults=True, gc=False):
    scores: dict[str, Score] | UnsetType = UNSET
    violations: list[str] | UnsetType = UNSET
    action: Literal["allowed", "blocked", "redacted", "escalated"] | UnsetType = UNSET


class Outcome(Struct, omit_defaults=True, gc=False):
    favorable: bool | UnsetType = UNSET


class TelemetryEvent(Struct, omit_defaults=True, gc=False):
    """One inference (telemetry-event.v1). Unknown fields are ignored here and kept in the raw bytes."""

    schema_version: Literal[1]
    event_id: Id
    timestamp: EventTime
    model: Model
    deployment: Str128 | UnsetType = UNSET
    feature: Str128 | UnsetType = UNSET
    tenant_id: Str128 | UnsetType = UNSET
    user_id: Str128 | UnsetType = UNSET
    session_id: Str128 | UnsetType = UNSET
    client: Client | UnsetType = UNSET
    request: Request | UnsetType = UNSET
    response: Response | UnsetType = UNSET
    safety: Safety | UnsetType = UNSET
    segments: dict[str, Str128 | None] | UnsetType = UNSET
    outcome: Outcome | UnsetType = UNSET


class FeedbackEvent(Struct, omit_defaults=True, gc=False):
    """Delayed ground truth for an earlier inference (feedback-event.v1), joined by event_id."""

    schema_version: Literal[1]
    event_id: Id
    timestamp: EventTime
    label: str | None = None
    favorable: bool | None = None
    value: float | None = None
    source: Str64 | UnsetType = UNSET


class Signal(Struct, kw_only=True):
    """One measured number with its scope, sample size and interval.

    ``ts`` is the end of the event-time window that produced it and ``window`` its length in
    seconds. ``lower``/``upper`` bound ``value`` (95% unless the producing monitor says
    otherwise); ``n`` is the sample it was measured on, so rules can demand a minimum.

    ``evidence_lower``/``evidence_upper`` are what threshold rules test: one-sided bounds of the
    quantity named by ``evidence_of`` (``value``, ``ratio`` = value / baseline, or ``delta`` =
    value - baseline), each wrong at most as often as the model's false-alarm budget allows over
    a week of looks (``detectors.evidence``); rules read them as ``ratio.upper`` and so on.
    """

    ts: datetime
    window: int
    signal: str
    model_id: str
    value: float
    n: int
    model_version: str = ""
    dims: dict[str, str] = {}
    baseline: float | None = None
    lower: float | None = None
    upper: float | None = None
    p_value: float | None = None
    evidence_of: Literal["", "value", "ratio", "delta"] = ""
    evidence_lower: float | None = None
    evidence_upper: float | None = None

    @property
    def family(self) -> str:
        return self.signal.split(".", 1)[0]

    def labels(self) -> dict[str, str]:
        """The signal's scope as rule labels: ``model_id``, ``model_version`` and every dim."""
        out = {"model_id": self.model_id}
        if self.model_version:
            out["model_version"] = self.model_version
        out.update(self.dims)
        return out


IncidentStatus = Literal["open", "acknowledged", "resolved"]
Severity = Literal["critical", "high", "warning", "info"]
Feedback = Literal["true_positive", "false_positive"]
STATUSES: tuple[str, ...] = get_args(IncidentStatus)
SEVERITIES: tuple[str, ...] = get_args(Severity)  # most severe first
FEEDBACKS: tuple[str, ...] = get_args(Feedback)


class Incident(Struct, kw_only=True):
    """What an alert rule opens (incident.v1)."""

    incident_id: str
    dedup_key: str
    rule: str
    signal: str
    severity: Severity
    status: IncidentStatus
    opened_at: datetime
    labels: dict[str, str]
    summary: str
    runbook_url: str
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    value: float | None = None
    threshold: float | None = None
    feedback: Feedback | None = None
    group_id: str | None = None  # the problem it belongs to: its first incident's id (alert_rules.grouping)
    updated_at: datetime | None = None  # last event time the rule re-confirmed it; not in the contract

    def to_contract(self) -> dict:
        """The incident.v1 object (RFC 3339 timestamps, no extra fields)."""
        d = msgspec.to_builtins(self)
        d.pop("updated_at", None)
        return d


class IncidentChange(Struct, kw_only=True):
    """An incident transition produced by the rule engine: ``opened``, ``updated``, ``resolved``, or
    ``reopened`` (the rule fired again within its ``reopen_within``: the same incident, no new page)."""

    kind: Literal["opened", "updated", "resolved", "reopened"]
    incident: Incident
