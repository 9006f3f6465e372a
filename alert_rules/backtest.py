"""Backtesting rules on stored signals: the live ``RuleEngine`` run over history, scored by feedback.

``backtest`` feeds signals (oldest window first, as ClickHouse returns them) to a fresh engine
with the given rules and collects every incident it would have opened, when, and for how long.
``score`` then compares them with incidents on-call already judged: a backtest incident that
overlaps in time a stored incident of the same rule and labels takes its verdict, so a stricter
rule shows which false positives disappear and which true positives it would have missed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from statistics import median

from alert_rules.engine import RuleEngine
from alert_rules.grouping import Problems
from alert_rules.loader import Rule
from raiwatch.core.records import Incident, Signal


@dataclass(frozen=True)
class Fired:
    """One incident a backtest opened: its rule, labels and span (``resolved_at`` None: still open)."""

    rule: str
    labels: tuple[tuple[str, str], ...]
    opened_at: datetime
    resolved_at: datetime | None
    severity: str
    group_id: str = ""  # its problem: incidents of one problem share a page


@dataclass
class RuleScore:
    """Per rule: what it opened, and how that compares with on-call's verdicts."""

    rule: str
    fired: list[Fired] = field(default_factory=list)
    true_positives: int = 0
    false_positives: int = 0
    missed: list[Incident] = field(default_factory=list)  # judged true positives it did not open

    @property
    def precision(self) -> float | None:
        judged = self.true_positives + self.false_positives
        return self.true_positives / judged if judged else None

    def median_duration(self, until: datetime) -> timedelta | None:
        spans = [(f.resolved_at or until) - f.opened_at for f in self.fired]
        return median(spans) if spans else None


def backtest(
    rules: Sequence[Rule], batches: Iterable[Sequence[Signal]], problems: Problems | None = None
) -> list[Fired]:
    """Every incident ``rules`` open over these signals (batches in time order, any size), grouped
    into problems as a worker with the same ``problems`` settings groups them."""
    engine = RuleEngine(rules, "", problems=problems)
    fired: dict[str, Fired] = {}  # by incident id; a reopened incident is the same one, open again
    for batch in batches:
        for change in engine.evaluate(batch):
            inc = change.incident
            f = fired.get(inc.incident_id)
            if change.kind == "opened":
                fired[inc.incident_id] = Fired(
                    inc.rule, tuple(sorted(inc.labels.items())), inc.opened_at, None, inc.severity,
                    inc.group_id or inc.incident_id,
                )  # fmt: skip
            elif change.kind == "resolved" and f is not None:
                fired[inc.incident_id] = replace(f, resolved_at=inc.resolved_at)
            elif change.kind == "reopened" and f is not None:
                fired[inc.incident_id] = replace(f, resolved_at=None)
    return sorted(fired.values(), key=lambda f: (f.opened_at, f.rule, f.labels))


def score(rules: Sequence[Rule], fired: Sequence[Fired], judged: Sequence[Incident]) -> dict[str, RuleScore]:
    """Per rule of ``rules``: its backtest incidents and their verdicts from ``judged`` incidents."""
    scores = {r.name: RuleScore(r.name) for r in rules}
    for f in fired:
        scores[f.rule].fired.append(f)
    by_rule: dict[str, list[Incident]] = {}
    for inc in judged:
        if inc.feedback and inc.rule in scores:
            by_rule.setdefault(inc.rule, []).append(inc)
    for name, s in scores.items():
        hit: set[str] = set()
        for f in s.fired:
            for inc in by_rule.get(name, []):
                if _same_scope(f, inc) and _overlap(f, inc):
                    hit.add(inc.incident_id)
                    if inc.feedback == "true_positive":
                        s.true_positives += 1
                    else:
                        s.false_positives += 1
                    break
        s.missed = [
            i for i in by_rule.get(name, []) if i.feedback == "true_positive" and i.incident_id not in hit
        ]
    return scores


def _same_scope(f: Fired, inc: Incident) -> bool:
    labels = dict(f.labels)
    return all(inc.labels.get(k) == v for k, v in labels.items() if k in inc.labels)


def _overlap(f: Fired, inc: Incident) -> bool:
    end = f.resolved_at or datetime.max.replace(tzinfo=f.opened_at.tzinfo)
    inc_end = inc.resolved_at or datetime.max.replace(tzinfo=inc.opened_at.tzinfo)
    return f.opened_at <= inc_end and inc.opened_at <= end
