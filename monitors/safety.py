"""Safety-violation rates per model, category, tenant and policy action, per event-time window.

Signals (``n`` = events that carry safety data; intervals are Wilson 95%):

- ``safety.violation_rate`` {category}: share of events whose ``safety.violations`` name it;
  every category the model has shown is reported each window, zero included, so rules can clear.
- ``safety.violation_rate`` {category, tenant_id}: the same per tenant, for tenant/category
  pairs with a violation in the baseline horizon (others are all-zero and not worth a row).
- ``safety.any_violation_rate`` {}: share of events with at least one violation.
- ``safety.action_rate`` {action}: share blocked, redacted or escalated by the policy engine.

``baseline`` is the pooled rate of the same series over the previous ``baseline_windows``.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from datetime import UTC, datetime

from detectors.rates import wilson_interval
from raiwatch.config import SafetyConfig
from raiwatch.records import Signal, TelemetryEvent

OTHER = "other"
ACTIONS = ("blocked", "redacted", "escalated")


class _Window:
    """Counts for one model in one window."""

    __slots__ = ("actions", "any", "cats", "n", "tenant_cats", "tenant_n", "version")

    def __init__(self) -> None:
        self.n = 0
        self.any = 0
        self.version = ""
        self.cats: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.tenant_n: Counter[str] = Counter()
        self.tenant_cats: Counter[tuple[str, str]] = Counter()


class _Baseline:
    """Pooled k/n over the last ``size`` windows of one series."""

    __slots__ = ("hist", "k", "n")

    def __init__(self, size: int):
        self.hist: deque[tuple[int, int]] = deque(maxlen=size)
        self.k = 0
        self.n = 0

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


class SafetyMonitor:
    """Windowed safety-violation rates; memory bounded by the category and tenant caps."""

    family = "safety"

    def __init__(self, window_s: int, config: SafetyConfig | None = None):
        self.window_s = window_s
        self.cfg = config or SafetyConfig()
        self._windows: dict[int, dict[str, _Window]] = {}
        self._categories: dict[str, dict[str, None]] = {}  # model -> categories seen (ordered, capped)
        self._tenants: dict[str, set[str]] = {}  # model -> tenants tracked (capped)
        self._tenant_series: dict[str, dict[tuple[str, str], int]] = {}  # model -> (tenant, cat) -> last hit
        self._baselines: dict[tuple, _Baseline] = {}

    def observe(self, events: Sequence[TelemetryEvent], starts: Sequence[int]) -> None:
        windows = self._windows
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
            tenant = self._tenant(model, ev.tenant_id) if ev.tenant_id else ""
            if tenant:
                w.tenant_n[tenant] += 1
            if safety.action in ACTIONS:
                w.actions[safety.action] += 1
            scores = safety.scores
            if scores and not self._categories.get(model, {}).keys() >= scores.keys():
                for cat in scores:
                    self._category(model, cat)
            violations = safety.violations
            if violations:
                w.any += 1
                for cat in {self._category(model, c) for c in violations}:
                    w.cats[cat] += 1
                    if tenant:
                        w.tenant_cats[tenant, cat] += 1

    def close(self, start: int) -> list[Signal]:
        by_model = self._windows.pop(start, {})
        rows: list[tuple[str, str, dict[str, str], int, int]] = []  # model, signal, dims, k, n
        for model, w in sorted(by_model.items()):
            if not w.n:
                continue
            rows.append((model, "safety.any_violation_rate", {}, w.any, w.n))
            for cat in self._categories.get(model, ()):
                rows.append((model, "safety.violation_rate", {"category": cat}, w.cats[cat], w.n))
            for action in ACTIONS:
                rows.append((model, "safety.action_rate", {"action": action}, w.actions[action], w.n))
            rows.extend(self._tenant_rows(model, start, w))
        if not rows:
            return []
        rate, lo, hi = wilson_interval([r[3] for r in rows], [r[4] for r in rows])
        ts = datetime.fromtimestamp(start + self.window_s, UTC)
        out = []
        for i, (model, name, dims, k, n) in enumerate(rows):
            key = (model, name, *sorted(dims.items()))
            base = self._baselines.get(key)
            if base is None:
                base = self._baselines[key] = _Baseline(self.cfg.baseline_windows)
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

    def _tenant_rows(
        self, model: str, start: int, w: _Window
    ) -> list[tuple[str, str, dict[str, str], int, int]]:
        series = self._tenant_series.setdefault(model, {})
        for key in w.tenant_cats:
            series[key] = start
        horizon = start - self.cfg.baseline_windows * self.window_s
        for key in [k for k, last in series.items() if last < horizon]:
            del series[key]
            self._baselines.pop(
                (model, "safety.violation_rate", ("category", key[1]), ("tenant_id", key[0])), None
            )
        return [
            (
                model,
                "safety.violation_rate",
                {"category": cat, "tenant_id": tenant},
                w.tenant_cats[tenant, cat],
                w.tenant_n[tenant],
            )
            for tenant, cat in sorted(series)
            if w.tenant_n[tenant]
        ]

    def _category(self, model: str, cat: str) -> str:
        cats = self._categories.get(model)
        if cats is None:
            cats = self._categories[model] = {}
        if cat in cats:
            return cat
        if len(cats) < self.cfg.max_categories - 1:
            cats[cat] = None
            return cat
        cats[OTHER] = None
        return OTHER

    def _tenant(self, model: str, tenant: str) -> str:
        tenants = self._tenants.get(model)
        if tenants is None:
            tenants = self._tenants[model] = set()
        if tenant in tenants:
            return tenant
        if len(tenants) < self.cfg.max_tenants - 1:
            tenants.add(tenant)
            return tenant
        return OTHER
