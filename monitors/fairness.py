"""Group fairness of outcomes per model: favourable-outcome and block rates per segment group.

Groups are every attribute of ``segments`` (gender, age_band, language, region...), every
configured attribute pair (``pairs``: intersectional groups such as ``age_band&sex`` =
``65+&female``) and, with ``tenants``, the tenant. At most ``max_groups`` groups per attribute;
later ones fold into ``other``. Signals per model and ``{attribute, group}``:

- ``fairness.favorable_rate``: the group's favourable share over the horizon (1 h), Wilson 95%.
- ``fairness.disparity``: the group's favourable share over the last ``detect_windows`` (value)
  against the best-treated group's (baseline): ``ratio`` is the demographic-parity ratio (the
  four-fifths rule reads ``ratio.upper < 0.8``: below 0.8 with confidence), ``-delta`` the
  demographic-parity difference. Its evidence bounds the ratio.
- ``fairness.favorable_change``: has the group's favourable share dropped to ``change_ratio``
  times its own recent share? A Bernoulli CUSUM per group (``detectors.cusum.track``) on each
  window's counts, against the group's exponentially weighted share (half-life
  ``change_half_life_windows``, at its lower 95% bound, frozen during a drop): a drop for one
  group that does not cross the four-fifths line. ``value`` is the statistic over its decision
  limit (1 = alarm), ``baseline`` the share tested against, ``n`` and ``lower``/``upper`` the
  events since the statistic left zero and their share.
- ``fairness.block_rate``, ``fairness.redaction_rate``, ``fairness.refusal_rate``: the group's
  share of blocked, redacted (``safety.action``) or refused (``response.finish_reason`` in
  ``refusal_reasons``) responses over the last ``detect_windows`` against the rest of the
  model's traffic with the attribute (baseline): the LLM-shaped disparities, per language,
  region or tenant.

A comparison is made only when both sides have ``min_group`` events. Its evidence (the ratio's
one-sided bounds, log-adjusted) is set at the signal's share of the model's false-alarm budget,
split over every comparison of that signal the model made in the window and the windows of a week
(``detectors.evidence``): a standing disparity on the compliant side of a rule's threshold crosses
it at most that often, however many groups and however long it is watched. ``p_value`` (kept for
analysts) is the one-sided two-proportion z-test of "no difference" in the harmful direction,
Bonferroni-adjusted over the model's comparisons in the window; rules do not page on it. Every
window's rates, sizes and reference group go to the ClickHouse table ``fairness_metrics``
(``drain_rows``). State per model: ``horizon_windows`` of per-group counts.
"""

from __future__ import annotations

from collections import Counter, deque
from datetime import UTC, datetime
from typing import Annotated

import msgspec
import numpy as np
from msgspec import UNSET

from detectors.cusum import RUN_K, RUN_N, S, threshold, track
from detectors.drift import two_proportions
from detectors.evidence import look_alpha, ratio_bounds
from detectors.rates import one_sided, wilson_interval
from monitors.base import MonitorConfig, PerModelState
from monitors.registry import budgets, register
from monitors.segments import Key, best_per_attribute, groups_of
from raiwatch.core.catalogue import SignalSpec
from raiwatch.core.columns import EventColumns
from raiwatch.core.records import Signal

STATE_VERSION = 3  # 3: the favourable-change CUSUMs (a version 2 state is read, without them)
# per group: favourable, outcome known, blocked, redacted, safety action known, refused, finish known
FAV, KNOWN, BLOCKED, REDACTED, ACTION_N, REFUSED, FINISH_N = range(7)
NC = 7
# the LLM-shaped rates: signal, numerator, denominator
POLICY = (
    ("block_rate", BLOCKED, ACTION_N),
    ("redaction_rate", REDACTED, ACTION_N),
    ("refusal_rate", REFUSED, FINISH_N),
)
OTHER = "other"
Counts = dict[Key, list[int]]  # -> NC counts


