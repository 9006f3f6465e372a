"""Group fairness of outcomes per model: favourable-outcome and block rates per segment group.

WORK IN PROGRESS (issue #10, branch wip/fairness): outcome rates and their disparities only;
the delayed-label join (true/false-positive-rate gaps, quality) is not here yet.
Disparities use the last ``detect_windows`` (15); rates are reported over the hour.
bench/detection.py with alert_rules/fairness.yaml: fairness 3 / 4 (65+ x0.75 at 16 min, Turkish
x5 blocks at 9 min, mixed-busy 18-34 x0.7 at 13 min; female x0.88 missed); clean days 0; three
GroupOverBlocked on tenant_id during tenant-scoped safety spikes (real, but safety's to page:
drop tenant_id as a default attribute or inhibit by the tenant safety rules). Next: the label
join, the Fairlearn cross-check, tests, runbook, demo.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import msgspec
import numpy as np
from msgspec import UNSET

from detectors.drift import two_proportions
from detectors.rates import wilson_interval
from monitors.base import PerModelState
from monitors.registry import register
from raiwatch.core.catalogue import SignalSpec
from raiwatch.core.records import Signal, TelemetryEvent

STATE_VERSION = 1
OTHER = "other"
Key = tuple[str, str]  # attribute, group
Counts = dict[Key, list[int]]  # -> [favourable, outcome known, blocked, safety known]


class FairnessConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``monitors.fairness`` in the config file."""

    horizon_windows: Annotated[int, msgspec.Meta(gt=0)] = 60  # rates over the last hour
    detect_windows: Annotated[int, msgspec.Meta(gt=0)] = 15  # disparities over the last 15 minutes
    min_group: Annotated[int, msgspec.Meta(ge=1)] = 200  # events a group needs to be compared
    max_groups: Annotated[int, msgspec.Meta(ge=2)] = 50  # per attribute; more fold into "other"
    tenants: bool = True  # tenant_id is an attribute too


_COMMON = dict(family="fairness", dims=(("attribute", "group"),), unit="ratio", range=(0.0, 1.0))
SIGNALS = (
    SignalSpec(
        name="fairness.favorable_rate",
        value="the group's share of favourable outcomes over the horizon",
        n="the group's events with a known outcome over the horizon",
        interval="Wilson 95% interval",
        **_COMMON,
    ),
    SignalSpec(
        name="fairness.disparity",
        family="fairness",
        dims=(("attribute", "group"),),
        unit="ratio",
        value="the group's favourable share over the best-treated group's (four-fifths rule: < 0.8)",
        n="the group's events with a known outcome over the horizon",
        baseline="the best-treated group's favourable share",
        interval="Wilson 95% interval of the group's favourable share",
    ),
    SignalSpec(
        name="fairness.block_rate",
        value="the group's share of events the policy engine blocked, over the horizon",
        n="the group's events with safety data over the horizon",
        baseline="the blocked share of the model's other events",
        interval="Wilson 95% interval",
        **_COMMON,
    ),
)


def _groups(ev: TelemetryEvent, tenants: bool) -> list[Key]:
    keys = [(a, g) for a, g in ev.segments.items() if g is not None] if ev.segments else []
    if tenants and ev.tenant_id:
        keys.append(("tenant_id", ev.tenant_id))
    return keys


class _Model:
    __slots__ = ("groups", "totals", "windows")

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, None]] = {}  # attribute -> admitted groups
        self.windows: deque[tuple[int, Counts]] = deque()  # per window counts
        self.totals: Counts = {}  # over the horizon


class _State(msgspec.Struct, array_like=True):
    v: int
    groups: dict[str, list[str]]
    windows: list[tuple[int, list[tuple[str, str, list[int]]]]]


