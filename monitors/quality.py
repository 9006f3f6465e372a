"""Label-based model quality and equal-opportunity fairness, from delayed ground truth.

Labels (feedback-event.v1) are joined to their inferences by event_id (``monitors/labeljoin.py``:
bounded, durable, every outcome counted). A joined label is counted in the window it *arrived*
in, so signals move when the truth becomes known. "Positive" is the favourable outcome. Signals
per model:

- ``quality.accuracy``: the share of labels the prediction got right over the last
  ``detect_windows`` (value) against the rest of the ``horizon_windows`` (baseline), Wilson 95%,
  one-sided two-proportion ``p_value`` for "worse than before". Right = the same label, or the
  same favourable/unfavourable outcome when the label gave no class.
- ``quality.accuracy_change``: the sequential test ``ModelAccuracyDrop`` reads: Page's Bernoulli
  CUSUM of wrong predictions at ``change_drop`` more than the model's own error rate (weighted,
  at its upper 95% bound, frozen during a drop), over its limit; each label counts as it arrives.
- ``quality.precision`` / ``quality.recall``: of the favourable predictions, the truly
  favourable share; of the truly favourable, the share predicted so; same windows and test.
- ``quality.calibration_error``: expected calibration error over the horizon (10 equal-width
  bins of the confidence ``max(score, 1 - score)`` against the share right); no interval.
- ``quality.true_positive_rate`` / ``quality.false_positive_rate`` {attribute, group}: per group
  (as ``monitors.fairness``) over the last ``group_windows``, against the best group's
  (highest TPR, lowest FPR) with ``min_labels`` labels on both sides; ``delta`` is the
  equal-opportunity (TPR) or false-positive-rate gap, ``p_value`` one-sided and Bonferroni over
  the model's group comparisons in the window.
- ``quality.labels`` {result}: labels joined in the window, and the model's inferences that
  expired or were evicted unlabelled (the worker-wide counts of every result are the metric
  ``raiwatch_labels_total``).

``quality.accuracy``, ``quality.recall`` and ``quality.true_positive_rate`` carry evidence: the
difference against their baseline (``delta``) bounded one-sidedly (Newcombe's hybrid score) at
their share of the model's false-alarm budget, split over the model's comparisons of that signal
and a week of windows (``detectors.evidence``): ``delta.upper < -0.05`` reads "accuracy fell by more
than 5 points, with confidence".

Every window's figures per model and per group go to the ClickHouse table ``quality_metrics``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Annotated

import msgspec
import numpy as np
from msgspec import UNSET

from detectors.cusum import BASE_N, RUN_K, RUN_N, S, threshold, track
from detectors.drift import two_proportions
from detectors.evidence import diff_bounds, look_alpha
from detectors.rates import one_sided, wilson_interval
from monitors.base import MonitorConfig, drop_models
from monitors.labeljoin import (
    EARLY_KEY,
    NO,
    SEP,
    Chunk,
    JoinLog,
    Label,
    Pending,
    decode_chunk,
    encode_chunk,
    id_hash,
    id_hashes,
)
from monitors.registry import budgets, register
from monitors.segments import Key, best_per_attribute, groups_of
from raiwatch.core import metrics
from raiwatch.core.catalogue import SignalSpec
from raiwatch.core.columns import EventColumns
from raiwatch.core.records import FeedbackEvent, Signal

STATE_VERSION = 2  # 2: the sequential accuracy test (a version 1 head is read; the test starts afresh)
MODEL: Key = ("", "")  # the model-wide counts
BINS = 10
# counts per key: labels, right/wrong known, right, truly favourable, of them predicted so,
# truly unfavourable, of them predicted favourable
N, KNOWN, RIGHT, POS, TP, NEG, FP = range(7)
MAX_LABELS = 256  # distinct predicted labels per model; more are unknown
MAX_COMBOS = 4096  # distinct group combinations per model; more count model-wide only


class QualityConfig(MonitorConfig):
    """``monitors.quality`` in the config file."""

    retention_s: Annotated[int, msgspec.Meta(gt=0)] = 86_400  # how long an inference waits for its label
    max_pending: Annotated[int, msgspec.Meta(gt=0)] = 2_000_000  # inferences waiting, all models
    early_s: Annotated[int, msgspec.Meta(ge=0)] = 900  # how long a label waits for its inference
    max_early: Annotated[int, msgspec.Meta(ge=0)] = 50_000
    detect_windows: Annotated[int, msgspec.Meta(gt=0)] = 30  # accuracy, precision, recall
    group_windows: Annotated[int, msgspec.Meta(gt=0)] = 60  # TPR / FPR per group
    horizon_windows: Annotated[int, msgspec.Meta(gt=0)] = 1440  # baseline and calibration
    min_labels: Annotated[int, msgspec.Meta(ge=1)] = 100  # labels each side of a comparison needs
    # the sequential accuracy test (quality.accuracy_change): a drop of this many points below the
    # model's exponentially weighted accuracy
    change_drop: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.05
    change_half_life_windows: Annotated[float, msgspec.Meta(gt=0)] = 1440  # of the baseline error rate
    change_min_baseline: Annotated[int, msgspec.Meta(ge=1)] = 300  # labels its baseline needs
    pairs: list[tuple[str, str]] = msgspec.field(default_factory=list)  # as monitors.fairness.pairs
    tenants: bool = False  # as monitors.fairness.tenants


_GROUP = (("attribute", "group"),)
_BEFORE = "the same share over the rest of horizon_windows; p_value: one-sided test for a drop"
_EVIDENCE = "one-sided Newcombe bounds of delta, at the signal's share of the budget over a week of windows"
SIGNALS = (
    SignalSpec(
        name="quality.accuracy",
        family="quality",
        dims=((),),
        unit="ratio",
        range=(0.0, 1.0),
        value="share of labels the prediction got right (labels joined in the last detect_windows)",
        n="labels with a known right/wrong",
        interval="Wilson 95% interval",
        baseline=_BEFORE,
        evidence="delta",
        budget=0.4,
        evidence_text=_EVIDENCE,
    ),
    SignalSpec(
        name="quality.accuracy_change",
        family="quality",
        dims=((),),
        unit="statistic",
        range=(0.0, 1.0),
        value="Bernoulli CUSUM statistic of wrong predictions over its decision limit (1 = accuracy"
        " change_drop below the model's own, exponentially weighted)",
        n="labels since the statistic last left zero (this window's when it is zero)",
        baseline="the accuracy tested against: lower 95% bound of the model's weighted share right",
        interval="Wilson 95% interval of the share right over those labels",
        evidence="sequential",
        budget=0.4,
        evidence_text="Bernoulli CUSUM, decision limit ln(ARL0) for the signal's share of the budget"
        " (Lorden)",
    ),
    SignalSpec(
        name="quality.precision",
        family="quality",
        dims=((),),
        unit="ratio",
        range=(0.0, 1.0),
        value="truly favourable share of favourable predictions (labels of the last detect_windows)",
        n="favourable predictions labelled",
        interval="Wilson 95% interval",
        baseline=_BEFORE,
    ),
    SignalSpec(
        name="quality.recall",
        family="quality",
        dims=((),),
        unit="ratio",
        range=(0.0, 1.0),
        value="share of truly favourable cases predicted favourable (labels of the last detect_windows)",
        n="truly favourable labels",
        interval="Wilson 95% interval",
        baseline=_BEFORE,
        evidence="delta",
        budget=0.2,
        evidence_text=_EVIDENCE,
    ),
    SignalSpec(
        name="quality.calibration_error",
        family="quality",
        dims=((),),
        unit="ratio",
        range=(0.0, 1.0),
        value="expected calibration error of max(score, 1 - score) over horizon_windows (10 bins)",
        n="labels of scored predictions",
    ),
    SignalSpec(
        name="quality.true_positive_rate",
        family="quality",
        dims=_GROUP,
        unit="ratio",
        range=(0.0, 1.0),
        value="the group's truly favourable cases predicted favourable, last group_windows",
        n="the group's truly favourable labels",
        interval="Wilson 95% interval",
        baseline="the best group's rate: delta is the equal-opportunity gap; p_value one-sided, Bonferroni",
        evidence="delta",
        budget=0.4,
        evidence_text=_EVIDENCE + " (over the model's group comparisons)",
    ),
    SignalSpec(
        name="quality.false_positive_rate",
        family="quality",
        dims=_GROUP,
        unit="ratio",
        range=(0.0, 1.0),
        value="the group's truly unfavourable cases predicted favourable, last group_windows",
        n="the group's truly unfavourable labels",
        interval="Wilson 95% interval",
        baseline="the lowest group rate: delta is the false-positive-rate gap; p_value as for the TPR",
    ),
    SignalSpec(
        name="quality.labels",
        family="quality",
        dims=(("result",),),
        unit="count",
        value="labels joined in the window (result joined), or inferences that expired or were evicted"
        " unlabelled",
        n="the same count",
    ),
)

ROW_COLUMNS = (
    "ts", "model_id", "attribute", "group", "span_s", "labels", "known", "correct", "accuracy",
    "positives", "true_positives", "negatives", "false_positives", "precision", "recall",
    "false_positive_rate", "calibration_error", "pending",
)  # fmt: skip

Counts = dict[Key, np.ndarray]


class _Window(msgspec.Struct, array_like=True):
    """What one close joined for a model: counts per group key, and the calibration bins."""

    window: int
    keys: list[tuple[str, str]]
    counts: bytes  # int64 (len(keys), 7)
    ece: bytes  # float64 (3, BINS): labels, summed confidence, right


class _Head(msgspec.Struct, array_like=True):
    v: int
    last: int  # the latest window closed
    labels: list[str]
    combos: list[list[tuple[str, str]]]
    change: list[float] = []  # the sequential accuracy test (detectors.cusum.track's columns)


class _Model:
    __slots__ = (
        "change",
        "combo_ix",
        "combos",
        "dirty",
        "ece",
        "label_ix",
        "labels",
        "last",
        "seen",
        "total",
        "windows",
    )

    def __init__(self) -> None:
        self.labels: list[str] = []
        self.label_ix: dict[str, int] = {}
        self.combos: list[tuple[Key, ...]] = []
        self.combo_ix: dict[tuple[Key, ...], int] = {}
        self.seen: dict[tuple, int] = {}  # (segments, tenant) as sent -> combination id (a cache)
        self.windows: deque[tuple[int, Counts, np.ndarray]] = deque()  # label windows, oldest first
        self.total: Counts = {}  # the MODEL counts over every window held
        self.ece = np.zeros((3, BINS))  # the calibration bins over every window held
        self.last = -1
        self.change = [0.0] * 5  # the sequential accuracy test (detectors.cusum.track's columns)
        self.dirty: dict[str, bytes] = {}  # checkpoint keys written at the next snapshot

    def label(self, name: str | None) -> int:
        if name is None:
            return NO
        i = self.label_ix.get(name)
        if i is None and len(self.labels) < MAX_LABELS:
            i = self.label_ix[name] = len(self.labels)
            self.labels.append(name)
        return NO if i is None else i

    def combo(self, keys: list[Key]) -> int:
        t = tuple(keys)
        i = self.combo_ix.get(t)
        if i is None and len(self.combos) < MAX_COMBOS:
            i = self.combo_ix[t] = len(self.combos)
            self.combos.append(t)
        return NO if i is None else i


@register
class QualityMonitor:
    """Delayed labels joined to inferences: quality per model, error rates per group."""

    family = "quality"
    Config = QualityConfig
    SIGNALS = SIGNALS
    shared_keys = (EARLY_KEY,)  # checkpoint keys of no model, restored on a worker's first restore

    def __init__(
        self, window_s: int, config: QualityConfig | None = None, budget: dict[str, float] | None = None
    ):
        self.window_s = window_s
        self.cfg = config or QualityConfig()
        self.budget = budgets() if budget is None else budget  # false alarms per model-week, per signal
        self._retention_w = max(1, math.ceil(self.cfg.retention_s / window_s))
        self._open: dict[int, dict[str, list[tuple[int, int, int, int, float]]]] = {}
        self._models: dict[str, _Model] = {}
        self._pending = Pending()
        self._inbox: list[Label] = []
        self._early: dict[int, Label] = {}
        self._early_dirty = False
        self._joins: dict[str, list[tuple[int, int]]] = {}  # model -> (event window, hash) this close
        self._joined: dict[str, int] = {}  # model -> labels joined this close
        self._lost: dict[str, dict[str, int]] = {}  # model -> expired / evicted this close
        self._rows: list[tuple] = []
        self._restoring: dict[str, dict[str, list[bytes]]] = {}  # model -> rows read before its head

    # -- input ---------------------------------------------------------------------------------

    def observe(self, batch: EventColumns) -> None:
        """Each event with a prediction or an outcome waits in its window for its label; a model's
        events are read in the order they came (its labels and groups are numbered so)."""
        cfg, opened = self.cfg, self._open
        events, starts, fav, segments, tenants, preds = (
            batch.events, batch.starts, batch.favorable, batch.segments, batch.tenant, batch.prediction
        )  # fmt: skip
        nan = math.nan
        for model, at in batch.by_model.items():
            keep = [i for i in at if preds[i] is not None or fav[i] is not UNSET]
            if not keep:
                continue
            st = self._model(model)
            seen, label = st.seen, st.label
            hashes = id_hashes([events[i].event_id for i in keep])
            rows_of: dict[int, list] = {}  # window start -> this model's rows in it
            for i, h in zip(keep, hashes, strict=True):
                start = starts[i]
                rows = rows_of.get(start)
                if rows is None:
                    rows = rows_of[start] = opened.setdefault(start, {}).setdefault(model, [])
                seg = (segments[i], tenants[i])
                gid = seen.get(seg)
                if gid is None:
                    gid = st.combo(groups_of(events[i].segments or None, seg[1], cfg.pairs, cfg.tenants))
                    if len(seen) < MAX_COMBOS:
                        seen[seg] = gid
                pred = preds[i]
                if pred is not None:
                    lab, score = label(pred.label), pred.score
                    if score is None:
                        score = nan
                else:
                    lab, score = NO, nan
                f = fav[i]
                rows.append((h, gid, NO if f is UNSET else int(f), lab, score))

    def observe_feedback(self, events: Sequence[FeedbackEvent]) -> None:
        """Labels wait in an inbox; the next window close joins them (and checkpoints the result)."""
        for fb in events:
            if fb.label is None and fb.favorable is None:
                continue  # a regression value only: nothing to join for quality
            self._inbox.append(Label(id_hash(fb.event_id), -1, fb.label, fb.favorable))

    # -- closing a window ----------------------------------------------------------------------

    def close(self, start: int) -> list[Signal]:
        if self._restoring:
            self._settle()
        self._joins, self._joined, self._lost = {}, {}, {}
        acc: dict[str, tuple[Counts, np.ndarray]] = {}
        self._join_inbox(start, acc)
        for model, rows in sorted(self._open.pop(start, {}).items()):
            c = Chunk.build(start, rows)
            self._pending.add(model, c)
            st = self._models[model]
            st.last = max(st.last, start)
            st.dirty[f"{model}{SEP}e{self._slot(start, self._retention_w)}"] = encode_chunk(c)
            if self._early:
                self._join_early(model, c, acc)
        self._expire(start)
        out: list[Signal] = []
        ts = datetime.fromtimestamp(start + self.window_s, UTC)
        for model in sorted(
            set(acc) | set(self._lost) | {m for m in self._models if self._models[m].windows}
        ):
            st = self._models[model]
            counts, ece = acc.get(model, ({}, np.zeros((3, BINS))))
            if counts or self._joins.get(model):
                _push(st, (start, counts, ece))
                st.dirty[f"{model}{SEP}a{self._slot(start, self.cfg.horizon_windows)}"] = _encode_window(
                    start, counts, ece
                )
                log = JoinLog(start, self._joins.get(model, []))
                st.dirty[f"{model}{SEP}j{self._slot(start, self._retention_w)}"] = msgspec.msgpack.encode(log)
            self._trim(st, start)
            st.last = start
            st.dirty[model] = b""  # the head, encoded at snapshot time
            out += self._signals(model, st, ts, counts.get(MODEL))
        metrics.LABEL_JOIN_PENDING.set(self._pending.size)
        return out

    def _model(self, model: str) -> _Model:
        st = self._models.get(model)
        if st is None:
            st = self._models[model] = _Model()
        return st

    def _slot(self, start: int, slots: int) -> int:
        return (start // self.window_s) % slots

    def _join_inbox(self, start: int, acc: dict[str, tuple[Counts, np.ndarray]]) -> None:
        inbox, self._inbox = self._inbox, []
        if not inbox:
            return
        hashes = np.fromiter((lb.h for lb in inbox), dtype=np.uint64, count=len(inbox))
        found = np.zeros(len(inbox), dtype=np.bool_)
        for j, model, c, row in self._pending.lookup(hashes):
            found[j] = True
            self._join(model, c, row, inbox[j], acc)  # a second label of one id: a duplicate there
        for j in np.flatnonzero(~found):
            lb = inbox[j]
            if lb.h in self._early:
                metrics.LABELS.labels("duplicate").inc()
                continue
            if len(self._early) >= self.cfg.max_early:
                metrics.LABELS.labels("unmatched").inc()
                continue
            lb.window = start
            self._early[lb.h] = lb
            self._early_dirty = True
            metrics.LABELS.labels("early").inc()

    def _join_early(self, model: str, c: Chunk, acc: dict[str, tuple[Counts, np.ndarray]]) -> None:
        for i, h in enumerate(c.h.tolist()):
            lb = self._early.pop(h, None)
            if lb is not None:
                self._early_dirty = True
                self._join(model, c, i, lb, acc)

    def _join(
        self, model: str, c: Chunk, i: int, lb: Label, acc: dict[str, tuple[Counts, np.ndarray]]
    ) -> None:
        if c.joined[i]:
            metrics.LABELS.labels("duplicate").inc()
            return
        self._pending.mark(model, c, i)
        metrics.LABELS.labels("joined").inc()
        self._joins.setdefault(model, []).append((c.window, int(c.h[i])))
        self._joined[model] = self._joined.get(model, 0) + 1
        st = self._models[model]
        counts, ece = acc.get(model) or acc.setdefault(model, ({}, np.zeros((3, BINS))))
        row = np.zeros(7, dtype=np.int64)
        row[N] = 1
        pred_fav, pred_lab = int(c.fav[i]), int(c.lab[i])
        right = None
        if lb.label is not None and pred_lab != NO:
            right = st.labels[pred_lab] == lb.label
        elif lb.favorable is not None and pred_fav != NO:
            right = bool(pred_fav) == lb.favorable
        if right is not None:
            row[KNOWN], row[RIGHT] = 1, right
            s = float(c.score[i])
            if not math.isnan(s):
                conf = max(s, 1 - s)
                b = min(int(conf * BINS), BINS - 1)
                ece[:, b] += (1, conf, right)
        if lb.favorable is not None and pred_fav != NO:
            if lb.favorable:
                row[POS], row[TP] = 1, pred_fav
            else:
                row[NEG], row[FP] = 1, pred_fav
        keys = [MODEL, *(st.combos[int(c.gid[i])] if c.gid[i] != NO else ())]
        for k in keys:
            t = counts.get(k)
            if t is None:
                counts[k] = row.copy()
            else:
                t += row

    def _expire(self, start: int) -> None:
        cfg = self.cfg
        oldest_kept = start - (self._retention_w - 1) * self.window_s
        for model, chunks in list(self._pending.by_model.items()):
            for w in [w for w in chunks if w < oldest_kept]:
                self._lose(model, self._pending.drop(model, w), "expired")
        while self._pending.size > cfg.max_pending:
            oldest = self._pending.oldest()
            if oldest is None:
                break
            self._lose(oldest[0], self._pending.drop(*oldest), "evicted")
        early_cut = start - cfg.early_s
        stale = [h for h, lb in self._early.items() if lb.window < early_cut]
        for h in stale:
            del self._early[h]
        if stale:
            self._early_dirty = True
            metrics.LABELS.labels("unmatched").inc(len(stale))

    def _lose(self, model: str, c: Chunk, why: str) -> None:
        n = int((~c.joined).sum())
        metrics.LABELS.labels(why).inc(n)
        lost = self._lost.setdefault(model, {})
        lost[why] = lost.get(why, 0) + n

    def _trim(self, st: _Model, start: int) -> None:
        cut = start - (self.cfg.horizon_windows - 1) * self.window_s
        while st.windows and st.windows[0][0] < cut:
            _, counts, ece = st.windows.popleft()
            if MODEL in counts:
                st.total[MODEL] -= counts[MODEL]
            st.ece -= ece

    # -- signals -------------------------------------------------------------------------------

    def _signals(self, model: str, st: _Model, ts: datetime, joined_now: np.ndarray | None) -> list[Signal]:
        cfg, w = self.cfg, self.window_s
        end = st.last + w
        recent = _sum(st.windows, end - cfg.detect_windows * w)
        grouped = _sum(st.windows, end - cfg.group_windows * w)
        ece_bins = st.ece
        common = dict(ts=ts, window=w, model_id=model)
        out: list[Signal] = self._change(st, joined_now, common)
        joined = self._joined.get(model, 0)
        if joined:
            out.append(
                Signal(signal="quality.labels", value=joined, n=joined, dims={"result": "joined"}, **common)
            )
        for why, n in sorted(self._lost.get(model, {}).items()):
            if n:
                out.append(Signal(signal="quality.labels", value=n, n=n, dims={"result": why}, **common))
        r = recent.get(MODEL)
        if r is None:
            self._rows.append(
                _row(ts, model, "", "", cfg.detect_windows * w, None, None, self._pending_of(model))
            )
            return out
        before = st.total[MODEL] - r
        for name, k, n in (("accuracy", RIGHT, KNOWN), ("precision", TP, None), ("recall", TP, POS)):
            kk, nn = (r[k], r[n]) if n is not None else (r[TP], r[TP] + r[FP])
            bk, bn = (before[k], before[n]) if n is not None else (before[TP], before[TP] + before[FP])
            if not nn:
                continue
            rate, lo, hi = (float(x[0]) for x in wilson_interval([kk], [nn]))
            base = p = None
            evidence: dict = {}
            if bn >= cfg.min_labels:
                base = bk / bn
                two = float(two_proportions([bk], [bn], [kk], [nn]).p_value[0])
                p = float(one_sided(two, rate < base))
                evidence = self._evidence(f"quality.{name}", [kk], [nn], [bk], [bn])[0]
            out.append(
                Signal(
                    signal=f"quality.{name}",
                    value=rate,
                    n=int(nn),
                    baseline=base,
                    lower=lo,
                    upper=hi,
                    p_value=p,
                    **evidence,
                    **common,
                )
            )
        ece = _ece(ece_bins)
        if ece is not None:
            out.append(
                Signal(signal="quality.calibration_error", value=ece, n=int(ece_bins[0].sum()), **common)
            )
        self._rows.append(_row(ts, model, "", "", cfg.detect_windows * w, r, ece, self._pending_of(model)))
        out += self._group_rates(model, grouped, common)
        return out

    def _change(self, st: _Model, window: np.ndarray | None, common: dict) -> list[Signal]:
        """Step the sequential accuracy test with this window's labels: Page's CUSUM of wrong
        predictions, rate ``p1 = p0 + change_drop`` against ``p0``, the upper 95% bound of the
        model's exponentially weighted error rate (``detectors.cusum.track``: an uncertain baseline
        errs towards quiet, and it is frozen while the statistic is above half its limit), capped at
        its limit ``h = ln(ARL0)`` (Lorden: at most the signal's share of the budget a week). It
        counts every label as it arrives, where the window test waits for its window to fill."""
        cfg = self.cfg
        k = float(window[KNOWN] - window[RIGHT]) if window is not None else 0.0
        n = float(window[KNOWN]) if window is not None else 0.0
        state = np.array([st.change], dtype=np.float64)
        tested = state[:, BASE_N] >= cfg.change_min_baseline
        h = threshold(7 * 86400 / self.window_s / self.budget.get("quality.accuracy_change", 1e-9))
        decay = 0.5 ** (1 / cfg.change_half_life_windows)
        p0 = track(state, [k], [n], 1.0, h, decay, tested, shift=cfg.change_drop)
        st.change = state[0].tolist()
        if not tested[0] or not n:
            return []
        run_n = state[0, RUN_N] or n
        run_wrong = state[0, RUN_K] if state[0, RUN_N] else k
        _, lo, hi = wilson_interval([run_n - run_wrong], [run_n])
        return [
            Signal(
                signal="quality.accuracy_change",
                value=float(state[0, S]) / h,
                n=int(run_n),
                baseline=1 - float(p0[0]),
                lower=float(lo[0]),
                upper=float(hi[0]),
                **common,
            )
        ]

    def _group_rates(self, model: str, grouped: Counts, common: dict) -> list[Signal]:
        cfg, w = self.cfg, self.window_s
        keys = sorted(k for k in grouped if k != MODEL)
        if not keys:
            return []
        c = np.array([grouped[k] for k in keys], dtype=np.float64)
        out: list[Signal] = []
        tests: list[tuple[str, int, int, float]] = []  # signal, group row, reference row, one-sided p
        for name, k, n, best_is_high in (
            ("true_positive_rate", TP, POS, True),
            ("false_positive_rate", FP, NEG, False),
        ):
            rate = np.divide(c[:, k], c[:, n], out=np.full(len(keys), np.nan), where=c[:, n] > 0)
            best = best_per_attribute(keys, rate, c[:, n], cfg.min_labels, highest=best_is_high)
            for i, (a, _) in enumerate(keys):
                b = best.get(a)
                if b is not None and b != i and c[i, n] >= cfg.min_labels:
                    two = float(two_proportions([c[b, k]], [c[b, n]], [c[i, k]], [c[i, n]]).p_value[0])
                    worse = rate[i] < rate[b] if best_is_high else rate[i] > rate[b]
                    tests.append((name, i, b, float(one_sided(two, worse))))
        m = max(1, len(tests))
        tpr = [(i, b) for name, i, b, _ in tests if name == "true_positive_rate"]
        rows, refs = [i for i, _ in tpr], [b for _, b in tpr]
        signal = "quality.true_positive_rate"
        found = self._evidence(signal, c[rows, TP], c[rows, POS], c[refs, TP], c[refs, POS])
        tpr_evidence = dict(zip(tpr, found, strict=True))
        for name, i, b, p in tests:
            k, n = (TP, POS) if name == "true_positive_rate" else (FP, NEG)
            rate, lo, hi = (float(x[0]) for x in wilson_interval([c[i, k]], [c[i, n]]))
            attr, group = keys[i]
            out.append(
                Signal(
                    signal=f"quality.{name}",
                    value=rate,
                    n=int(c[i, n]),
                    baseline=float(c[b, k] / c[b, n]),
                    lower=lo,
                    upper=hi,
                    p_value=min(1.0, p * m),
                    dims={"attribute": attr, "group": group},
                    **(tpr_evidence.get((i, b), {}) if name == "true_positive_rate" else {}),
                    **common,
                )
            )
        for i, (attr, group) in enumerate(keys):
            self._rows.append(_row(common["ts"], model, attr, group, cfg.group_windows * w, c[i], None, None))
        return out

    def _evidence(self, signal: str, k, n, k0, n0) -> list[dict]:
        """Budgeted bounds of ``k/n - k0/n0`` per comparison, as Signal fields (none without a share)."""
        share = self.budget.get(signal, 0.0)
        if not len(k) or share <= 0:
            return [{} for _ in k]
        b = diff_bounds(k, n, k0, n0, look_alpha(share, len(k), self.window_s))
        return [
            {"evidence_of": "delta", "evidence_lower": float(lo), "evidence_upper": float(hi)}
            for lo, hi in zip(b.lower, b.upper, strict=True)
        ]

    def _pending_of(self, model: str) -> int:
        return self._pending.waiting.get(model, 0)

    def drain_rows(self) -> list[tuple[str, tuple[str, ...], list[tuple]]]:
        """The ``quality_metrics`` rows the closes since the last call produced."""
        rows, self._rows = self._rows, []
        return [("quality_metrics", ROW_COLUMNS, rows)] if rows else []

    def state_bytes(self) -> int:
        """Bytes of arrays the join holds (for the memory benchmark)."""
        return self._pending.nbytes()

    # -- lifecycle -----------------------------------------------------------------------------

    def forget(self, models: Collection[str]) -> None:
        drop_models(self._open, models)
        for m in models:
            self._models.pop(m, None)
            self._pending.forget(m)

    def snapshot_dirty(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for model, st in self._models.items():
            if st.dirty:
                head = _Head(STATE_VERSION, st.last, st.labels, [list(c) for c in st.combos], st.change)
                st.dirty[model] = msgspec.msgpack.encode(head)
                out.update(st.dirty)
                st.dirty = {}
        if self._early_dirty:
            out[EARLY_KEY] = msgspec.msgpack.encode(list(self._early.values()))
            self._early_dirty = False
        return out

    def restore(self, key: str, state: bytes) -> None:
        """Take back one checkpoint row: a model's head, one of its chunks, join logs or label
        windows (in any order), or the early labels. Rows older than the model's retention are
        stale ring slots and are skipped."""
        if not state:
            return
        if key == EARLY_KEY:
            self._early = {lb.h: lb for lb in msgspec.msgpack.decode(state, type=list[Label])}
            return
        model, _, part = key.partition(SEP)
        st = self._model(model)
        if not part:
            head = msgspec.msgpack.decode(state, type=_Head)
            if head.v not in (1, STATE_VERSION):
                return
            st.last = head.last
            if head.change:
                st.change = list(head.change)
            for name in head.labels:
                st.label(name)
            for combo in head.combos:
                st.combo([tuple(k) for k in combo])
            return
        self._restoring.setdefault(model, {"e": [], "j": [], "a": []})[part[0]].append(state)

    def _settle(self) -> None:
        """Apply the rows restored since the last close, all of a model's at once (any order)."""
        for model, parts in self._restoring.items():
            st = self._models.get(model)
            if st is not None and st.last >= 0:
                self._settle_model(model, st, parts)
        self._restoring = {}

    def _settle_model(self, model: str, st: _Model, parts: dict[str, list[bytes]]) -> None:
        w = self.window_s
        keep_from = st.last - (self._retention_w - 1) * w
        for b in parts["e"]:
            c = decode_chunk(b)
            if keep_from <= c.window <= st.last:
                self._pending.add(model, c)
        chunks = self._pending.by_model.get(model, {})
        for b in parts["j"]:
            log = msgspec.msgpack.decode(b, type=JoinLog)
            if keep_from <= log.window <= st.last:
                for win, h in log.joined:
                    c = chunks.get(win)
                    if c is not None:
                        i = c.find(np.array([h], dtype=np.uint64))[0]
                        if i >= 0 and not c.joined[i]:
                            self._pending.mark(model, c, int(i))
        horizon_from = st.last - (self.cfg.horizon_windows - 1) * w
        windows = []
        for b in parts["a"]:
            s = msgspec.msgpack.decode(b, type=_Window)
            if horizon_from <= s.window <= st.last:
                windows.append(_decode_window(s))
        held = sorted([*st.windows, *windows], key=lambda x: x[0])
        st.windows, st.total, st.ece = deque(), {}, np.zeros((3, BINS))
        for entry in held:
            _push(st, entry)


def _push(st: _Model, entry: tuple[int, Counts, np.ndarray]) -> None:
    """Append a label window, keeping the model-wide totals over every window held."""
    st.windows.append(entry)
    counts = entry[1]
    if MODEL in counts:
        if MODEL in st.total:
            st.total[MODEL] += counts[MODEL]
        else:
            st.total[MODEL] = counts[MODEL].copy()
    st.ece += entry[2]


def _sum(windows: deque[tuple[int, Counts, np.ndarray]], since: float) -> Counts:
    out: Counts = {}
    for start, counts, _ in reversed(windows):
        if start < since:
            break
        for k, v in counts.items():
            t = out.get(k)
            if t is None:
                out[k] = v.copy()
            else:
                t += v
    return out


def _ece(bins: np.ndarray) -> float | None:
    total = bins[0].sum()
    if not total:
        return None
    nz = bins[0] > 0
    return float((np.abs(bins[1][nz] - bins[2][nz])).sum() / total)


def _encode_window(start: int, counts: Counts, ece: np.ndarray) -> bytes:
    keys = sorted(counts)
    arr = np.array([counts[k] for k in keys], dtype=np.int64).reshape(len(keys), 7)
    return msgspec.msgpack.encode(
        _Window(start, [list(k) for k in keys], arr.tobytes(), ece.astype(np.float64).tobytes())
    )


def _decode_window(s: _Window) -> tuple[int, Counts, np.ndarray]:
    arr = np.frombuffer(s.counts, dtype=np.int64).reshape(len(s.keys), 7)
    counts = {tuple(k): arr[i].copy() for i, k in enumerate(s.keys)}
    return s.window, counts, np.frombuffer(s.ece, dtype=np.float64).reshape(3, BINS).copy()


def _rate(k: float, n: float) -> float | None:
    return float(k / n) if n else None


def _row(ts, model, attr, group, span, c, ece, pending) -> tuple:
    if c is None:
        c = np.zeros(7)
    return (
        ts, model, attr, group, span, int(c[N]), int(c[KNOWN]), int(c[RIGHT]), _rate(c[RIGHT], c[KNOWN]),
        int(c[POS]), int(c[TP]), int(c[NEG]), int(c[FP]), _rate(c[TP], c[TP] + c[FP]), _rate(c[TP], c[POS]),
        _rate(c[FP], c[NEG]), ece, pending,
    )  # fmt: skip
