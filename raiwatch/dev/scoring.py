"""Score incidents against a scenario's ground truth: what was caught, how fast, what paged for nothing.

An incident *detects* an anomaly when it is on the same model, its signal belongs to the anomaly's
family, it was opened between the anomaly's start and its ``match_until`` (the end plus a grace
period; for label-quality drops, plus the label delay), and none of its labels contradicts the
anomaly's scope (an incident labelled ``category=toxicity`` does not detect a self-harm spike; a
model-wide incident does detect a one-tenant spike). An incident in one of the anomaly's ``also``
families (over-blocking seen by the safety rules, say) is *related* to it: neither a detection nor
a false alarm. Every other incident is a *false alarm*; one opened on a model during a benign burst
(a viral prompt, up to 15 minutes after it) names the burst.

A *page* is one notification: the incidents that share a ``group_id`` (the ``incident_id`` of the
group's first incident; an incident without one is a group of its own). A page is *true* when any
of its incidents detects or is related to an anomaly, *false* otherwise; it is credited to the
rule of its first incident and carries the highest severity among its incidents. False pages are
counted per model-week of traffic, with an exact Poisson 95% interval.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from statsmodels.stats.rates import confint_poisson

FAMILIES = ("safety", "drift", "abuse", "fairness", "quality")
SEVERITY = {"critical": 3, "high": 2, "warning": 1, "info": 0}
PAGING = ("critical", "high")  # the severities whose precision the benchmark holds to a bar
# the median delay from onset each family must meet; quality adds the model's label delay
TARGET_S = {"drift": 300.0, "safety": 600.0, "abuse": 600.0, "fairness": 900.0, "quality": 900.0}


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


def rate_interval(count: int, exposure: float) -> tuple[float, float]:
    """Exact (Garwood) 95% interval of a Poisson rate: ``count`` events over ``exposure`` units.

    >>> [round(x, 3) for x in rate_interval(0, 4.0)], [round(x, 3) for x in rate_interval(3, 4.0)]
    ([0.0, 0.922], [0.155, 2.192])
    """
    if exposure <= 0:
        return (0.0, float("inf"))
    low, high = confint_poisson(count, exposure, method="exact-c")
    return float(low), float(high)


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
    target_s: float  # the median delay its family must meet (quality: plus the label delay)
    pages: list[str] = field(default_factory=list)  # pages with an incident detecting or related to it


@dataclass
class Page:
    """One notification: a group of incidents."""

    id: str
    rule: str  # its first incident's
    severity: str  # the highest of its incidents'
    opened_at: str
    model_id: str | None
    incidents: list[str]
    anomalies: list[str]  # detected by or related to its incidents; empty: a false page
    benign: list[str]  # benign bursts live on its model when it opened

    @property
    def true(self) -> bool:
        return bool(self.anomalies)


@dataclass
class ScenarioScore:
    scenario: str
    model_days: float
    anomalies: list[AnomalyResult] = field(default_factory=list)
    false_alarms: list[dict] = field(default_factory=list)  # the incidents that match nothing
    related: list[str] = field(default_factory=list)  # incidents in an anomaly's ``also`` family
    pages: list[Page] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing injected: every page is false."""
        return not self.anomalies

    @property
    def model_weeks(self) -> float:
        return self.model_days / 7

    @property
    def false_pages(self) -> list[Page]:
        return [p for p in self.pages if not p.true]

    @property
    def false_alarms_per_model_day(self) -> float:
        return len(self.false_alarms) / self.model_days if self.model_days else 0.0

    @property
    def pages_per_problem(self) -> float | None:
        """True pages per injected anomaly (None when nothing was injected)."""
        return sum(p.true for p in self.pages) / len(self.anomalies) if self.anomalies else None


def score(truth: dict, incidents: list[dict]) -> ScenarioScore:
    """Match ``incidents`` (incident.v1 objects, with an optional ``group_id``) to ``truth`` (as
    written by ``synth.write``)."""
    days = (_ts(truth["end"]) - _ts(truth["start"])) / 86400
    result = ScenarioScore(scenario=truth["scenario"], model_days=days * len(truth["models"]))
    anomalies = truth["anomalies"]
    bursts = truth.get("benign", [])
    label_delay = {m["id"]: m.get("label_delay_s", 0.0) for m in truth["models"]}
    hits: dict[str, list[tuple[float, str]]] = defaultdict(list)
    touches: dict[str, set[str]] = defaultdict(set)  # incident -> anomalies it detects or relates to
    during: dict[str, list[str]] = {}  # incident -> benign bursts live on its model
    for inc in incidents:
        labels = inc.get("labels", {})
        model, fam, opened = labels.get("model_id"), family_of(inc["signal"]), _ts(inc["opened_at"])
        live = [
            a
            for a in anomalies
            if a["model_id"] == model and _ts(a["start"]) <= opened <= _ts(a["match_until"])
        ]
        during[inc["incident_id"]] = [
            b["id"] for b in bursts if b["model_id"] == model and _ts(b["start"]) <= opened <= _ts(b["until"])
        ]
        detects = [a for a in live if a["family"] == fam and _in_scope(a, labels)]
        for a in detects:
            hits[a["id"]].append((opened, inc["incident_id"]))
            touches[inc["incident_id"]].add(a["id"])
        if detects:
            continue
        related = [a for a in live if fam in a.get("also", ())]
        if related:
            result.related.append(inc["incident_id"])
            touches[inc["incident_id"]].update(a["id"] for a in related)
        else:
            result.false_alarms.append(
                {
                    "incident_id": inc["incident_id"],
                    "rule": inc["rule"],
                    "opened_at": inc["opened_at"],
                    "labels": labels,
                    "benign": during[inc["incident_id"]],
                }
            )
    result.pages = _pages(incidents, touches, during)
    pages_of: dict[str, list[str]] = defaultdict(list)
    for p in result.pages:
        for a in p.anomalies:
            pages_of[a].append(p.id)
    for a in anomalies:
        found = sorted(hits.get(a["id"], []))
        target = TARGET_S[a["family"]] + (
            label_delay.get(a["model_id"], 0.0) if a["family"] == "quality" else 0
        )
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
                target_s=target,
                pages=pages_of.get(a["id"], []),
            )
        )
    return result


