"""Rule conditions and durations: a small regex parser (no eval) and the fields a condition reads.

A condition is one or more clauses joined by ``and``; a clause is ``FIELD OP RHS`` where RHS is
a number, another field, or ``NUMBER * FIELD``. A clause reading a field the signal lacks is false.

>>> c = parse_condition("value > 2 * baseline and n >= 100")
>>> c.holds({"value": 0.09, "baseline": 0.04, "n": 150}), c.threshold({"baseline": 0.04})
(True, 0.08)
>>> c.holds({"value": 0.09, "baseline": None, "n": 150})
False
>>> parse_condition("ratio.upper < 0.8").holds({"ratio.upper": 0.79})  # the ratio's budgeted bound
True
>>> parse_duration("1h30m")
datetime.timedelta(seconds=5400)
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from raiwatch.core.records import Signal

ESTIMATES = ("value", "delta", "ratio")  # point estimates: a threshold on one alone is no evidence
BOUNDS = tuple(f"{q}.{side}" for q in ESTIMATES for side in ("lower", "upper"))  # the evidence bounds
FIELDS = ("value", "lower", "upper", "baseline", "p_value", "n", "delta", "ratio", *BOUNDS)
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_FIELD = "|".join(re.escape(f) for f in sorted(FIELDS, key=len, reverse=True))
_CLAUSE = re.compile(rf"\s*({_FIELD})\s*(>=|<=|>|<)\s*(?:({_NUM})\s*\*\s*({_FIELD})|({_NUM})|({_FIELD}))\s*")
_AND = re.compile(r"\s+and\s+")
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")

Fields = Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class Clause:
    """``field op coef * ref`` (``ref`` None: compare with the number ``coef``)."""

    field: str
    op: str
    coef: float
    ref: str | None = None

    def rhs(self, f: Fields) -> float | None:
        if self.ref is None:
            return self.coef
        x = f.get(self.ref)
        return None if x is None else self.coef * x

    def holds(self, f: Fields) -> bool:
        x, y = f.get(self.field), self.rhs(f)
        return x is not None and y is not None and _OPS[self.op](x, y)


@dataclass(frozen=True, slots=True)
class Condition:
    """Clauses that must all hold; ``text`` is the rule's source."""

    text: str
    clauses: tuple[Clause, ...]

    def holds(self, f: Fields) -> bool:
        return all(c.holds(f) for c in self.clauses)

    def threshold(self, f: Fields) -> float | None:
        """The right-hand side of the first clause: the number an incident reports as threshold."""
        return self.clauses[0].rhs(f)


def parse_condition(text: str) -> Condition:
    """Parse ``text``; ``ValueError`` names the clause that does not parse."""
    clauses = []
    for part in _AND.split(text.strip()):
        m = _CLAUSE.fullmatch(part)
        if not m:
            raise ValueError(
                f"cannot parse clause {part!r}: write FIELD OP NUMBER, FIELD OP FIELD or"
                f" FIELD OP NUMBER * FIELD, with OP one of > >= < <= and FIELD one of {', '.join(FIELDS)}"
            )
        field, op, coef, ref, num, other = m.groups()
        if other:
            clauses.append(Clause(field, op, 1.0, other))
        else:
            clauses.append(Clause(field, op, float(coef or num), ref))
    return Condition(text, tuple(clauses))


def signal_fields(s: Signal) -> dict[str, float | None]:
    """What conditions and summaries read: the signal's numbers, ``delta`` and ``ratio``, and the
    evidence bounds as ``<quantity>.lower``/``.upper`` (None for the quantities it does not bound).

    ``ratio`` against a zero baseline is infinite when ``value`` is positive, else undefined.
    """
    b = s.baseline
    if b is None:
        ratio = None
    elif b:
        ratio = s.value / b
    else:
        ratio = math.inf if s.value > 0 else None
    fields: dict[str, float | None] = {
        "value": s.value,
        "lower": s.lower,
        "upper": s.upper,
        "baseline": b,
        "p_value": s.p_value,
        "n": s.n,
        "delta": None if b is None else s.value - b,
        "ratio": ratio,
    }
    fields.update(dict.fromkeys(BOUNDS))
    if s.evidence_of:
        fields[f"{s.evidence_of}.lower"] = s.evidence_lower
        fields[f"{s.evidence_of}.upper"] = s.evidence_upper
    return fields


def parse_duration(text: str | int) -> timedelta:
    """``30s``, ``5m``, ``1h``, ``1h30m`` or ``0``; ``ValueError`` otherwise."""
    if text == 0 or text == "0":
        return timedelta(0)
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if not m or not any(m.groups()):
        raise ValueError(f"bad duration {text!r}: write 30s, 5m, 1h or 1h30m")
    h, mi, s = (int(g or 0) for g in m.groups())
    return timedelta(hours=h, minutes=mi, seconds=s)