@register
class FairnessMonitor(PerModelState):
    """Favourable and blocked shares per segment group over a sliding horizon, with disparities."""

    family = "fairness"
    Config = FairnessConfig
    SIGNALS = SIGNALS

    def __init__(self, window_s: int, config: FairnessConfig | None = None):
        self.window_s = window_s
        self.cfg = config or FairnessConfig()
        self._windows: dict[int, dict[str, Counter[tuple]]] = {}
        self._models: dict[str, _Model] = {}
        self._dirty: set[str] = set()

    def observe(self, events: Sequence[TelemetryEvent], starts: Sequence[int]) -> None:
        windows, tenants = self._windows, self.cfg.tenants
        for ev, start in zip(events, starts, strict=True):
            fav = ev.outcome.favorable if ev.outcome else UNSET
            action = ev.safety.action if ev.safety else UNSET
            if fav is UNSET and action is UNSET:
                continue
            keys = _groups(ev, tenants)
            if not keys:
                continue
            by_model = windows.get(start)
            if by_model is None:
                by_model = windows[start] = {}
            c = by_model.get(ev.model.id)
            if c is None:
                c = by_model[ev.model.id] = Counter()
            for key in keys:
                if fav is not UNSET:
                    c[key, 0] += fav
                    c[key, 1] += 1
                if action is not UNSET:
                    c[key, 2] += action == "blocked"
                    c[key, 3] += 1

    def close(self, start: int) -> list[Signal]:
        by_model = self._windows.pop(start, {})
        out: list[Signal] = []
        ts = datetime.fromtimestamp(start + self.window_s, UTC)
        for model, c in sorted(by_model.items()):
            st = self._models.get(model)
            if st is None:
                st = self._models[model] = _Model()
            self._dirty.add(model)
            counts: Counts = {}
            for (key, i), v in sorted(c.items()):
                attr, group = key
                admitted = st.groups.setdefault(attr, {})
                if group not in admitted:
                    if len(admitted) < self.cfg.max_groups - 1:
                        admitted[group] = None
                    else:
                        admitted[OTHER] = None
                        group = OTHER
                counts.setdefault((attr, group), [0, 0, 0, 0])[i] += v
            self._push(st, start, counts)
            out += self._signals(model, st, ts)
        return out

    def _push(self, st: _Model, start: int, counts: Counts) -> None:
        st.windows.append((start, counts))
        _add(st.totals, counts, 1)
        horizon_start = start - (self.cfg.horizon_windows - 1) * self.window_s
        while st.windows and st.windows[0][0] < horizon_start:
            _, old = st.windows.popleft()
            _add(st.totals, old, -1)

    def _signals(self, model: str, st: _Model, ts: datetime) -> list[Signal]:
        cfg = self.cfg
        keys = sorted(st.totals)
        if not keys:
            return []
        hour = [st.totals[k] for k in keys]
        recent: Counts = {}
        for _, counts in list(st.windows)[-cfg.detect_windows :]:
            _add(recent, counts, 1)
        short = [recent.get(k, [0, 0, 0, 0]) for k in keys]
        fav, known, blocked, safety_n = (np.array([c[i] for c in short], dtype=np.float64) for i in range(4))
        h_rate, h_lo, h_hi = wilson_interval([c[0] for c in hour], [c[1] for c in hour])
        rate, lo, hi = wilson_interval(fav, known)
        brate, blo, bhi = wilson_interval(blocked, safety_n)
        out: list[Signal] = []
        best: dict[str, int] = {}
        for i, (attr, _) in enumerate(keys):
            if known[i] >= cfg.min_group and (attr not in best or rate[i] > rate[best[attr]]):
                best[attr] = i
        pairs = [(i, best[k[0]]) for i, k in enumerate(keys) if k[0] in best and i != best[k[0]]]
        pairs = [(i, b) for i, b in pairs if known[i] >= cfg.min_group]
        by_attr_known: dict[str, tuple[float, float]] = {}
        for i, (attr, _) in enumerate(keys):
            b, n = by_attr_known.get(attr, (0.0, 0.0))
            by_attr_known[attr] = (b + blocked[i], n + safety_n[i])
        block_rows = [i for i in range(len(keys)) if safety_n[i] >= cfg.min_group]
        tests = len(pairs) + len(block_rows)
        if pairs:
            g = np.array([i for i, _ in pairs])
            b = np.array([j for _, j in pairs])
            dp = two_proportions(fav[g], known[g], fav[b], known[b])
            p_low = _one_sided(dp.p_value, rate[g] < rate[b])
            for j, (i, bi) in enumerate(pairs):
                attr, group = keys[i]
                out.append(
                    Signal(
                        ts=ts,
                        window=self.window_s,
                        signal="fairness.disparity",
                        model_id=model,
                        dims={"attribute": attr, "group": group},
                        value=float(rate[i] / rate[bi]) if rate[bi] else 1.0,
                        n=int(known[i]),
                        baseline=float(rate[bi]),
                        lower=float(lo[i]),
                        upper=float(hi[i]),
                        p_value=min(1.0, float(p_low[j]) * tests),
                    )
                )
        for i, key in enumerate(keys):
            attr, group = key
            if hour[i][1]:
                out.append(
                    Signal(
                        ts=ts,
                        window=self.window_s,
                        signal="fairness.favorable_rate",
                        model_id=model,
                        dims={"attribute": attr, "group": group},
                        value=float(h_rate[i]),
                        n=int(hour[i][1]),
                        lower=float(h_lo[i]),
                        upper=float(h_hi[i]),
                    )
                )
        if block_rows:
            g = np.array(block_rows)
            rest_b = np.array([by_attr_known[keys[i][0]][0] - blocked[i] for i in block_rows])
            rest_n = np.array([by_attr_known[keys[i][0]][1] - safety_n[i] for i in block_rows])
            ok = rest_n > 0
            rest_rate = np.divide(rest_b, rest_n, out=np.zeros_like(rest_b), where=ok)
            tp = two_proportions(blocked[g], safety_n[g], rest_b, np.maximum(rest_n, 1))
            p_high = _one_sided(tp.p_value, brate[g] > rest_rate)
            for j, i in enumerate(block_rows):
                attr, group = keys[i]
                out.append(
                    Signal(
                        ts=ts,
                        window=self.window_s,
                        signal="fairness.block_rate",
                        model_id=model,
                        dims={"attribute": attr, "group": group},
                        value=float(brate[i]),
                        n=int(safety_n[i]),
                        baseline=float(rest_rate[j]),
                        lower=float(blo[i]),
                        upper=float(bhi[i]),
                        p_value=min(1.0, float(p_high[j]) * tests) if ok[j] else None,
                    )
                )
        return out

    # -- lifecycle -----------------------------------------------------------------------------

    @staticmethod
    def _encode(st: _Model) -> bytes:
        windows = [(s, [(a, g, c) for (a, g), c in counts.items()]) for s, counts in st.windows]
        groups = {a: list(gs) for a, gs in st.groups.items()}
        return msgspec.msgpack.encode(_State(STATE_VERSION, groups, windows))

    def restore(self, model: str, state: bytes) -> None:
        s = msgspec.msgpack.decode(state, type=_State)
        if s.v != STATE_VERSION:
            return
        st = _Model()
        st.groups = {a: dict.fromkeys(gs) for a, gs in s.groups.items()}
        for start, rows in s.windows:
            self._push(st, start, {(a, g): list(c) for a, g, c in rows})
        self._models[model] = st


def _add(totals: Counts, counts: Counts, sign: int) -> None:
    for key, c in counts.items():
        t = totals.setdefault(key, [0, 0, 0, 0])
        for i in range(4):
            t[i] += sign * c[i]
        if not any(t):
            del totals[key]


def _one_sided(p_two: np.ndarray, right_direction: np.ndarray) -> np.ndarray:
    """One-sided p-values from two-sided ones, for a test whose direction is ``right_direction``."""
    p = np.asarray(p_two, dtype=np.float64) / 2
    return np.where(right_direction, p, 1 - p)
