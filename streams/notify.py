"""Notifications to receivers: what each kind of receiver expects for an incident, and the POST.

- ``alertmanager``: Prometheus Alertmanager's API v2, ``POST /api/v2/alerts`` with one alert per
  incident: labels (``alertname`` = the rule, ``severity``, the incident's labels, ``group_id``: its
  problem, for Alertmanager's own ``group_by``), annotations
  (``summary``, ``runbook_url``, ``incident_id``, ``scope``: the runbook's placeholders filled
  in), ``startsAt``; a firing alert's ``endsAt`` is 3 re-send intervals ahead, so Alertmanager
  resolves it by itself if the worker goes away, and a resolved one's is its resolution time.
- ``webhook``: the incident.v1 JSON (with ``related``: the problem's other incidents sent in the
  same message); header ``X-Raiwatch-Event`` (opened, grouped, acknowledged, resolved) and, with a
  secret, ``X-Raiwatch-Signature: sha256=<hex HMAC-SHA256 of the body>``.
- ``slack``: an incoming-webhook message (``text`` and ``blocks``; a problem's related incidents
  listed under "Same problem").
- ``pagerduty``: an Events API v2 event: ``trigger`` / ``acknowledge`` / ``resolve`` with
  ``dedup_key`` = the incident's problem (``group_id``; its dedup key before problems existed), so a
  problem is one PagerDuty incident that its later incidents update; the routing key from the
  secret, the runbook in ``links``.

A problem (``alert_rules.grouping``) is paged once: its first incident goes as ``opened``, with the
incidents that opened within the route's ``group_wait_s``, and later ones as ``grouped`` updates.

A URL with a user and password (``https://user:pass@host/hook``) is sent with HTTP Basic
authentication, as curl and Alertmanager's own HTTP client do. A receiver's URL, path and query
included, is a secret (a Slack webhook's path is its token): a ``DeliveryError`` shows it as
``redact_url`` does, and scrubs the secrets from whatever the receiver answered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson

from raiwatch.core.config import RouteConfig
from raiwatch.core.records import SEVERITIES, Incident

PD_SEVERITY = {"critical": "critical", "high": "error", "warning": "warning", "info": "info"}


class DeliveryError(Exception):
    """A receiver did not take a notification (down, refused, or answered with an error); the
    message carries no secret."""


@dataclass(frozen=True)
class Outgoing:
    """One notification, ready to POST: ``shown`` is its URL for messages, ``secrets`` what no
    message may contain (credentials, the URL's path and query, the HMAC secret or routing key)."""

    url: str
    body: bytes
    headers: dict[str, str]
    shown: str
    secrets: tuple[str, ...]


def redact_url(url: str) -> str:
    """``url`` fit for a log: the password and the path and query masked (a Slack webhook's path
    is its token), a user alone (a token as user name) masked too.

    >>> redact_url("https://hooks.slack.com/services/T0/B0/XyZ"), redact_url("http://am:9093")
    ('https://hooks.slack.com/***', 'http://am:9093')
    >>> redact_url("https://ops:s3cret@hooks.example.com/in?token=abc")
    'https://ops:***@hooks.example.com/***'
    """
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<an unreadable URL>"
    if parts.password is not None:
        host = f"{parts.username}:***@{host}"
    elif parts.username is not None:
        host = f"***@{host}"
    hidden = "/***" if parts.path.strip("/") or parts.query or parts.fragment else parts.path
    return urlunsplit((parts.scheme, host, hidden, "", ""))


def _secrets(url: str, *more: str) -> tuple[str, ...]:
    """What of ``url`` (and ``more``) must never be shown, longest first (so a part never leaves
    the rest of its whole visible): credentials, the path and query, and their long segments."""
    parts = urlsplit(url)
    user = parts.username if parts.password is None else None  # a user alone is a token
    found = {*more, user or "", parts.password or "", parts.query}
    pieces = [
        parts.path.strip("/"),
        *f"{parts.path}/{parts.query}".replace("&", "/").replace("=", "/").split("/"),
    ]
    found |= {p for p in pieces if len(p) >= 8}  # a token is long; "hook" is no secret
    found |= {unquote(x) for x in found}
    return tuple(sorted((x for x in found if x), key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for x in secrets:
        text = text.replace(x, "***")
    return text


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def scope(inc: Incident) -> str:
    """The runbook's placeholders filled in: model, the incident's other labels, the time range."""
    labels = ", ".join(f"{k}={v}" for k, v in sorted(inc.labels.items()) if k != "team")
    end = _iso(inc.resolved_at) if inc.resolved_at else "now"
    return f"{labels}; from {_iso(inc.opened_at)} to {end}"


def alertmanager_alert(inc: Incident, kind: str, now: datetime, resend_s: float) -> dict:
    """One Alertmanager API v2 alert for an incident."""
    ends = (
        inc.resolved_at if kind == "resolved" and inc.resolved_at else now + timedelta(seconds=3 * resend_s)
    )
    if kind == "resolved":
        ends = min(ends, now)
    group = {"group_id": inc.group_id} if inc.group_id else {}
    return {
        "labels": {"alertname": inc.rule, "severity": inc.severity, **inc.labels, **group},
        "annotations": {
            "summary": inc.summary,
            "runbook_url": inc.runbook_url,
            "incident_id": inc.incident_id,
            "scope": scope(inc),
        },
        "startsAt": _iso(min(inc.opened_at, ends)),
        "endsAt": _iso(ends),
        "generatorURL": inc.runbook_url if inc.runbook_url.startswith("http") else "",
    }


def request(
    route: RouteConfig,
    inc: Incident,
    kind: str,
    now: datetime,
    resend_s: float = 60.0,
    related: Sequence[Incident] = (),
) -> Outgoing:
    """The notification of ``inc`` (``kind``: opened, grouped, acknowledged or resolved) to ``route``,
    with the ``related`` incidents of its problem that go in the same message."""
    secret = os.environ.get(route.secret_env, "") if route.secret_env else ""
    url, body, headers = _request(route, inc, kind, now, resend_s, secret, related)
    parts = urlsplit(url)
    token = ""
    if parts.username is not None:  # userinfo goes as Basic auth, never on the request line
        user, password = unquote(parts.username), unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return Outgoing(url, body, headers, redact_url(route.url), _secrets(route.url, secret, token))


def _request(
    route: RouteConfig,
    inc: Incident,
    kind: str,
    now: datetime,
    resend_s: float,
    secret: str,
    related: Sequence[Incident] = (),
) -> tuple[str, bytes, dict[str, str]]:
    headers = {"Content-Type": "application/json", "User-Agent": "raiwatch"}
    if route.type == "alertmanager":
        body = orjson.dumps([alertmanager_alert(i, kind, now, resend_s) for i in (inc, *related)])
        return route.url.rstrip("/") + "/api/v2/alerts", body, headers
    if route.type == "webhook":
        doc = inc.to_contract()
        if related:  # the problem's other incidents in this message (incident.v1 each)
            doc["related"] = [i.to_contract() for i in related]
        body = orjson.dumps(doc)
        headers["X-Raiwatch-Event"] = kind
        if secret:
            mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Raiwatch-Signature"] = f"sha256={mac}"
        return route.url, body, headers
    if route.type == "slack":
        state = {"resolved": "RESOLVED", "acknowledged": "ACKNOWLEDGED"}.get(kind, inc.severity.upper())
        if kind == "grouped":
            state = f"{state}, problem {inc.group_id}"
        text = f"[{state}] {inc.rule}: {inc.summary}"
        links = f"<{inc.runbook_url}|Runbook> · {inc.incident_id}"
        blocks = [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*\n{scope(inc)}"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": links}},
        ]
        if related:
            also = "\n".join(f"• [{i.severity.upper()}] {i.rule}: {i.summary}" for i in related)
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"Same problem:\n{also}"}})
        body = orjson.dumps({"text": text, "blocks": blocks})
        return route.url, body, headers
    body = orjson.dumps({
        "routing_key": secret,
        "event_action": {"resolved": "resolve", "acknowledged": "acknowledge"}.get(kind, "trigger"),
        "dedup_key": inc.group_id or inc.dedup_key,  # one PagerDuty incident per problem
        "payload": {
            "summary": f"{inc.rule}: {inc.summary}"[:1024],
            "source": inc.labels.get("model_id", "raiwatch"),
            "severity": PD_SEVERITY[_worst(inc, related)],
            "timestamp": _iso(inc.opened_at),
            "custom_details": {
                "incident_id": inc.incident_id, "scope": scope(inc), **inc.labels,
                **({"related": [f"{i.rule}: {i.summary}" for i in related]} if related else {}),
            },
        },
        "links": [{"href": inc.runbook_url, "text": "Runbook"}],
    })  # fmt: skip
    return route.url, body, headers


def _worst(inc: Incident, related: Sequence[Incident]) -> str:
    """The most severe severity among an incident and those sent with it."""
    return min((i.severity for i in (inc, *related)), key=SEVERITIES.index)


def post(out: Outgoing, timeout_s: float) -> int:
    """POST; the HTTP status when 2xx, else ``DeliveryError`` saying what happened, secrets masked."""
    req = urllib.request.Request(out.url, data=out.body, headers=out.headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        detail = e.read(300).decode("utf-8", "replace").strip()
        why = f"answered {e.code} {e.reason}: {detail}"
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        why = str(getattr(e, "reason", None) or e) or type(e).__name__
    raise DeliveryError(f"{out.shown}: {scrub(why, out.secrets)}") from None
