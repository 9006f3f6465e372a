"""Safety-violation rates per model, category, tenant and policy action, per event-time window.

Signals (``n`` = events that carry safety data; intervals are Wilson 95%):

- ``safety.violation_rate`` {category}: share of events whose ``safety.violations`` name it;
  every category the model has shown is reported each window, zero included, so rules can clear.
- ``safety.violation_rate`` {category, tenant_id}: the same per tenant, for tenant/category
  pairs with a violation in the baseline horizon (others are all-zero and not worth a row).
- ``safety.any_violation_rate`` {}: share of events with at least one violation.
- ``safety.action_rate`` {action}: share blocked, redacted or escalated by the policy engine.

``baseline`` is the pooled rate of the same series over the previous ``baseline_windows``.

Categories and tenants are admitted to a model's tracked set when the window that first shows
them closes (new names in sorted order, up to the caps; the rest fold into ``other``), so the
signals of a window depend only on the windows closed up to it, never on how events were
batched: a restarted worker and a replay emit the same rows.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Annotated

import msgspec

from detectors.rates import wilson_interval
from monitors.base import PerModelState
from monitors.registry import register
from raiwatch.core.catalogue import SignalSpec
from raiwatch.core.records import Signal, TelemetryEvent

OTHER = "other"
ACTIONS = ("blocked", "redacted", "escalated")
STATE_VERSION = 1

Row = tuple[str, str, dict[str, str], int, int]  # model, signal, dims, k, n


class _Window:
    """Counts for one model in one window, by raw category and tenant name (capped)."""

    __slots__ = ("actions", "any", "cats", "n", "seen", "tenant_cats", "tenant_n", "version")

    def __init__(self) -> None:
        self.n = 0
        self.any = 0
        self.version = ""
        self.seen: set[str] = set()  # categories named in scores or violations
        self.cats: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.tenant_n: Counter[str] = Counter()
        self.tenant_cats: Counter[tuple[str, str]] = Counter()


class _Baseline:
    """Pooled k/n over the last ``size`` windows of one series."""

    __slots__ = ("hist", "k", "n")

    def __init__(self, size: int, hist: Sequence[tuple[int, int]] = ()):
        self.hist: deque[tuple[int, int]] = deque(maxlen=size)
        self.k = self.n = 0
        for k, n in hist:
            self.rate_then_push(k, n)

    def rate_then_push(self, k: int, n: int) -> float | None:
        rate = self.k / self.n if self.n else None
        if len(self.hist) == self.hist.maxlen:
            old_k, old_n = self.hist[0]
            self.k -= old_k
            self.n -= old_n
        self.hist.append((k, n))
        self.k += k
        self.n += n
        return rate


class _Model:
    """What the monitor remembers of one model between windows: the state a snapshot carries."""

    __slots__ = ("baselines", "categories", "series", "tenants")

    def __init__(self) -> None:
        self.categories: dict[str, None] = {}  # admitted, in order of admission
        self.tenants: dict[str, None] = {}
        self.series: dict[tuple[str, str], int] = {}  # (tenant, category) -> last window with a violation
        self.baselines: dict[tuple, _Baseline] = {}


class _State(msgspec.Struct, array_like=True):
    v: int
    categories: list[str]
    tenants: list[str]
    series: list[tuple[str, str, int]]
    baselines: list[tuple[str, list[tuple[str, str]], list[tuple[int, int]]]]


class SafetyConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``monitors.safety`` in the config file."""

    max_categories: Annotated[int, msgspec.Meta(gt=1)] = 64  # per model; more fold into "other"
    max_tenants: Annotated[int, msgspec.Meta(gt=1)] = 200  # per model; more fold into "other"
    baseline_windows: Annotated[int, msgspec.Meta(gt=0)] = 60  # trailing windows that make the baseline


_RATE = dict(
    family="safety",
    unit="ratio",
    range=(0.0, 1.0),
    n="events with safety data in the window",
    interval="Wilson 95% interval",
    baseline="pooled rate of the same series over the previous baseline_windows",
)
SIGNALS = (
    SignalSpec(
        name="safety.violation_rate",
        dims=(("category",), ("category", "tenant_id")),
        value="share of events whose safety.violations name the category",
        export=("category",),
        **_RATE,
    ),
    SignalSpec(
        name="safety.any_violation_rate",
        dims=((),),
        value="share of events with at least one violation",
        export=(),
        **_RATE,
    ),
    SignalSpec(
        name="safety.action_rate",
        dims=(("action",),),
        value="share of events the policy engine blocked, redacted or escalated (dim action)",
        export=("action",),
        **_RATE,
    ),
)


