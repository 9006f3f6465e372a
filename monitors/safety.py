"""Safety-violation rates per model, category, tenant and policy action, per event-time window.

Signals (``n`` = events that carry safety data; intervals are Wilson 95%):

- ``safety.violation_rate`` {category}: share of events whose ``safety.violations`` name it;
  every category the model has shown is reported each window, zero included, so rules can clear.
- ``safety.violation_rate`` {category, tenant_id}: the same per tenant, for tenant/category
  pairs with a violation in the baseline horizon (others are all-zero and not worth a row).
- ``safety.any_violation_rate`` {}: share of events with at least one violation.
- ``safety.action_rate`` {action}: share blocked, redacted or escalated by the policy engine.

``baseline`` is the pooled rate of the same series over the previous ``baseline_windows``.
``safety.violation_rate`` also carries its evidence: one-sided Wilson bounds (``value.lower`` in
a rule) at the level its share of the model's false-alarm budget allows per look, over every
category and tenant series of the model (``detectors.evidence``): a rule on ``value.lower > 0.05``
tests "the rate is above 5%", and a model at a standing 4% pages at most as often as the budget says.

- ``safety.violation_rate_5m`` / ``safety.violation_rate_1h`` {category}: the model-wide rates
  over the last 5 and 60 windows (at 60 s windows), beside the per-window ones.
- ``safety.slo_burn_rate`` {slo, windows}: for each SLO of ``slos`` (at most ``objective`` of a
  model's requests violate ``category`` over ``period_days``), the violation share over the
  objective, the lower of a long and a short span (``windows``: 1h/5m, 6h/30m, 1d/2h), as in
  multi-window, multi-burn-rate alerting: a burn rate of 14.4 spends 2% of a 30-day budget in an
  hour. It is scaled to a 30-day period (x 30 / ``period_days``), so one threshold means the same
  share of any period's budget. ``n`` and ``lower``/``upper`` are the long span's events and
  Wilson interval (scaled alike); the evidence bounds are the lower (and upper) of the two spans'
  budgeted Wilson bounds, scaled alike.
- ``safety.rate_change`` {category}, {category, tenant_id}, {action}: a Bernoulli CUSUM
  (``detectors.cusum``) per series for a rise to ``change_ratio`` times its baseline. ``value``
  is the statistic over its decision limit (1 = alarm; capped at 1), ``baseline`` the baseline
  rate it tests against, ``lower``/``upper`` the Wilson interval of the rate since the statistic
  last left zero and ``n`` the events since then. The limit gives at most the signal's share of
  the model's false-alarm budget per week over all its series (Lorden's bound, ``ARL0 >= e^h``).
  The baseline is an exponentially weighted rate (half-life ``change_half_life_windows``), taken
  at its upper 95% bound so a thin baseline errs towards quiet, and frozen while the statistic
  is above half its limit, so a regression cannot become its own baseline. A tenant's baseline
  starts from the model-wide rate of the category, worth ``change_prior_events`` events, so a
  small or new tenant is judged against the model until its own traffic says otherwise. A series
  is tested once its baseline holds ``change_min_baseline`` events (the model-wide one, for a
  tenant).

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
import numpy as np

from detectors.cusum import BASE_K, BASE_N, RUN_K, RUN_N, S, threshold, track
from detectors.evidence import look_alpha, rate_bounds
from detectors.rates import wilson_interval
from monitors.base import MonitorConfig, PerModelState
from monitors.registry import budgets, register
from raiwatch.core.catalogue import SignalSpec
from raiwatch.core.columns import EventColumns
from raiwatch.core.records import Signal

OTHER = "other"
ACTIONS = ("blocked", "redacted", "escalated")
STATE_VERSION = 2  # 2: change-detector and SLO state

Row = tuple[str, str, dict[str, str], int, int]  # model, signal, dims, k, n
MULTI_WINDOW = {"5m": 300, "1h": 3600}  # longer views of the model-wide category rates
# Multi-window, multi-burn-rate alerting (Google SRE workbook, ch. 5): (name, long s, short s)
BURN_WINDOWS = (("1h/5m", 3600, 300), ("6h/30m", 21600, 1800), ("1d/2h", 86400, 7200))
CHANGE_OF = {"safety.violation_rate", "safety.action_rate"}  # series the change test runs on


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


def _pooled(windows: Sequence[tuple[int, int]], last: int) -> tuple[int, int]:
    """Summed ``(k, n)`` of the ``last`` windows.

    >>> _pooled([(1, 10), (2, 20), (3, 30)], 2)
    (5, 50)
    """
    recent = windows[-last:]
    return sum(k for k, _ in recent), sum(n for _, n in recent)


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

    __slots__ = ("baselines", "categories", "changes", "series", "slo", "tenants")

    def __init__(self) -> None:
        self.categories: dict[str, None] = {}  # admitted, in order of admission
        self.tenants: dict[str, None] = {}
        self.series: dict[tuple[str, str], int] = {}  # (tenant, category) -> last window with a violation
        self.baselines: dict[tuple, _Baseline] = {}
        self.changes: dict[tuple, list[float]] = {}  # series key -> [s, k_ew, n_ew, run_k, run_n]
        self.slo: dict[str, deque[tuple[int, int]]] = {}  # SLO name -> (violations, events) per window


class _State(msgspec.Struct, array_like=True):
    v: int
    categories: list[str]
    tenants: list[str]
    series: list[tuple[str, str, int]]
    baselines: list[tuple[str, list[tuple[str, str]], list[tuple[int, int]]]]
    changes: list[tuple[str, list[tuple[str, str]], list[float]]] = []
    slo: list[tuple[str, list[tuple[int, int]]]] = []


class SLO(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A safety objective: at most ``objective`` of a model's requests violate ``category``
    (``any``: any category) over ``period_days``; one entry of ``monitors.safety.slos``."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]+$")]
    objective: Annotated[float, msgspec.Meta(gt=0, lt=1)]  # e.g. 0.005 for "< 0.5% of requests"
    category: str = "any"
    period_days: Annotated[int, msgspec.Meta(gt=0)] = 30  # burn rates are scaled to 30 days
    models: list[str] = []  # empty: every model


class SafetyConfig(MonitorConfig):
    """``monitors.safety`` in the config file."""

    max_categories: Annotated[int, msgspec.Meta(gt=1)] = 64  # per model; more fold into "other"
    max_tenants: Annotated[int, msgspec.Meta(gt=1)] = 200  # per model; more fold into "other"
    baseline_windows: Annotated[int, msgspec.Meta(gt=0)] = 60  # trailing windows that make the baseline
    change_ratio: Annotated[float, msgspec.Meta(gt=1)] = 3.0  # the rise the change test is tuned to
    change_half_life_windows: Annotated[int, msgspec.Meta(gt=0)] = 360  # of the change baseline
    change_prior_events: Annotated[int, msgspec.Meta(ge=0)] = 2000  # model-wide rate's weight, tenants
    change_min_baseline: Annotated[int, msgspec.Meta(ge=0)] = 2000  # events before a series is tested
    slos: list[SLO] = msgspec.field(default_factory=list)  # SLOs: safety.slo_burn_rate per model and SLO


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
        evidence="value",
        budget=0.3,
        evidence_text="one-sided Wilson bounds of the rate, each wrong at most at the signal's share of"
        " the budget over the model's category and tenant series and a week of windows",
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
    *(
        SignalSpec(
            name=f"safety.violation_rate_{span}",
            dims=(("category",),),
            value=f"share of events whose safety.violations name the category, over the last {span}",
            family="safety",
            unit="ratio",
            range=(0.0, 1.0),
            n=f"events with safety data in the last {span}",
            interval="Wilson 95% interval",
        )
        for span in MULTI_WINDOW
    ),
    SignalSpec(
        name="safety.slo_burn_rate",
        dims=(("slo", "windows"),),
        value="violation share over the objective x 30 / period_days (1 = spending the budget exactly), "
        "the lower of the long and the short span of windows (1h/5m, 6h/30m, 1d/2h)",
        family="safety",
        unit="ratio",
        n="events with safety data over the long span",
        interval="Wilson 95% interval of the long span's share, over the objective",
        export=("slo", "windows"),
        evidence="value",
        budget=0.2,
        evidence_text="the lower (upper) of the two spans' budgeted Wilson bounds, over the objective",
    ),
    SignalSpec(
        name="safety.rate_change",
        dims=(("category",), ("category", "tenant_id"), ("action",)),
        value="Bernoulli CUSUM statistic over its decision limit (1 = a rise to change_ratio x baseline)",
        family="safety",
        unit="statistic",
        range=(0.0, 1.0),
        n="events since the statistic last left zero (this window's when it is zero)",
        interval="Wilson 95% interval of the rate over those events",
        baseline="baseline rate tested against: upper 95% bound of the exponentially weighted rate",
        export=("category", "action"),
        evidence="sequential",
        budget=0.5,
        evidence_text="Bernoulli CUSUM, decision limit ln(ARL0) for the signal's share of the budget over"
        " the model's series (Lorden)",
    ),
)


@register
class SafetyMonitor(PerModelState):
    """Windowed safety-violation rates; memory bounded by the category and tenant caps."""

    family = "safety"
    Config = SafetyConfig
    SIGNALS = SIGNALS

    def __init__(
        self, window_s: int, config: SafetyConfig | None = None, budget: dict[str, float] | None = None
    ):
        self.window_s = window_s
        self.cfg = config or SafetyConfig()
        self.budget = budgets() if budget is None else budget  # false alarms per model-week, per signal
        self._windows: dict[int, dict[str, _Window]] = {}
        self._models: dict[str, _Model] = {}
        self._dirty: set[str] = set()

    def observe(self, batch: EventColumns) -> None:
        windows = self._windows
        max_cats, max_tenants = self.cfg.max_categories, self.cfg.max_tenants
        safety, tenant, action, events = batch.safety, batch.tenant, batch.action, batch.events
        for (start, model), at in batch.groups.items():
            at = [i for i in at if safety[i] is not None]
            if not at:
                continue
            by_model = windows.get(start)
            if by_model is None:
                by_model = windows[start] = {}
            w = by_model.get(model)
            if w is None:
                w = by_model[model] = _Window()
            w.n += len(at)
            for i in reversed(at):
                if version := events[i].model.version:
                    w.version = version
                    break
            # a tenant is admitted at its first event while there is room, else counted as other
            named: dict[str, str] = {}
            for name, n in Counter(tenant[i] for i in at if tenant[i]).items():
                t = name if name in w.tenant_n or len(w.tenant_n) < max_tenants else OTHER
                named[name] = t
                w.tenant_n[t] += n
            w.actions.update(a for i in at if (a := action[i]) in ACTIONS)
            seen = w.seen
            for i in at:
                s = safety[i]
                scores = s.scores  # type: ignore[union-attr]
                if scores and not seen.issuperset(scores):
                    for cat in scores:
                        if cat not in seen and len(seen) < max_cats:
                            seen.add(cat)
                violations = s.violations  # type: ignore[union-attr]
                if violations:
                    w.any += 1
                    t = named.get(tenant[i], "")
                    for cat in set(violations):
                        if cat not in seen:
                            if len(seen) >= max_cats:
                                cat = OTHER
                            seen.add(cat)
                        w.cats[cat] += 1
                        if t:
                            w.tenant_cats[t, cat] += 1

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
        ev_lo, ev_hi = self._evidence(rows)
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
                    **(
                        dict(evidence_of="value", evidence_lower=ev_lo[i], evidence_upper=ev_hi[i])
                        if ev_lo[i] is not None
                        else {}
                    ),
                )
            )
        versions = {model: w.version for model, w in by_model.items()}
        out += self._slo_burn(ts, rows, versions)
        out += self._multi_window(ts, rows, versions)
        out += self._change(ts, rows, versions)
        return out

    def _evidence(self, rows: list[Row]) -> tuple[list[float | None], list[float | None]]:
        """Budgeted bounds of each ``safety.violation_rate`` row (None for the other rows): per
        model, the signal's share of the budget split over its series in this window."""
        lo: list[float | None] = [None] * len(rows)
        hi: list[float | None] = [None] * len(rows)
        of_model: dict[str, list[int]] = {}
        for i, (model, name, _, _, _) in enumerate(rows):
            if name == "safety.violation_rate":
                of_model.setdefault(model, []).append(i)
        share = self.budget.get("safety.violation_rate", 0.0)
        for idx in of_model.values():
            alpha = look_alpha(share, len(idx), self.window_s)
            b = rate_bounds([rows[i][3] for i in idx], [rows[i][4] for i in idx], alpha)
            for j, i in enumerate(idx):
                lo[i], hi[i] = float(b.lower[j]), float(b.upper[j])
        return lo, hi

    def _slo_burn(self, ts: datetime, rows: list[Row], versions: dict[str, str]) -> list[Signal]:
        """Each SLO's burn rate (violation share / objective) per model over each pair of spans."""
        if not self.cfg.slos:
            return []
        keep = max(1, BURN_WINDOWS[-1][1] // self.window_s)
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        for model, name, dims, k, n in rows:
            if name == "safety.any_violation_rate":
                counts[model, "any"] = (k, n)
            elif name == "safety.violation_rate" and "tenant_id" not in dims:
                counts[model, dims["category"]] = (k, n)
        pending = []
        for model in sorted({m for m, _ in counts}):
            n_model = counts.get((model, "any"), (0, 0))[1]
            for slo in self.cfg.slos:
                if slo.models and model not in slo.models:
                    continue
                hist = self._models[model].slo.get(slo.name)
                if hist is None:
                    hist = self._models[model].slo[slo.name] = deque(maxlen=keep)
                hist.append(counts.get((model, slo.category), (0, n_model)))
                recent = list(hist)
                for label, long_s, short_s in BURN_WINDOWS:
                    kl, nl = _pooled(recent, max(1, long_s // self.window_s))
                    ks, ns = _pooled(recent, max(1, short_s // self.window_s))
                    if nl and ns:
                        burn = min(kl / nl, ks / ns) / slo.objective * 30 / slo.period_days
                        pending.append((model, slo, label, burn, kl, nl, ks, ns))
        if not pending:
            return []
        _, lo, hi = wilson_interval([p[4] for p in pending], [p[5] for p in pending])
        # evidence: both spans above the threshold with confidence (each bound at half the error),
        # series = the model's SLO spans, looks = every window
        per_model = Counter(p[0] for p in pending)
        alpha = [
            look_alpha(self.budget.get("safety.slo_burn_rate", 0.0), per_model[p[0]], self.window_s) / 2
            for p in pending
        ]
        long_b = rate_bounds([p[4] for p in pending], [p[5] for p in pending], np.array(alpha))
        short_b = rate_bounds([p[6] for p in pending], [p[7] for p in pending], np.array(alpha))
        ev_lo = np.minimum(long_b.lower, short_b.lower)
        ev_hi = np.minimum(long_b.upper, short_b.upper)
        return [
            Signal(
                ts=ts,
                window=self.window_s,
                signal="safety.slo_burn_rate",
                model_id=model,
                model_version=versions[model],
                dims={"slo": slo.name, "windows": label},
                value=burn,
                n=nl,
                lower=float(lo[i]) / slo.objective * 30 / slo.period_days,
                upper=float(hi[i]) / slo.objective * 30 / slo.period_days,
                evidence_of="value",
                evidence_lower=float(ev_lo[i]) / slo.objective * 30 / slo.period_days,
                evidence_upper=float(ev_hi[i]) / slo.objective * 30 / slo.period_days,
            )
            for i, (model, slo, label, burn, _, nl, _, _) in enumerate(pending)
        ]

    def _multi_window(self, ts: datetime, rows: list[Row], versions: dict[str, str]) -> list[Signal]:
        """The model-wide category rates over the last 5 min and 1 h (from the baselines' windows)."""
        spans = [(name, s // self.window_s) for name, s in MULTI_WINDOW.items()]
        spans = [(name, w) for name, w in spans if 1 < w <= self.cfg.baseline_windows]
        wide: list[Row] = []
        for model, name, dims, _, _ in rows:
            if name != "safety.violation_rate" or "tenant_id" in dims:
                continue
            recent = list(self._models[model].baselines[(name, *dims.items())].hist)
            for span, w in spans:
                wide.append((model, f"{name}_{span}", dims, *_pooled(recent, w)))
        if not wide:
            return []
        rate, lo, hi = wilson_interval([r[3] for r in wide], [r[4] for r in wide])
        return [
            Signal(
                ts=ts,
                window=self.window_s,
                signal=name,
                model_id=model,
                model_version=versions[model],
                dims=dims,
                value=float(rate[i]),
                n=n,
                lower=float(lo[i]),
                upper=float(hi[i]),
            )
            for i, (model, name, dims, _, n) in enumerate(wide)
        ]

    def _change(self, ts: datetime, rows: list[Row], versions: dict[str, str]) -> list[Signal]:
        """Step each series' CUSUM with its window; the signals of the series it tests."""
        cfg = self.cfg
        decay = 0.5 ** (1 / cfg.change_half_life_windows)
        per_week = 7 * 86400 / self.window_s
        out: list[Signal] = []
        by_model: dict[str, list[Row]] = {}
        for r in rows:
            if r[1] in CHANGE_OF:
                by_model.setdefault(r[0], []).append(r)
        for model, mrows in by_model.items():
            changes = self._models[model].changes
            keys, prior_k, prior_n, tested = [], [], [], []
            for _, name, dims, _, _ in mrows:
                key = (name, *sorted(dims.items()))
                changes.setdefault(key, [0.0] * 5)
                keys.append(key)
                pk = pn = 0.0
                if "tenant_id" in dims:  # shrunk towards the model-wide rate of the category
                    wide = changes.get(("safety.violation_rate", ("category", dims["category"])))
                    ok = wide is not None and wide[BASE_N] >= cfg.change_min_baseline
                    if ok:
                        pk = cfg.change_prior_events * wide[BASE_K] / wide[BASE_N]  # type: ignore[index]
                        pn = cfg.change_prior_events
                else:
                    ok = changes[key][BASE_N] >= cfg.change_min_baseline
                prior_k.append(pk)
                prior_n.append(pn)
                tested.append(ok)
            h = threshold(per_week * max(sum(tested), 1) / self.budget.get("safety.rate_change", 1e-9))
            state = np.array([changes[key] for key in keys], dtype=np.float64)
            k = [r[3] for r in mrows]
            n = [r[4] for r in mrows]
            p0 = track(state, k, n, cfg.change_ratio, h, decay, tested, prior_k, prior_n)
            for key, row in zip(keys, state.tolist(), strict=True):
                changes[key] = row
            runs = [
                (i, state[i, RUN_K] or k[i], state[i, RUN_N] or n[i]) for i in range(len(mrows)) if tested[i]
            ]
            if not runs:
                continue
            _, lo, hi = wilson_interval([r[1] for r in runs], [r[2] for r in runs])
            for j, (i, _, run_n) in enumerate(runs):
                out.append(
                    Signal(
                        ts=ts,
                        window=self.window_s,
                        signal="safety.rate_change",
                        model_id=model,
                        model_version=versions[model],
                        dims=mrows[i][2],
                        value=float(state[i, S]) / h,
                        n=int(run_n),
                        lower=float(lo[j]),
                        upper=float(hi[j]),
                        baseline=float(p0[i]),
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
        st.changes = {(name, *(tuple(d) for d in dims)): list(ch) for name, dims, ch in s.changes}
        keep = max(1, BURN_WINDOWS[-1][1] // self.window_s)
        st.slo = {name: deque(map(tuple, hist), maxlen=keep) for name, hist in s.slo}
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
                [(key[0], list(key[1:]), ch) for key, ch in st.changes.items()],
                [(name, list(hist)) for name, hist in st.slo.items()],
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
            st.changes.pop(("safety.violation_rate", ("category", key[1]), ("tenant_id", key[0])), None)
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