class FairnessConfig(MonitorConfig):
    """``monitors.fairness`` in the config file."""

    horizon_windows: Annotated[int, msgspec.Meta(gt=0)] = 60  # rates over the last hour
    detect_windows: Annotated[int, msgspec.Meta(gt=0)] = 10  # disparities over the last 10 minutes
    min_group: Annotated[int, msgspec.Meta(ge=1)] = 200  # events a group needs to be compared
    max_groups: Annotated[int, msgspec.Meta(ge=2)] = 50  # per attribute; more fold into "other"
    pairs: list[tuple[str, str]] = msgspec.field(default_factory=list)  # attribute pairs (intersections)
    tenants: bool = False  # tenant_id as an attribute too (tenant safety rules already page on it)
    refusal_reasons: list[str] = msgspec.field(default_factory=lambda: ["refusal", "content_filter"])
    change_ratio: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.85  # the drop the change test is tuned to
    change_half_life_windows: Annotated[int, msgspec.Meta(gt=0)] = 360  # of a group's own share
    change_min_baseline: Annotated[int, msgspec.Meta(ge=0)] = 1000  # outcomes before a group is tested


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
        value="the group's favourable share over the last detect_windows (ratio: the four-fifths ratio)",
        n="the group's events with a known outcome over the last detect_windows",
        baseline="the best-treated group's favourable share (min_group events or more); p_value:"
        " one-sided two-proportion test of no difference, Bonferroni over the model's comparisons",
        interval="Wilson 95% interval of the group's favourable share",
        evidence="ratio",
        budget=0.3,
        evidence_text="one-sided log-adjusted bounds of the ratio to the best-treated group, at the"
        " signal's share of the budget over the model's comparisons and a week of windows",
    ),
    SignalSpec(
        name="fairness.favorable_change",
        family="fairness",
        dims=(("attribute", "group"),),
        unit="statistic",
        range=(0.0, 1.0),
        value="Bernoulli CUSUM statistic over its decision limit (1 = a drop to change_ratio x the"
        " group's own share)",
        n="the group's outcomes since the statistic last left zero (this window's when it is zero)",
        baseline="the group's own share tested against: lower 95% bound of its exponentially weighted share",
        interval="Wilson 95% interval of the share over those outcomes",
        evidence="sequential",
        budget=0.3,
        evidence_text="Bernoulli CUSUM, decision limit ln(ARL0) for the signal's share of the budget over"
        " the model's groups (Lorden)",
    ),
    *(
        SignalSpec(
            name=f"fairness.{name}",
            value=f"the group's share of {what}, over the last detect_windows",
            n=f"the group's events with {among} over the last detect_windows",
            baseline="the same share of the model's other events with the attribute; p_value as for"
            " fairness.disparity",
            interval="Wilson 95% interval",
            evidence="ratio",
            budget=weight,
            evidence_text="one-sided log-adjusted bounds of the ratio to the rest, budgeted as for"
            " fairness.disparity",
            **_COMMON,
        )
        for name, what, among, weight in (
            ("block_rate", "events the policy engine blocked", "a safety action", 0.2),
            ("redaction_rate", "events the policy engine redacted", "a safety action", 0.1),
            ("refusal_rate", "responses refused (finish_reason in refusal_reasons)", "a finish_reason", 0.1),
        )
    ),
)

ROW_COLUMNS = (
    "ts", "model_id", "attribute", "group", "span_s", "n", "favorable", "rate", "lower", "upper",
    "reference_group", "reference_n", "reference_rate", "ratio", "difference", "p_value",
    "safety_n", "blocked", "block_rate", "block_lower", "block_upper", "rest_block_rate",
    "block_p_value", "redacted", "redaction_rate", "redaction_p_value", "finish_n", "refused",
    "refusal_rate", "refusal_p_value", "hour_n", "hour_rate",
)  # fmt: skip


class _Model:
    __slots__ = ("changes", "groups", "totals", "windows")

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, None]] = {}  # attribute -> admitted groups
        self.windows: deque[tuple[int, Counts]] = deque()  # per window counts
        self.totals: Counts = {}  # over the horizon
        self.changes: dict[Key, list[float]] = {}  # favourable-change CUSUM per group (detectors.cusum)


class _State(msgspec.Struct, array_like=True):
    v: int
    groups: dict[str, list[str]]
    windows: list[tuple[int, list[tuple[str, str, list[int]]]]]
    changes: list[tuple[str, str, list[float]]] = []


