"""Notifications to receivers: what each kind of receiver expects for an incident, and the POST.

- ``alertmanager``: Prometheus Alertmanager's API v2, ``POST /api/v2/alerts`` with one alert:
  labels (``alertname`` = the rule, ``severity``, the incident's labels), annotations
  (``summary``, ``runbook_url``, ``incident_id``, ``scope``: the runbook's placeholders filled
  in), ``startsAt``; a firing alert's ``endsAt`` is 3 re-send intervals ahead, so Alertmanager
  resolves it by itself if the worker goes away, and a resolved one's is its resolution time.
- ``webhook``: the incident.v1 JSON; header ``X-Raiwatch-Event`` (opened, acknowledged, resolved) and, with a
  secret, ``X-Raiwatch-Signature: sha256=<hex HMAC-SHA256 of the body>``.
- ``slack``: an incoming-webhook message (``text`` and ``blocks``).
- ``pagerduty``: an Events API v2 event: ``trigger`` / ``acknowledge`` / ``resolve`` with ``dedup_key`` = the
  incident's dedup key, the routing key from the secret, the runbook in ``links``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import orjson

from raiwatch.core.config import RouteConfig
from raiwatch.core.records import Incident

PD_SEVERITY = {"critical": "critical", "high": "error", "warning": "warning", "info": "info"}


class DeliveryError(Exception):
    """A receiver did not take a notification (down, refused, or answered with an error)."""


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
    return {
        "labels": {"alertname": inc.rule, "severity": inc.severity, **inc.labels},
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
    route: RouteConfig, inc: Incident, kind: str, now: datetime, resend_s: float = 60.0
) -> tuple[str, bytes, dict[str, str]]:
    """``(url, body, headers)`` of the notification of ``inc`` (``kind``: opened or resolved)."""
    headers = {"Content-Type": "application/json", "User-Agent": "raiwatch"}
    secret = os.environ.get(route.secret_env, "") if route.secret_env else ""
    if route.type == "alertmanager":
        body = orjson.dumps([alertmanager_alert(inc, kind, now, resend_s)])
        return route.url.rstrip("/") + "/api/v2/alerts", body, headers
    if route.type == "webhook":
        body = orjson.dumps(inc.to_contract())
        headers["X-Raiwatch-Event"] = kind
        if secret:
            mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Raiwatch-Signature"] = f"sha256={mac}"
        return route.url, body, headers
    if route.type == "slack":
        state = {"resolved": "RESOLVED", "acknowledged": "ACKNOWLEDGED"}.get(kind, inc.severity.upper())
        text = f"[{state}] {inc.rule}: {inc.summary}"
        links = f"<{inc.runbook_url}|Runbook> · {inc.incident_id}"
        body = orjson.dumps({
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*\n{scope(inc)}"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": links}},
            ],
        })  # fmt: skip
        return route.url, body, headers
    body = orjson.dumps({
        "routing_key": secret,
        "event_action": {"resolved": "resolve", "acknowledged": "acknowledge"}.get(kind, "trigger"),
        "dedup_key": inc.dedup_key,
        "payload": {
            "summary": f"{inc.rule}: {inc.summary}"[:1024],
            "source": inc.labels.get("model_id", "raiwatch"),
            "severity": PD_SEVERITY[inc.severity],
            "timestamp": _iso(inc.opened_at),
            "custom_details": {"incident_id": inc.incident_id, "scope": scope(inc), **inc.labels},
        },
        "links": [{"href": inc.runbook_url, "text": "Runbook"}],
    })  # fmt: skip
    return route.url, body, headers


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
    """POST; the HTTP status when 2xx, else ``DeliveryError`` saying what happened."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        detail = e.read(300).decode("utf-8", "replace").strip()
        raise DeliveryError(f"{url} answered {e.code} {e.reason}: {detail}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DeliveryError(f"{url}: {getattr(e, 'reason', e)}") from None
