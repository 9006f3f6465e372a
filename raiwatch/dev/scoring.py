"""Score incidents against a scenario's ground truth: what was caught, how fast, what paged for nothing.

An incident *detects* an anomaly when it is on the same model, its signal belongs to the anomaly's
family, it was opened between the anomaly's start and its ``match_until`` (the end plus a grace
period; for label-quality drops, plus the label delay), and none of its labels contradicts the
anomaly's scope (an incident labelled ``category=toxicity`` does not detect a self-harm spike; a
model-wide incident does detect a one-tenant spike). An incident in one of the anomaly's ``also``
families (over-blocking seen by the safety rules, say) is *related*: neither a detection nor a
false alarm. Every other incident is a *false alarm*, counted per model-day of traffic.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

FAMILIES = ("safety", "drift", "abuse", "fairness", "quality")


def _ts(value: str | datetime) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def family_of(signal: str) -> str:
    """A signal's family: the part of its name before the first dot (the catalogue enforces it).

    >>> family_of("safety.violation_rate")
    'safety'
    """
    return signal.split(".", 1)[0]


def _in_scope(anomaly: dict, labels: dict[str, str]) -> bool:
    """No label of the incident contradicts the anomaly's scope (missing labels are coarser, fine)."""
    return all(labels.get(k, v) == v for k, v in anomaly.get("dims", {}).items())


@dataclass
class AnomalyResult:
    id: str
    kind: str
    family: str
    model_id: str
    start: str
    detected: bool
    delay_s: float | None  # first matching incident's opened_at minus the anomaly's start
    incidents: list[str]  # ids of every incident that detects it


@dataclass
class ScenarioScore:
    scenario: str
    model_days: float
    anomalies: list[AnomalyResult] = field(default_factory=list)
    false_alarms: list[dict] = field(default_factory=list)  # the incidents that match nothing
    related: list[str] = field(default_factory=list)  # incidents in an anomaly's ``also`` family

    @property
    def false_alarms_per_model_day(self) -> float:
        return len(self.false_alarms) / self.model_days if self.model_days else 0.0


def score(truth: dict, incidents: list[dict]) -> ScenarioScore:
    """Match ``incidents`` (incident.v1 objects) to ``truth`` (as written by ``synth.write``)."""
    days = (_ts(truth["end"]) - _ts(truth["start"])) / 86400
    result = ScenarioScore(scenario=truth["scenario"], model_days=days * len(truth["models"]))
    anomalies = truth["anomalies"]
    hits: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for inc in incidents:
        labels = inc.get("labels", {})
        model, fam, opened = labels.get("model_id"), family_of(inc["signal"]), _ts(inc["opened_at"])
        live = [
            a
            for a in anomalies
            if a["model_id"] == model and _ts(a["start"]) <= opened <= _ts(a["match_until"])
        ]
        detects = [a for a in live if a["family"] == fam and _in_scope(a, labels)]
        for a in detects:
            hits[a["id"]].append((opened, inc["incident_id"]))
        if detects:
            continue
        if any(fam in a.get("also", ()) for a in live):
            result.related.append(inc["incident_id"])
        else:
            result.false_alarms.append(
                {
                    "incident_id": inc["incident_id"],
                    "rule": inc["rule"],
                    "opened_at": inc["opened_at"],
                    "labels": labels,
                }
            )
    for a in anomalies:
        found = sorted(hits.get(a["id"], []))
        result.anomalies.append(
            AnomalyResult(
                id=a["id"],
                kind=a["kind"],
                family=a["family"],
                model_id=a["model_id"],
                start=a["start"],
                detected=bool(found),
                delay_s=round(found[0][0] - _ts(a["start"]), 1) if found else None,
                incidents=[i for _, i in found],
            )
        )
    return result


@dataclass
class FamilyRow:
    family: str
    injected: int
    detected: int
    median_delay_s: float | None
    max_delay_s: float | None

    @property
    def recall(self) -> float | None:
        return self.detected / self.injected if self.injected else None


def by_family(scores: list[ScenarioScore]) -> list[FamilyRow]:
    """Detected / injected and delays per family, over all scenarios."""
    rows = []
    for fam in FAMILIES:
        results = [a for s in scores for a in s.anomalies if a.family == fam]
        delays = [a.delay_s for a in results if a.delay_s is not None]
        rows.append(
            FamilyRow(
                family=fam,
                injected=len(results),
                detected=sum(a.detected for a in results),
                median_delay_s=statistics.median(delays) if delays else None,
                max_delay_s=max(delays) if delays else None,
            )
        )
    return rows