@register
class FairnessMonitor(PerModelState):
    """Favourable and blocked shares per segment group over a sliding horizon, with disparities."""

    family = "fairness"
    Config = FairnessConfig
    SIGNALS = SIGNALS

    def __init__(
        self, window_s: int, config: FairnessConfig | None = None, budget: dict[str, float] | None = None
    ):
        self.window_s = window_s
        self.cfg = config or FairnessConfig()
        self.budget = budgets() if budget is None else budget  # false alarms per model-week, per signal
        self._windows: dict[int, dict[str, Counter[tuple]]] = {}
        self._models: dict[str, _Model] = {}
        self._dirty: set[str] = set()
        self._rows: list[tuple] = []

    def observe(self, batch: EventColumns) -> None:
        """Count each event by what the close needs of it: segments, tenant, outcome, action,
        finish reason (one counter per window and model; groups are worked out at the close).
        The batch is counted in one pass (``Counter`` over zipped columns, in C), then each
        distinct combination goes to its window and model: far fewer than the events."""
        windows = self._windows
        tenants = batch.tenant if self.cfg.tenants else [""] * len(batch)
        seen = Counter(
            zip(
                batch.starts, batch.model, batch.segments, tenants, batch.favorable, batch.action,
                batch.finish_reason, strict=True,
            )
        )  # fmt: skip
        for (start, model, s, t, f, a, r), n in seen.items():
            if not (s or t) or (f is UNSET and a is UNSET and r is UNSET):
                continue  # no group, or nothing to count for one
            by_model = windows.get(start)
            if by_model is None:
                by_model = windows[start] = {}
            c = by_model.get(model)
            if c is None:
                c = by_model[model] = Counter()
            c[s, t, f, a, r] += n

    def _counts(self, st: _Model, seen: Counter[tuple]) -> Counts:
        """A window's counts per (attribute, group), groups past ``max_groups`` folded into other."""
        cfg = self.cfg
        refusals = frozenset(cfg.refusal_reasons)
        groups: dict[tuple, list[Key]] = {}
        counts: Counts = {}
        for (segments, tenant, fav, action, finish), v in sorted(seen.items(), key=lambda x: repr(x[0])):
            keys = groups.get((segments, tenant))
            if keys is None:
                keys = groups[segments, tenant] = self._admit(
                    st, groups_of(dict(segments), tenant, cfg.pairs, bool(tenant))
                )
            row = [0] * NC
            if fav is not UNSET:
                row[FAV], row[KNOWN] = v * fav, v
            if action is not UNSET:
                row[BLOCKED], row[REDACTED], row[ACTION_N] = (
                    v * (action == "blocked"),
                    v * (action == "redacted"),
                    v,
                )
            if finish is not UNSET:
                row[REFUSED], row[FINISH_N] = v * (finish in refusals), v
            for key in keys:
                t = counts.get(key)
                if t is None:
                    counts[key] = row.copy()
                else:
                    for i in range(NC):
                        t[i] += row[i]
        return counts

    def _admit(self, st: _Model, keys: list[Key]) -> list[Key]:
        out = []
        for attr, group in keys:
            admitted = st.groups.setdefault(attr, {})
            if group not in admitted:
                if len(admitted) < self.cfg.max_groups - 1:
                    admitted[group] = None
                else:
                    admitted[OTHER] = None
                    group = OTHER
            out.append((attr, group))
        return out

    def close(self, start: int) -> list[Signal]:
        by_model = self._windows.pop(start, {})
        out: list[Signal] = []
        ts = datetime.fromtimestamp(start + self.window_s, UTC)
        for model, c in sorted(by_model.items()):
            st = self._models.get(model)
            if st is None:
                st = self._models[model] = _Model()
            self._dirty.add(model)
            counts = self._counts(st, c)
            self._push(st, start, counts)
            out += self._signals(model, st, ts)
            out += self._change(model, st, counts, ts)
        return out

    def _change(self, model: str, st: _Model, counts: Counts, ts: datetime) -> list[Signal]:
        """Step each group's favourable-change CUSUM with this window's outcomes."""
        cfg = self.cfg
        keys = sorted(set(st.changes) | {k for k, c in counts.items() if c[KNOWN]})
        if not keys:
            return []
        state = np.array([st.changes.get(k, [0.0] * 5) for k in keys], dtype=np.float64)
        k = np.array([counts.get(key, [0] * NC)[FAV] for key in keys], dtype=np.float64)
        n = np.array([counts.get(key, [0] * NC)[KNOWN] for key in keys], dtype=np.float64)
        tested = state[:, 2] >= cfg.change_min_baseline
        per_week = 7 * 86400 / self.window_s
        share = self.budget.get("fairness.favorable_change", 1e-9)
        h = threshold(per_week * max(int(tested.sum()), 1) / share)
        decay = 0.5 ** (1 / cfg.change_half_life_windows)
        p0 = track(state, k, n, cfg.change_ratio, h, decay, tested)
        for key, row in zip(keys, state.tolist(), strict=True):
            st.changes[key] = row
        rows = np.flatnonzero(tested)
        if not len(rows):
            return []
        run_k = np.where(state[rows, RUN_N] > 0, state[rows, RUN_K], k[rows])
        run_n = np.where(state[rows, RUN_N] > 0, state[rows, RUN_N], n[rows])
        _, lo, hi = wilson_interval(run_k, run_n)
        return [
            Signal(
                ts=ts,
                window=self.window_s,
                signal="fairness.favorable_change",
                model_id=model,
                dims={"attribute": keys[i][0], "group": keys[i][1]},
                value=float(state[i, S]) / h,
                n=int(run_n[j]),
                baseline=float(p0[i]),
                lower=_num(lo[j], run_n[j]),
                upper=_num(hi[j], run_n[j]),
            )
            for j, i in enumerate(rows.tolist())
        ]

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
        hour = np.array([st.totals[k] for k in keys], dtype=np.float64)
        recent: Counts = {}
        for _, counts in list(st.windows)[-cfg.detect_windows :]:
            _add(recent, counts, 1)
        c = np.array([recent.get(k, [0] * NC) for k in keys], dtype=np.float64).reshape(len(keys), NC)
        fav, known = c[:, FAV], c[:, KNOWN]
        # every interval in one call: the favourable rates, the hour's, then each policy's
        k_all = np.concatenate([fav, hour[:, FAV], *(c[:, k] for _, k, _ in POLICY)])
        n_all = np.concatenate([known, hour[:, KNOWN], *(c[:, n] for _, _, n in POLICY)])
        rates, los, his = (np.split(x, 2 + len(POLICY)) for x in wilson_interval(k_all, n_all))
        rate, lo, hi = rates[0], los[0], his[0]
        h_rate, h_lo, h_hi = rates[1], los[1], his[1]
        attrs = [a for a, _ in keys]
        # the best-treated group of each attribute among those large enough to compare
        best = best_per_attribute(keys, rate, known, cfg.min_group)
        ref = np.array([best.get(a, -1) for a in attrs])
        pairs = np.flatnonzero((ref >= 0) & (ref != np.arange(len(keys))) & (known >= cfg.min_group))
        # block, redaction and refusal shares against the rest of the model's events with the attribute
        per_attr = {a: c[[i for i, x in enumerate(attrs) if x == a]].sum(axis=0) for a in set(attrs)}
        rest = np.array([per_attr[a] for a in attrs]) - c
        policy = []
        for j, (name, k, n) in enumerate(POLICY):
            prate, plo, phi = rates[2 + j], los[2 + j], his[2 + j]
            rrate = np.divide(rest[:, k], rest[:, n], out=np.full(len(keys), np.nan), where=rest[:, n] > 0)
            rows = np.flatnonzero((c[:, n] >= cfg.min_group) & (rest[:, n] >= cfg.min_group))
            policy.append((name, k, n, prate, plo, phi, rrate, rows))
        tests = max(1, len(pairs) + sum(len(p[-1]) for p in policy))
        p_fav = np.full(len(keys), np.nan)
        ev_fav = (np.full(len(keys), np.nan), np.full(len(keys), np.nan))
        if len(pairs):
            r = ref[pairs]
            two = two_proportions(fav[r], known[r], fav[pairs], known[pairs]).p_value
            p_fav[pairs] = np.minimum(1.0, one_sided(two, rate[pairs] < rate[r]) * tests)
            alpha = look_alpha(self.budget.get("fairness.disparity", 0.0), len(pairs), self.window_s)
            b = ratio_bounds(fav[pairs], known[pairs], fav[r], known[r], alpha)
            ev_fav[0][pairs], ev_fav[1][pairs] = b.lower, b.upper
        p_policy, ev_policy = [], []
        for name, k, n, prate, _, _, rrate, rows in policy:
            pp = np.full(len(keys), np.nan)
            ev = (np.full(len(keys), np.nan), np.full(len(keys), np.nan))
            if len(rows):
                two = two_proportions(rest[rows, k], rest[rows, n], c[rows, k], c[rows, n]).p_value
                pp[rows] = np.minimum(1.0, one_sided(two, prate[rows] > rrate[rows]) * tests)
                alpha = look_alpha(self.budget.get(f"fairness.{name}", 0.0), len(rows), self.window_s)
                b = ratio_bounds(c[rows, k], c[rows, n], rest[rows, k], rest[rows, n], alpha)
                ev[0][rows], ev[1][rows] = b.lower, b.upper
            p_policy.append(pp)
            ev_policy.append(ev)
        out: list[Signal] = []
        span = cfg.detect_windows * self.window_s
        for i, (attr, group) in enumerate(keys):
            dims = {"attribute": attr, "group": group}
            common = dict(ts=ts, window=self.window_s, model_id=model, dims=dims)
            r = int(ref[i])
            if not np.isnan(p_fav[i]):
                out.append(Signal(signal="fairness.disparity", value=float(rate[i]), n=int(known[i]),
                                  baseline=float(rate[r]), lower=float(lo[i]), upper=float(hi[i]),
                                  p_value=float(p_fav[i]), **_evidence(ev_fav, i), **common))  # fmt: skip
            if hour[i, KNOWN]:
                out.append(Signal(signal="fairness.favorable_rate", value=float(h_rate[i]),
                                  n=int(hour[i, KNOWN]), lower=float(h_lo[i]), upper=float(h_hi[i]),
                                  **common))  # fmt: skip
            for (name, _, n, prate, plo, phi, rrate, _), pp, ev in zip(
                policy, p_policy, ev_policy, strict=True
            ):
                if not np.isnan(pp[i]):
                    out.append(Signal(signal=f"fairness.{name}", value=float(prate[i]), n=int(c[i, n]),
                                      baseline=float(rrate[i]), lower=float(plo[i]), upper=float(phi[i]),
                                      p_value=float(pp[i]), **_evidence(ev, i), **common))  # fmt: skip
            has_ref = r >= 0 and known[r] > 0
            _, _, _, brate, blo, bhi, brest, _ = policy[0]
            p_block = p_policy[0]
            self._rows.append((
                ts, model, attr, group, span, int(known[i]), int(fav[i]), _num(rate[i], known[i]),
                _num(lo[i], known[i]), _num(hi[i], known[i]),
                keys[r][1] if has_ref else "", int(known[r]) if has_ref else 0,
                float(rate[r]) if has_ref else None,
                float(rate[i] / rate[r]) if has_ref and known[i] and rate[r] else None,
                float(rate[r] - rate[i]) if has_ref and known[i] else None,
                None if np.isnan(p_fav[i]) else float(p_fav[i]),
                int(c[i, ACTION_N]), int(c[i, BLOCKED]), _num(brate[i], c[i, ACTION_N]),
                _num(blo[i], c[i, ACTION_N]), _num(bhi[i], c[i, ACTION_N]), _num(brest[i], rest[i, ACTION_N]),
                None if np.isnan(p_block[i]) else float(p_block[i]),
                int(c[i, REDACTED]), _num(policy[1][3][i], c[i, ACTION_N]),
                None if np.isnan(p_policy[1][i]) else float(p_policy[1][i]),
                int(c[i, FINISH_N]), int(c[i, REFUSED]), _num(policy[2][3][i], c[i, FINISH_N]),
                None if np.isnan(p_policy[2][i]) else float(p_policy[2][i]),
                int(hour[i, KNOWN]), _num(h_rate[i], hour[i, KNOWN]),
            ))  # fmt: skip
        return out

    def drain_rows(self) -> list[tuple[str, tuple[str, ...], list[tuple]]]:
        """The ``fairness_metrics`` rows the closes since the last call produced."""
        rows, self._rows = self._rows, []
        return [("fairness_metrics", ROW_COLUMNS, rows)] if rows else []

    # -- lifecycle -----------------------------------------------------------------------------

    @staticmethod
    def _encode(st: _Model) -> bytes:
        windows = [(s, [(a, g, c) for (a, g), c in counts.items()]) for s, counts in st.windows]
        groups = {a: list(gs) for a, gs in st.groups.items()}
        changes = [(a, g, ch) for (a, g), ch in sorted(st.changes.items())]
        return msgspec.msgpack.encode(_State(STATE_VERSION, groups, windows, changes))

    def restore(self, model: str, state: bytes) -> None:
        s = msgspec.msgpack.decode(state, type=_State)
        if s.v not in (2, STATE_VERSION):  # 2: before the change test; its CUSUMs start afresh
            return
        st = _Model()
        st.groups = {a: dict.fromkeys(gs) for a, gs in s.groups.items()}
        for start, rows in s.windows:
            self._push(st, start, {(a, g): list(c) for a, g, c in rows})
        st.changes = {(a, g): list(ch) for a, g, ch in s.changes}
        self._models[model] = st


def _add(totals: Counts, counts: Counts, sign: int) -> None:
    for key, c in counts.items():
        t = totals.setdefault(key, [0] * NC)
        for i in range(NC):
            t[i] += sign * c[i]
        if not any(t):
            del totals[key]


def _evidence(ev: tuple[np.ndarray, np.ndarray], i: int) -> dict:
    """The ratio's evidence bounds of row ``i`` as Signal fields (none where not computed)."""
    lo, hi = ev[0][i], ev[1][i]
    if np.isnan(lo) and np.isnan(hi):
        return {}
    return {"evidence_of": "ratio", "evidence_lower": _nan_none(lo), "evidence_upper": _nan_none(hi)}


def _nan_none(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _num(x: float, n: float) -> float | None:
    """``x`` as a float, or None when it was measured on nothing."""
    return float(x) if n and not np.isnan(x) else None