def _pages(incidents: list[dict], touches: dict[str, set[str]], during: dict[str, list[str]]) -> list[Page]:
    """Incidents grouped into pages by ``group_id``, in the order the pages opened."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for inc in incidents:
        groups[inc.get("group_id") or inc["incident_id"]].append(inc)
    pages = []
    for gid, members in groups.items():
        members.sort(key=lambda i: (_ts(i["opened_at"]), i["incident_id"] != gid))
        head = next((i for i in members if i["incident_id"] == gid), members[0])
        ids = [i["incident_id"] for i in members]
        pages.append(
            Page(
                id=gid,
                rule=head["rule"],
                severity=max((i.get("severity", "info") for i in members), key=lambda s: SEVERITY.get(s, 0)),
                opened_at=members[0]["opened_at"],
                model_id=head.get("labels", {}).get("model_id"),
                incidents=ids,
                anomalies=sorted({a for i in ids for a in touches.get(i, ())}),
                benign=sorted({b for i in ids for b in during.get(i, ())}),
            )
        )
    return sorted(pages, key=lambda p: (_ts(p.opened_at), p.id))


@dataclass
class FamilyRow:
    family: str
    injected: int
    detected: int
    median_delay_s: float | None
    max_delay_s: float | None
    median_over_target_s: float | None  # median of (delay - target); <= 0 meets the target

    @property
    def recall(self) -> float | None:
        return self.detected / self.injected if self.injected else None

    @property
    def meets_target(self) -> bool | None:
        """Every anomaly detected and the median delay within the family's target (None: none injected)."""
        if not self.injected:
            return None
        over = self.median_over_target_s
        return self.detected == self.injected and over is not None and over <= 0


def by_family(scores: list[ScenarioScore]) -> list[FamilyRow]:
    """Detected / injected, delays and the delay target per family, over all scenarios."""
    rows = []
    for fam in FAMILIES:
        results = [a for s in scores for a in s.anomalies if a.family == fam]
        found = [a for a in results if a.delay_s is not None]
        delays = [a.delay_s for a in found]
        over = [a.delay_s - a.target_s for a in found]  # type: ignore[operator]
        rows.append(
            FamilyRow(
                family=fam,
                injected=len(results),
                detected=sum(a.detected for a in results),
                median_delay_s=statistics.median(delays) if delays else None,  # type: ignore[type-var]
                max_delay_s=max(delays) if delays else None,  # type: ignore[type-var]
                median_over_target_s=statistics.median(over) if over else None,
            )
        )
    return rows


@dataclass
class RuleRow:
    rule: str
    severity: str
    incidents: int  # its incidents on the runs counted
    pages: int  # pages it opened there (it was the first incident of)
    per_model_week: float
    low: float  # exact Poisson 95% interval of per_model_week
    high: float
    models: dict[str, int]  # pages per model


def false_pages_by_rule(runs: list[tuple[ScenarioScore, list[dict]]]) -> list[RuleRow]:
    """Per rule, the false pages (and all incidents) of ``runs`` (each a score and its incidents;
    clean runs, where every incident is false) per model-week with a 95% interval, most first."""
    weeks = sum(s.model_weeks for s, _ in runs)
    rows: dict[str, RuleRow] = {}
    for s, incidents in runs:
        for inc in incidents:
            row = rows.setdefault(
                inc["rule"], RuleRow(inc["rule"], inc.get("severity", ""), 0, 0, 0, 0, 0, {})
            )
            row.incidents += 1
        for p in s.false_pages:
            row = rows.setdefault(p.rule, RuleRow(p.rule, p.severity, 0, 0, 0, 0, 0, {}))
            row.pages += 1
            model = p.model_id or "-"
            row.models[model] = row.models.get(model, 0) + 1
    for row in rows.values():
        row.per_model_week = row.pages / weeks if weeks else 0.0
        row.low, row.high = rate_interval(row.pages, weeks)
    return sorted(rows.values(), key=lambda r: (-r.pages, -r.incidents, r.rule))


@dataclass
class Precision:
    pages: int
    true: int

    @property
    def value(self) -> float | None:
        return self.true / self.pages if self.pages else None


def precision(scores: list[ScenarioScore], severities: tuple[str, ...] = PAGING) -> dict[str, Precision]:
    """Share of true pages among pages of ``severities``: overall (key ``""``) and per rule."""
    out: dict[str, Precision] = {"": Precision(0, 0)}
    for s in scores:
        for p in s.pages:
            if p.severity not in severities:
                continue
            for key in ("", p.rule):
                row = out.setdefault(key, Precision(0, 0))
                row.pages += 1
                row.true += p.true
    return out
