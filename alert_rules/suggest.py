"""Threshold suggestions: a rule backtested at candidate thresholds of its first ``fire_when`` clause.

Candidates are quantiles of what that clause compares, over the rule's stored signals (the field,
or the field over its reference for ``value > 2 * baseline``), plus the rule's own threshold. Each
candidate version of the rule runs alone over the same signals (so ``inhibited_by`` holds nothing
back), and is scored against on-call's verdicts like a backtest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from alert_rules.backtest import backtest, score
from alert_rules.conditions import Clause, Condition, signal_fields
from alert_rules.loader import Rule
from raiwatch.core.records import Incident, Signal

QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999)


@dataclass(frozen=True)
class Option:
    threshold: float
    incidents: int
    per_week: float
    true_positives: int
    false_positives: int
    precision: float | None
    current: bool


def with_threshold(rule: Rule, x: float) -> Rule:
    """``rule`` with the number of its first ``fire_when`` clause set to ``x``."""
    first, *rest = rule.fire_when.clauses
    clauses = (Clause(first.field, first.op, x, first.ref), *rest)
    return replace(rule, fire_when=Condition(" and ".join(map(_text, clauses)), clauses))


def _text(c: Clause) -> str:
    rhs = f"{c.coef:g} * {c.ref}" if c.ref else f"{c.coef:g}"
    return f"{c.field} {c.op} {rhs}"


def in_scope(rule: Rule, s: Signal) -> bool:
    """Whether the engine would evaluate ``s`` for ``rule`` (in scope, enough samples)."""
    return s.n >= rule.min_samples and rule.sees(s, s.labels())


def observed_weeks(signals: Sequence[Signal]) -> float:
    """The weeks of event time the signals' windows cover (their union): the denominator of
    incidents per week, so a gap without data (a stray signal from years ago) does not dilute it."""
    spans = sorted((s.ts.timestamp() - s.window, s.ts.timestamp()) for s in signals)
    covered, end = 0.0, -np.inf
    for lo, hi in spans:
        covered += max(0.0, hi - max(lo, end))
        end = max(end, hi)
    return covered / (7 * 86400)


def candidates(rule: Rule, signals: Sequence[Signal]) -> list[float]:
    """Quantiles of what the first clause compares, over the rule's signals, and its threshold."""
    first = rule.fire_when.clauses[0]
    xs = []
    for s in signals:
        if not in_scope(rule, s):
            continue
        f = signal_fields(s)
        x, ref = f.get(first.field), (f.get(first.ref) if first.ref else 1.0)
        if x is not None and ref:
            xs.append(x / ref)
    current = first.coef
    if not xs:
        return [current]
    q = np.quantile(np.array(xs), QUANTILES if first.op in (">", ">=") else [1 - p for p in QUANTILES])
    return sorted({float(f"{v:.4g}") for v in q} | {current}, reverse=first.op in ("<", "<="))


def suggest(rule: Rule, signals: Sequence[Signal], judged: Sequence[Incident], weeks: float) -> list[Option]:
    """Every candidate threshold with the incidents it opens, per week, and its verdicts."""
    out = []
    mine = [s for s in signals if s.signal == rule.signal]
    for x in candidates(rule, mine):
        version = with_threshold(rule, x)
        fired = backtest([version], [mine])
        sc = score([version], fired, judged)[rule.name]
        current = x == rule.fire_when.clauses[0].coef
        n = len(fired)
        out.append(Option(x, n, n / weeks, sc.true_positives, sc.false_positives, sc.precision, current))
    return out


def pick(options: Sequence[Option], per_week: float | None, precision: float | None) -> Option | None:
    """The least strict option opening at most ``per_week`` incidents a week, or the least strict
    whose precision is at least ``precision`` (options run from least to most strict)."""
    for o in options:
        if per_week is not None and o.per_week <= per_week:
            return o
        if precision is not None and o.precision is not None and o.precision >= precision:
            return o
    return None