@register
class SafetyMonitor(PerModelState):
    """Windowed safety-violation rates; memory bounded by the category and tenant caps."""

    family = "safety"
    Config = SafetyConfig
    SIGNALS = SIGNALS

    def __init__(self, window_s: int, config: SafetyConfig | None = None):
        self.window_s = window_s
        self.cfg = config or SafetyConfig()
        self._windows: dict[int, dict[str, _Window]] = {}
        self._models: dict[str, _Model] = {}
        self._dirty: set[str] = set()

    def observe(self, events: Sequence[TelemetryEvent], starts: Sequence[int]) -> None:
        windows = self._windows
        max_cats, max_tenants = self.cfg.max_categories, self.cfg.max_tenants
        for ev, start in zip(events, starts, strict=True):
            safety = ev.safety
            if not safety:
                continue
            model = ev.model.id
            by_model = windows.get(start)
            if by_model is None:
                by_model = windows[start] = {}
            w = by_model.get(model)
            if w is None:
                w = by_model[model] = _Window()
            w.n += 1
            if ev.model.version:
                w.version = ev.model.version
            tenant = ev.tenant_id
            if tenant:
                if tenant not in w.tenant_n and len(w.tenant_n) >= max_tenants:
                    tenant = OTHER
                w.tenant_n[tenant] += 1
            if safety.action in ACTIONS:
                w.actions[safety.action] += 1
            scores = safety.scores
            if scores and not w.seen.issuperset(scores):
                for cat in scores:
                    if cat not in w.seen and len(w.seen) < max_cats:
                        w.seen.add(cat)
            violations = safety.violations
            if violations:
                w.any += 1
                for cat in set(violations):
                    if cat not in w.seen:
                        if len(w.seen) >= max_cats:
                            cat = OTHER
                        w.seen.add(cat)
                    w.cats[cat] += 1
                    if tenant:
                        w.tenant_cats[tenant, cat] += 1

    def close(self, start: int) -> list[Signal]:
        by_model = self._windows.pop(start, {})
        rows: list[Row] = []
        for model, w in sorted(by_model.items()):
            if not w.n:
                continue
            st = self._models.get(model)
            if st is None:
                st = self._models[model] = _Model()
            self._dirty.add(model)
            cat_of = self._admit(st.categories, w.seen, self.cfg.max_categories)
            tenant_of = self._admit(st.tenants, w.tenant_n, self.cfg.max_tenants)
            cats: Counter[str] = Counter()
            for c, k in w.cats.items():
                cats[cat_of(c)] += k
            tenant_n: Counter[str] = Counter()
            for t, k in w.tenant_n.items():
                tenant_n[tenant_of(t)] += k
            tenant_cats: Counter[tuple[str, str]] = Counter()
            for (t, c), k in w.tenant_cats.items():
                tenant_cats[tenant_of(t), cat_of(c)] += k
            rows.append((model, "safety.any_violation_rate", {}, w.any, w.n))
            for cat in st.categories:
                rows.append((model, "safety.violation_rate", {"category": cat}, cats[cat], w.n))
            for action in ACTIONS:
                rows.append((model, "safety.action_rate", {"action": action}, w.actions[action], w.n))
            rows.extend(self._tenant_rows(model, st, start, tenant_n, tenant_cats))
        if not rows:
            return []
        rate, lo, hi = wilson_interval([r[3] for r in rows], [r[4] for r in rows])
        ts = datetime.fromtimestamp(start + self.window_s, UTC)
        out = []
        for i, (model, name, dims, k, n) in enumerate(rows):
            baselines = self._models[model].baselines
            key = (name, *sorted(dims.items()))
            base = baselines.get(key)
            if base is None:
                base = baselines[key] = _Baseline(self.cfg.baseline_windows)
            out.append(
                Signal(
                    ts=ts,
                    window=self.window_s,
                    signal=name,
                    model_id=model,
                    model_version=by_model[model].version,
                    dims=dims,
                    value=float(rate[i]),
                    n=n,
                    lower=float(lo[i]),
                    upper=float(hi[i]),
                    baseline=base.rate_then_push(k, n),
                )
            )
        return out

    # -- lifecycle -----------------------------------------------------------------------------

    def restore(self, model: str, state: bytes) -> None:
        """Take a model's state from ``snapshot_dirty`` output (before any of its events are observed)."""
        s = msgspec.msgpack.decode(state, type=_State)
        if s.v != STATE_VERSION:
            return  # an older layout: start the model afresh rather than misread it
        st = _Model()
        st.categories = dict.fromkeys(s.categories)
        st.tenants = dict.fromkeys(s.tenants)
        st.series = {(t, c): last for t, c, last in s.series}
        size = self.cfg.baseline_windows
        st.baselines = {(name, *dims): _Baseline(size, hist) for name, dims, hist in s.baselines}
        self._models[model] = st

    @staticmethod
    def _encode(st: _Model) -> bytes:
        return msgspec.msgpack.encode(
            _State(
                STATE_VERSION,
                list(st.categories),
                list(st.tenants),
                [(t, c, last) for (t, c), last in st.series.items()],
                [(key[0], list(key[1:]), list(b.hist)) for key, b in st.baselines.items()],
            )
        )

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _admit(tracked: dict[str, None], names: Collection[str], cap: int):
        """Admit new names (sorted) while under ``cap`` (one place kept for ``other``); return the
        mapping of a name to its series."""
        for name in sorted(set(names) - tracked.keys()):
            if name == OTHER or len(tracked) - (OTHER in tracked) < cap - 1:
                tracked[name] = None
            else:
                tracked[OTHER] = None
        return lambda name: name if name in tracked else OTHER

    def _tenant_rows(
        self,
        model: str,
        st: _Model,
        start: int,
        tenant_n: Counter[str],
        tenant_cats: Counter[tuple[str, str]],
    ) -> list[Row]:
        series = st.series
        for key in tenant_cats:
            series[key] = start
        horizon = start - self.cfg.baseline_windows * self.window_s
        for key in [k for k, last in series.items() if last < horizon]:
            del series[key]
            st.baselines.pop(("safety.violation_rate", ("category", key[1]), ("tenant_id", key[0])), None)
        return [
            (
                model,
                "safety.violation_rate",
                {"category": cat, "tenant_id": tenant},
                tenant_cats[tenant, cat],
                tenant_n[tenant],
            )
            for tenant, cat in sorted(series)
            if tenant_n[tenant]
        ]
