"""Input and prediction drift per model and feature: the last few windows against a reference.

What is compared: every key of ``request.features`` (numeric or categorical), the prediction
(``prediction.score``, ``prediction.label``), what an LLM's events carry (``request.tokens``,
``request.chars``, ``request.language``, ``response.tokens``, ``response.latency_ms``), and
``request.embedding``.

**Reference.** Each model learns its reference from its first ``reference_s`` of event time:
a sample of up to ``reference_sample`` events, chosen by a hash of ``event_id`` (the same events
whatever the batching or order, so a replay and a restarted worker learn the same reference).
Numeric features are cut into ``bins`` bins at the sample's quantiles, categorical ones keep
their ``max_categories`` most common values; one more bin holds what the reference did not have
(new categories, text in a numeric feature). After that the reference is frozen; a new model
version starts a new one only with ``new_reference_on_version``. A model found in
``reference_file`` (written by ``raiwatch reference build``) starts with that reference instead.

**Sliding evaluation.** Every window, the counts of the last ``sliding_windows`` windows are
compared with the reference, so a shift shows after minutes, not after a long window fills. A
window counts at most ``max_events_per_window`` events of a model (those with the smallest
event-id hashes), so the cost per window is bounded whatever the traffic; ``n`` says how many.
Signals (``n`` = values present in the sliding span; ``reference`` = the reference's id):

- ``drift.feature`` {feature, reference}: population stability index (value) with Pearson's
  chi-square homogeneity p-value; ``drift.prediction`` {output, reference}: the same for the
  model's score and label.
- ``drift.missing_rate`` {feature, reference}: share of events without the feature (value)
  against the reference's share (baseline), two-proportion z-test p-value.
- ``drift.new_category_share`` {feature, reference}: share of values the reference never had.
- ``drift.embedding`` {reference}: distance of the mean embedding from the reference's over the
  reference's total standard deviation, diagonal chi-square p-value; ``drift.embedding_mmd``
  {reference}: MMD of 200 recent against 200 reference embeddings, permutation p-value (100
  permutations), once every ``sliding_windows`` windows.
- ``drift.change`` {feature, reference}: 1 in the window where river's Page-Hinkley test, fed
  each window's mean bin in standard errors from the mean of the reference and every window
  before it (``recursive_shift_z``: independent and close to standard normal without change,
  whatever the feature's units and the windows' sizes), detects a change. Its threshold
  is set so that all numeric features of a model together raise the signal's share of the model's
  false-alarm budget on stationary traffic (``page_hinkley_threshold``, checked by simulation in
  the tests).

**The daily profile.** After the reference, each model learns its first day hour by hour: a
window joins its hour unless it, or the sliding span, stepped away from the last hour admitted
(``profile_admit_psi`` with 95% confidence). During that day windows are compared with the
reference and every hour admitted so far; after it, with the profile's hours around the window's
time of day, so a mix that follows the day is not drift. The embedding tests and Page-Hinkley
keep the reference.

**Repetition.** A window counts a near-duplicate text (``text_key``) at most ``REPEATS`` times
beyond twice its share of the reference sample: a viral question or a campaign's template is
the abuse monitor's to judge, not a shift of the population.

**Evidence.** ``drift.feature`` and ``drift.prediction`` carry one-sided bounds of the PSI (a rule's
``value.lower > 0.1``: the shift is above 0.1 with confidence, not merely different): the PSI of
two binned samples, times their effective size ``n m / (n + m)``, is close to a noncentral
chi-square with bins - 1 degrees of freedom and noncentrality ``n_eff x PSI``, whose inversion
(``detectors.evidence.divergence_bounds``) gives the bounds; ``drift.missing_rate`` bounds its
difference with the reference (``delta``), ``drift.embedding`` its shift. Each is set at the
signal's share of the model's false-alarm budget, split over the model's series of that signal
and a week of windows. p-values (Bonferroni-adjusted over every test of the model in that window)
test "no difference at all" and are kept for analysts.

State per model is bounded: the reference (bins x features, 200 embeddings) and
``sliding_windows`` count matrices and embedding samples; the learning sample only during the
first ``reference_s`` (checkpointed with it: about 1 MB per model and window while learning).
"""

from __future__ import annotations

import math
import pickle
import re
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
from msgspec import UNSET
from river.drift import PageHinkley

from detectors.drift import (
    chi2_homogeneity,
    embedding_mean_shift,
    embedding_shift_bounds,
    mmd_rbf,
    page_hinkley_threshold,
    psi,
    recursive_shift_z,
    two_proportions,
)
from detectors.evidence import Bounds, diff_bounds, divergence_bounds, look_alpha
from monitors.base import MonitorConfig, PerModelState
from monitors.registry import budgets, register
from raiwatch.core.catalogue import SignalSpec
from raiwatch.core.columns import EventColumns
from raiwatch.core.errors import ConfigError
from raiwatch.core.records import Signal, TelemetryEvent

STATE_VERSION = 3  # 3: the daily profile; 2: the running mean bins (older states are read without them)
REFERENCE_VERSION = 2  # of the files `raiwatch reference build` writes (the reference's own layout)
MIN_REFERENCE = 200  # events a reference needs; a model keeps learning until it has them
_NAN, _INF = math.nan, math.inf

Value = float | int | str | bool | None | list[float]
EMBEDDING = "request.embedding"  # kept in the rows beside the scalar values, compared on its own
EMBEDDING_SAMPLE = 200  # embeddings kept of the reference, and of the sliding span, for the MMD test
DAY_S, HOUR_S = 86400, 3600  # the daily profile: a model's first day after its reference, by hour
ADMIT_ALPHA = 0.05  # one-sided error of that step's test
TEXT = "\x00text"  # a sample row's request text, as its key (``text_key``; not a feature: the trim's)
REPEATS = 1  # times a text the reference never had twice may count in a window
_WORDS = re.compile(r"\w+")


class DriftConfig(MonitorConfig):
    """``monitors.drift`` in the config file."""

    reference_s: Annotated[int, msgspec.Meta(gt=0)] = 3600  # each model's first hour is its reference
    reference_sample: Annotated[int, msgspec.Meta(ge=MIN_REFERENCE)] = 4000  # events kept to learn it
    sliding_windows: Annotated[int, msgspec.Meta(gt=0)] = 5  # windows compared with the reference
    bins: Annotated[int, msgspec.Meta(ge=2, le=100)] = 20  # quantile bins of a numeric feature
    max_categories: Annotated[int, msgspec.Meta(ge=2)] = 30  # per categorical feature; more: "other"
    max_features: Annotated[int, msgspec.Meta(gt=0)] = 200  # per model (by name order); more: ignored
    new_reference_on_version: bool = False  # a new model.version learns a new reference
    reference_file: str = ""  # from `raiwatch reference build`: models in it start with that reference
    daily_profile: bool = True  # after a model's first day, compare each window with the same hours of it
    profile_admit_psi: Annotated[float, msgspec.Meta(gt=0)] = 0.05  # a step larger stays out of the profile
    online_delta: Annotated[float, msgspec.Meta(gt=0)] = 0.5  # Page-Hinkley slack, in standard errors
    online_min_windows: Annotated[int, msgspec.Meta(ge=1)] = 30  # windows before it may signal
    max_events_per_window: Annotated[int, msgspec.Meta(ge=MIN_REFERENCE)] = 600  # per model, by hash
    # Evidently reports, written by a streaming worker (raiwatch/drift_reporter.py):
    report_on_incident: bool = True  # when a drift incident opens: its model's sliding span
    report_every_s: Annotated[int, msgspec.Meta(ge=0)] = 86400  # per model, of event time; 0: never
    report_rows: Annotated[int, msgspec.Meta(ge=100)] = 5000  # events of each side, by event-id hash


def features_of(ev: TelemetryEvent) -> dict[str, Value]:
    """The values drift is measured on, by name.

    >>> from raiwatch.core.codec import telemetry_codec
    >>> ev = telemetry_codec.decode_batch([b'{"schema_version":1,"event_id":"e","timestamp":'
    ...     b'"2026-11-02T09:00:00Z","model":{"id":"m"},"request":{"features":{"age":41},"text":"hi"},'
    ...     b'"response":{"latency_ms":12.5,"prediction":{"score":0.9}}}']).events[0]
    >>> features_of(ev)
    {'age': 41.0, 'request.chars': 2, 'response.latency_ms': 12.5, 'prediction.score': 0.9}
    """
    out: dict[str, Value] = {}
    req = ev.request
    if req:
        if req.features:
            out.update(req.features)
        if req.embedding:
            out[EMBEDDING] = req.embedding
        if req.tokens is not UNSET:
            out["request.tokens"] = req.tokens
        if req.text is not UNSET:
            out["request.chars"] = len(req.text)
        if req.language:
            out["request.language"] = req.language
    resp = ev.response
    if resp:
        if resp.tokens is not UNSET:
            out["response.tokens"] = resp.tokens
        if resp.latency_ms is not UNSET:
            out["response.latency_ms"] = resp.latency_ms
        pred = resp.prediction
        if pred:
            if pred.score is not None:
                out["prediction.score"] = pred.score
            if pred.label is not None:
                out["prediction.label"] = pred.label
    return out


def _key(x: Value) -> str:
    """A categorical value as text (booleans as JSON writes them)."""
    if x.__class__ is str:
        return x  # type: ignore[return-value]
    if x is True or x is False:
        return "true" if x else "false"
    return repr(x)


class _Feature(msgspec.Struct, array_like=True):
    """One feature of a reference: its bins and the reference's counts in them."""

    name: str
    numeric: bool
    cuts: list[float]  # numeric: interior bin edges (bins = len(cuts) + 1)
    categories: list[str]  # categorical: tracked values (bins = len(categories))
    counts: list[int]  # per bin, plus the last bin: values outside the reference's
    missing: int  # reference events without the feature

    @property
    def width(self) -> int:
        return len(self.counts)


class _EmbeddingRef(msgspec.Struct, array_like=True):
    """The reference's embeddings: per-dimension mean and variance, and a sample for the MMD test."""

    n: int
    mean: list[float]
    var: list[float]
    sample: list[list[float]]


class _Reference(msgspec.Struct, array_like=True):
    id: str
    version: str
    n: int  # events in the reference sample
    features: list[_Feature]
    embedding: _EmbeddingRef | None = None
    texts: dict[int, float] | None = None  # share of each text seen twice or more (None: no texts)


def _embeddings(rows: Sequence[dict[str, Value]], dim: int | None = None) -> np.ndarray:
    """The rows' embeddings of the most common length (or of ``dim``), as a matrix."""
    vecs = [r[EMBEDDING] for r in rows if isinstance(r.get(EMBEDDING), list)]
    if dim is None and vecs:
        lengths: dict[int, int] = {}
        for v in vecs:
            lengths[len(v)] = lengths.get(len(v), 0) + 1
        dim = max(lengths, key=lambda k: (lengths[k], k))
    good = [v for v in vecs if len(v) == dim]
    return np.asarray(good, dtype=np.float64).reshape(len(good), dim or 0)


def build_reference(
    rows: Sequence[dict[str, Value]], cfg: DriftConfig, ref_id: str, version: str
) -> _Reference:
    """Bins and counts of every feature of ``rows`` (the reference sample)."""
    names = sorted({k for r in rows for k in r} - {EMBEDDING, TEXT})[: cfg.max_features]
    feats = []
    for name in names:
        col = [r.get(name) for r in rows]
        present = [x for x in col if x is not None]
        nums = [x for x in present if x.__class__ in (int, float)]
        missing = len(col) - len(present)
        if present and len(nums) >= 0.95 * len(present):
            arr = np.asarray(nums, dtype=np.float64)
            q = np.quantile(arr, np.linspace(0, 1, cfg.bins + 1)[1:-1])
            cuts = np.unique(q)
            f = _Feature(name, True, cuts.tolist(), [], [0] * (len(cuts) + 2), missing)
        else:
            values: dict[str, int] = {}
            for x in present:
                k = _key(x)
                values[k] = values.get(k, 0) + 1
            top = sorted(values, key=lambda k: (-values[k], k))[: cfg.max_categories]
            f = _Feature(name, False, [], sorted(top), [0] * (len(top) + 1), missing)
        counts, _ = _count_feature(f, col)
        f.counts = counts.tolist()
        feats.append(f)
    emb = _embeddings(rows)
    emb_ref = None
    if len(emb) >= MIN_REFERENCE:
        sample = emb[:EMBEDDING_SAMPLE].tolist()
        emb_ref = _EmbeddingRef(len(emb), emb.mean(0).tolist(), emb.var(0, ddof=1).tolist(), sample)
    texts: dict[int, int] = {}
    for r in rows:
        h = r.get(TEXT)
        if h is not None:
            texts[h] = texts.get(h, 0) + 1  # type: ignore[index]
    shares = {h: c / len(rows) for h, c in texts.items() if c >= 2} if texts else None
    return _Reference(ref_id, version, len(rows), feats, emb_ref, shares)


def _count_feature(f: _Feature, col: list[Value]) -> tuple[np.ndarray, int]:
    """Counts of ``col`` in ``f``'s bins (last bin: values the reference did not have), and missing."""
    width = f.width
    if f.numeric:
        try:  # numbers and None (as NaN) only: numpy converts in C
            vals = np.array(col, dtype=np.float64)
            if any(x is True or x is False for x in col[:1]):
                raise TypeError
        except (TypeError, ValueError):
            vals = np.array(
                [
                    x if (x.__class__ is float or x.__class__ is int) else (_NAN if x is None else _INF)
                    for x in col
                ],
                dtype=np.float64,
            )
        idx = np.searchsorted(np.asarray(f.cuts), vals, side="right")
        idx[np.isinf(vals)] = width - 1
        missing = np.isnan(vals)
        idx = idx[~missing]
        return np.bincount(idx, minlength=width)[:width], int(missing.sum())
    index: dict[Any, int] = {c: i for i, c in enumerate(f.categories)}
    for b, k in ((True, "true"), (False, "false")):
        if k in index:
            index[b] = index[k]
    other = width - 1
    idx_list = [
        index.get(x, other) if x.__class__ is str or x is True or x is False else index.get(_key(x), other)
        for x in col
        if x is not None
    ]
    counts = np.bincount(np.asarray(idx_list, dtype=np.int64), minlength=width)[:width]
    return counts, len(col) - len(idx_list)


Sample = list[tuple[int, str, dict[str, Value]]]  # (hash of event_id, event_id, values)
_BY_HASH = itemgetter(0, 1)  # never compares the values (a repeated event id would)


def _sample_add(sample: Sample, threshold: int, events: Sequence[TelemetryEvent], cap: int) -> int:
    """Add the values of the events whose id hashes under ``threshold``; past ``2 * cap`` rows keep
    the ``cap`` smallest hashes (the same set whatever the order events came in). Returns the new
    threshold."""
    crc32 = zlib.crc32
    hashes = [crc32(ev.event_id.encode()) for ev in events]
    keys = _TextKeys()
    for i in [i for i, h in enumerate(hashes) if h < threshold]:
        ev = events[i]
        row = features_of(ev)
        if (r := ev.request) and (text := r.text):
            row[TEXT] = keys[text]
        sample.append((hashes[i], ev.event_id, row))
    if len(sample) > 2 * cap:
        sample.sort(key=_BY_HASH)
        del sample[cap:]
        threshold = sample[-1][0]
    return threshold


def _sample_rows(sample: Sample, cap: int) -> list[dict[str, Value]]:
    return [r for _, _, r in sorted(sample, key=_BY_HASH)[:cap]]


class ReferenceFile(msgspec.Struct):
    """What ``raiwatch reference build`` writes and ``monitors.drift.reference_file`` reads."""

    v: int
    references: dict[str, _Reference]  # by model id


def load_references(path: str) -> dict[str, _Reference]:
    """The references of a file ``raiwatch reference build`` wrote; ``ConfigError`` if it cannot be read."""
    try:
        f = msgspec.msgpack.decode(Path(path).read_bytes(), type=ReferenceFile)
    except FileNotFoundError:
        raise ConfigError(f"bad setting: monitors.drift.reference_file {path} does not exist") from None
    except (msgspec.DecodeError, msgspec.ValidationError, IsADirectoryError):
        raise ConfigError(
            f"bad setting: monitors.drift.reference_file {path} is not a file raiwatch reference build wrote"
        ) from None
    if f.v != REFERENCE_VERSION:
        raise ConfigError(f"{path}: written by another raiwatch version; build it again")
    return f.references


class ReferenceBuilder:
    """References per model from a file of events, with the same sampling and bins as learning."""

    def __init__(self, cfg: DriftConfig | None = None):
        self.cfg = cfg or DriftConfig()
        self._sample: dict[str, list] = {}
        self._threshold: dict[str, int] = {}
        self._seen: dict[str, tuple[int, str, float]] = {}  # model -> events, version, first time

    def add(self, events: Sequence[TelemetryEvent]) -> None:
        by_model: dict[str, list[TelemetryEvent]] = {}
        for ev in events:
            by_model.setdefault(ev.model.id, []).append(ev)
            n, version, first = self._seen.get(ev.model.id, (0, "", math.inf))
            when = min(first, ev.timestamp.timestamp())
            self._seen[ev.model.id] = (n + 1, ev.model.version or version, when)
        for model, evs in by_model.items():
            sample = self._sample.setdefault(model, [])
            threshold = self._threshold.get(model, 1 << 32)
            self._threshold[model] = _sample_add(sample, threshold, evs, self.cfg.reference_sample)

    def build(self) -> dict[str, tuple[_Reference, int]]:
        """Each model's reference and how many of its events were read (models under 200 left out)."""
        out = {}
        for model, sample in sorted(self._sample.items()):
            n, version, first = self._seen[model]
            if len(sample) < MIN_REFERENCE:
                continue
            since = datetime.fromtimestamp(first, UTC).strftime("%Y%m%dT%H%M")
            rows = _sample_rows(sample, self.cfg.reference_sample)
            out[model] = (build_reference(rows, self.cfg, f"{version or 'any'}@file-{since}", version), n)
        return out


_WindowEmbeddings = tuple[np.ndarray, int, list[tuple[int, list[float]]]]  # sum, n, (hash, vector)


def _window_embeddings(ref: _EmbeddingRef, events: Sequence[TelemetryEvent]) -> _WindowEmbeddings:
    """One window's embeddings of the reference's length: their sum, count, and the
    ``EMBEDDING_SAMPLE`` with the smallest event-id hashes (the same whatever the batching)."""
    dim = len(ref.mean)
    total, n, sample = np.zeros(dim), 0, []
    for ev in events:
        v = _request(ev, "embedding")
        if isinstance(v, list) and len(v) == dim:
            total += v
            n += 1
            sample.append((zlib.crc32(ev.event_id.encode()), v))
    sample.sort(key=itemgetter(0))
    return total, n, sample[:EMBEDDING_SAMPLE]


def _request(ev: TelemetryEvent, attr: str) -> Value:
    r = ev.request
    v = getattr(r, attr) if r else UNSET
    return None if v is UNSET or v == "" else v


def _tokens(evs: Sequence[TelemetryEvent], part: str) -> list[Value]:
    out: list[Value] = []
    for ev in evs:
        r = getattr(ev, part)
        t = r.tokens if r else UNSET
        out.append(None if t is UNSET else t)
    return out


def _chars(evs: Sequence[TelemetryEvent]) -> list[Value]:
    return [len(t) if (r := ev.request) and (t := r.text) is not UNSET else None for ev in evs]  # type: ignore[arg-type]


def _latency(evs: Sequence[TelemetryEvent]) -> list[Value]:
    return [None if not (r := ev.response) or (v := r.latency_ms) is UNSET else v for ev in evs]


def _prediction(evs: Sequence[TelemetryEvent], attr: str) -> list[Value]:
    return [getattr(p, attr) if (r := ev.response) and (p := r.prediction) else None for ev in evs]


DERIVED = {  # what features_of adds beside request.features, read from a window's events at once
    "request.tokens": lambda evs: _tokens(evs, "request"),
    "request.chars": _chars,
    "request.language": lambda evs: [(r.language or None) if (r := ev.request) else None for ev in evs],
    "response.tokens": lambda evs: _tokens(evs, "response"),
    "response.latency_ms": _latency,
    "prediction.score": lambda evs: _prediction(evs, "score"),
    "prediction.label": lambda evs: _prediction(evs, "label"),
}


def _columns(ref: _Reference, events: Sequence[TelemetryEvent]) -> list[list[Value]]:
    """Each reference feature's values in ``events`` (as ``features_of`` would give them)."""
    feats = [(ev.request.features or None) if ev.request else None for ev in events]
    out = []
    for f in ref.features:
        column = DERIVED.get(f.name)
        if column is not None:
            out.append(column(events))
        else:
            name = f.name
            out.append([x.get(name) if x else None for x in feats])
    return out


def _cap(events: list[TelemetryEvent], cap: int) -> list[TelemetryEvent]:
    """At most ``cap`` of a window's events: those with the smallest event-id hashes (the same
    ones whatever the batching), in their order. Keeps the cost per window bounded."""
    if len(events) <= cap:
        return events
    h = np.fromiter((zlib.crc32(ev.event_id.encode()) for ev in events), dtype=np.uint32, count=len(events))
    keep = np.sort(np.argsort(h, kind="stable")[:cap])
    return [events[i] for i in keep.tolist()]


def text_key(text: str) -> int:
    """What near-duplicate prompts share: the CRC-32 of their longest word (the first in
    alphabetical order among equally long ones; case and punctuation aside). A question with a
    greeting, a "thanks" or other punctuation added is the same text; so are distinct texts whose
    longest word is the same, which only matters when their count in a window is far above
    their share of the reference.

    >>> text_key("hey, what happened at the final?") == text_key("What happened at the final thanks")
    True
    """
    words = _WORDS.findall(text.lower())
    if not words:
        return 0
    longest = max(map(len, words))
    return zlib.crc32(min(w for w in words if len(w) == longest).encode())


class _TextKeys(dict[str, int]):
    """``text_key`` of each text asked for, computed once per distinct text: a window repeats its
    common prompts (and a repeated one is what the trim is for)."""

    def __missing__(self, text: str) -> int:
        key = self[text] = text_key(text)
        return key


def _trim_repeats(events: list[TelemetryEvent], shares: dict[int, float]) -> list[TelemetryEvent]:
    """A window's events with each text (``text_key``) counted at most ``REPEATS`` plus twice its
    share of the reference times the window's events (those with the smallest event-id hashes
    kept): a question gone viral, or a campaign's template, is a burst of one text, which the
    abuse monitor judges; drift is measured on the population of requests, not on how often one
    is repeated.

    >>> from raiwatch.core.codec import telemetry_codec
    >>> evs = telemetry_codec.decode_batch([b'{"schema_version":1,"event_id":"e%d","timestamp":'
    ...     b'"2026-11-02T09:00:00Z","model":{"id":"m"},"request":{"text":"%s"}}' % (i, t)
    ...     for i, t in enumerate([b"hi"] * 8 + [b"news"] * 30)]).events
    >>> kept = _trim_repeats(evs, {text_key("hi"): 0.2})
    >>> sum(e.request.text == "hi" for e in kept), sum(e.request.text == "news" for e in kept)
    (8, 1)
    """
    by_text: dict[int, list[int]] = {}
    keys = _TextKeys()
    for i, ev in enumerate(events):
        if (r := ev.request) and (text := r.text):
            by_text.setdefault(keys[text], []).append(i)
    n = len(events)
    drop: list[int] = []
    for h, idx in by_text.items():
        allowed = REPEATS + math.ceil(2 * shares.get(h, 0.0) * n)
        if len(idx) > allowed:
            order = sorted(idx, key=lambda i: (zlib.crc32(events[i].event_id.encode()), events[i].event_id))
            drop += order[allowed:]
    if not drop:
        return events
    gone = set(drop)
    return [ev for i, ev in enumerate(events) if i not in gone]


class _Counts:
    """One model's counts in one window (or a sum of windows), over its reference's features."""

    __slots__ = ("bins", "missing", "n")

    def __init__(self, ref: _Reference):
        width = max((f.width for f in ref.features), default=1)
        self.bins = np.zeros((len(ref.features), width), dtype=np.int64)
        self.missing = np.zeros(len(ref.features), dtype=np.int64)
        self.n = 0

    def add_events(self, ref: _Reference, events: Sequence[TelemetryEvent]) -> None:
        for i, (f, col) in enumerate(zip(ref.features, _columns(ref, events), strict=True)):
            counts, missing = _count_feature(f, col)
            self.bins[i, : f.width] += counts
            self.missing[i] += missing
        self.n += len(events)


class _Model:
    """What the monitor remembers of one model."""

    __slots__ = (
        "learn_from", "learn_until", "online", "online_profiled", "profile", "profile_from", "recent",
        "recent_emb", "ref", "running", "sample", "threshold", "version",
    )  # fmt: skip

    def __init__(self, start: int, reference_s: int):
        self.learn_from = start
        self.learn_until = start + reference_s
        self.sample: list[tuple[int, str, dict[str, Value]]] = []  # (hash, event_id, values)
        self.threshold = 1 << 32  # events hashing at or above it are not sampled
        self.ref: _Reference | None = None
        self.recent: deque[tuple[np.ndarray, np.ndarray, int]] = deque()  # closed windows' counts
        self.online: dict[str, PageHinkley] = {}  # per numeric feature, on its window's mean-bin z
        self.running: dict[str, tuple[float, float]] = {}  # per numeric feature: mean bin so far, values
        self.recent_emb: deque[_WindowEmbeddings] = deque()  # closed windows' embedding sums and samples
        self.version = ""
        self.profile_from = -1  # start of the first window compared with the reference (-1: none yet)
        self.profile: list[_Window | None] = []  # per hour of the profile's day: windows admitted, summed
        self.online_profiled = False  # the Page-Hinkley tests read the profile's hours (after its day)


_Window = tuple[np.ndarray, np.ndarray, int]  # counts per feature and bin, missing per feature, events


def _add(a: _Window | None, b: _Window) -> _Window:
    return b if a is None else (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def _sum_windows(windows: Iterable[_Window | None]) -> _Window | None:
    """The sum of the windows given (None for hours the profile has nothing of)."""
    total: _Window | None = None
    for w in windows:
        if w is not None:
            total = _add(total, w)
    return total


def _n_eff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the effective size ``n m / (n + m)`` of two binned samples (0 where one is empty)."""
    a_n, b_n = a.sum(axis=1).astype(np.float64), b.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((a_n > 0) & (b_n > 0), a_n * b_n / (a_n + b_n), 0.0)


def _reference_window(ref: _Reference, width: int) -> _Window:
    """The reference's counts in the layout of a window's."""
    bins = np.zeros((len(ref.features), width), dtype=np.int64)
    for i, f in enumerate(ref.features):
        bins[i, : f.width] = f.counts
    return bins, np.array([f.missing for f in ref.features], dtype=np.int64), ref.n


class _State(msgspec.Struct, array_like=True):
    v: int
    learn_from: int
    learn_until: int
    threshold: int
    sample: list[tuple[int, str, dict[str, Value]]]
    ref: _Reference | None
    recent: list[tuple[list[list[int]], list[int], int]]
    version: str
    online: bytes  # river's detectors, pickled
    recent_emb: list[tuple[list[float], int, list[tuple[int, list[float]]]]] = []
    running: list[tuple[str, float, float]] = []
    profile_from: int = -1
    profile: list[tuple[list[list[int]], list[int], int] | None] = []
    online_profiled: bool = False


_COMMON = dict(family="drift", n="values present in the last sliding_windows windows", export=None)
_PSI_EVIDENCE = (
    "one-sided bounds of the PSI from the noncentral chi-square of n_eff x PSI (df = bins - 1), at the"
    " signal's share of the budget over the model's features and a week of windows"
)
SIGNALS = (
    SignalSpec(
        name="drift.feature",
        dims=(("feature", "reference"),),
        value="population stability index of the feature's binned values against the reference",
        unit="distance",
        range=(0.0, math.inf),
        evidence="value",
        budget=0.35,
        evidence_text=_PSI_EVIDENCE,
        **_COMMON,
    ),
    SignalSpec(
        name="drift.prediction",
        dims=(("output", "reference"),),
        value="population stability index of the model's score or label against the reference",
        unit="distance",
        range=(0.0, math.inf),
        evidence="value",
        budget=0.15,
        evidence_text=_PSI_EVIDENCE,
        **_COMMON,
    ),
    SignalSpec(
        name="drift.missing_rate",
        dims=(("feature", "reference"),),
        value="share of events without the feature",
        unit="ratio",
        range=(0.0, 1.0),
        baseline="share of reference events without the feature",
        evidence="delta",
        budget=0.1,
        evidence_text="one-sided Newcombe bounds of the difference with the reference's share, budgeted"
        " as drift.feature",
        **(_COMMON | {"n": "events in the last sliding_windows windows"}),
    ),
    SignalSpec(
        name="drift.embedding",
        dims=(("reference",),),
        value="distance of the mean embedding from the reference's, over its total standard deviation",
        unit="distance",
        range=(0.0, math.inf),
        evidence="value",
        budget=0.1,
        evidence_text="one-sided bounds from the diagonal noncentral chi-square (conservative when the"
        " dimensions' variances differ)",
        **(_COMMON | {"n": "embeddings in the last sliding_windows windows"}),
    ),
    SignalSpec(
        name="drift.embedding_mmd",
        dims=(("reference",),),
        value="maximum mean discrepancy (Gaussian kernel) of 200 recent embeddings and 200 reference ones",
        unit="distance",
        range=(0.0, math.inf),
        **(_COMMON | {"n": "recent embeddings in the test"}),
    ),
    SignalSpec(
        name="drift.change",
        dims=(("feature", "reference"),),
        value=(
            "1 in the window where the Page-Hinkley test on the feature's mean bin (in standard errors "
            "from the reference) detects a change, else 0"
        ),
        unit="score",
        range=(0.0, 1.0),
        evidence="sequential",
        budget=0.3,
        evidence_text="Page-Hinkley threshold for an in-control run length of a week over the signal's"
        " share of the budget, over the model's numeric features (Siegmund's approximation)",
        **(_COMMON | {"n": "values present in the window"}),
    ),
    SignalSpec(
        name="drift.new_category_share",
        dims=(("feature", "reference"),),
        value="share of values the reference never had (new categories; text in a numeric feature)",
        unit="ratio",
        range=(0.0, 1.0),
        baseline="share of such values in the reference (categories beyond max_categories)",
        **_COMMON,
    ),
)


@register
class DriftMonitor(PerModelState):
    """Sliding-window drift against a learned reference; memory bounded per model."""

    family = "drift"
    Config = DriftConfig
    SIGNALS = SIGNALS

    def __init__(
        self, window_s: int, config: DriftConfig | None = None, budget: dict[str, float] | None = None
    ):
        self.window_s = window_s
        self.cfg = config or DriftConfig()
        self.budget = budgets() if budget is None else budget  # false alarms per model-week, per signal
        self._models: dict[str, _Model] = {}
        self._windows: dict[int, dict[str, list[TelemetryEvent]]] = {}  # window -> model -> its events
        self._dirty: set[str] = set()
        self._file_refs = load_references(self.cfg.reference_file) if self.cfg.reference_file else {}

    def observe(self, batch: EventColumns) -> None:
        opened, models, events = self._windows, self._models, batch.events
        for (start, model), at in batch.groups.items():
            by_model = opened.get(start)
            if by_model is None:
                by_model = opened[start] = {}
            bucket = by_model.get(model)
            if bucket is None:
                by_model[model] = [events[i] for i in at]
            else:
                bucket += [events[i] for i in at]
            if model not in models:  # groups come in the order of their first event: this one has the model's
                st = models[model] = _Model(start, self.cfg.reference_s)
                if model in self._file_refs:
                    self._use(st, self._file_refs[model])
        for model, at in batch.by_model.items():  # the version of the model's last event naming one
            for i in reversed(at):
                if version := events[i].model.version:
                    models[model].version = version
                    break

    def close(self, start: int) -> list[Signal]:
        by_model = self._windows.pop(start, {})
        out: list[Signal] = []
        for model, events in sorted(by_model.items()):
            st = self._models.get(model)
            if st is None:
                continue
            self._dirty.add(model)
            if st.ref is not None and self.cfg.new_reference_on_version and st.version != st.ref.version:
                self._relearn(st, start)
            if st.ref is None:
                self._learn(st, events)
                if start + self.window_s >= st.learn_until:
                    self._freeze(model, st)
                continue
            events = _cap(events, self.cfg.max_events_per_window)
            if st.ref.texts is not None:
                events = _trim_repeats(events, st.ref.texts)
            counts = _Counts(st.ref)
            counts.add_events(st.ref, events)
            if st.ref.embedding is not None:
                st.recent_emb.append(_window_embeddings(st.ref.embedding, events))
                while len(st.recent_emb) > self.cfg.sliding_windows:
                    st.recent_emb.popleft()
            out += self._compare(model, st, start, counts)
        return out

    def _compare(self, model: str, st: _Model, start: int, counts: _Counts) -> list[Signal]:
        """One closed window's counts: slide the span, compare it, step the online tests, learn the
        profile."""
        window = (counts.bins, counts.missing, counts.n)
        st.recent.append(window)
        while len(st.recent) > self.cfg.sliding_windows:
            st.recent.popleft()
        span = _sum_windows(st.recent)
        assert span is not None  # this window is in it
        against = self._against(st, start)
        out = self._signals(model, st, start, against, span)
        profiled = self.cfg.daily_profile and 0 <= st.profile_from <= start - DAY_S
        if profiled and not st.online_profiled:
            self._start_online(st)  # what it summed against the running mean does not carry over
            st.online_profiled = True
        out += self._online(model, st, start, counts, against if profiled else None)
        self._profile(st, start, window, span)
        return out

    # -- the daily profile ---------------------------------------------------------------------

    def _against(self, st: _Model, start: int) -> _Window:
        """What a window is compared with. The reference, until the model has a daily profile; while
        the profile's day is being learned, the reference and every hour admitted so far; after it,
        the profile's hours around this one's time of day (the whole day where they hold under
        ``MIN_REFERENCE`` events), so the day's own cycle in mix and load is not drift."""
        ref = st.ref
        assert ref is not None
        width = max((f.width for f in ref.features), default=1)
        base = _reference_window(ref, width)
        if not self.cfg.daily_profile or st.profile_from < 0:
            return base
        if start >= st.profile_from + DAY_S:
            hour = (start - st.profile_from) // HOUR_S % 24
            near = _sum_windows(st.profile[h % 24] for h in (hour - 1, hour, hour + 1))
            if near is not None and near[2] >= MIN_REFERENCE:
                return near
        return _sum_windows([base, *st.profile])  # type: ignore[return-value]

    def _profile(self, st: _Model, start: int, window: _Window, span: _Window) -> None:
        """Learn the profile's day: a window joins its hour unless it, or the sliding span, stepped
        away from the last hour admitted before this one (the PSI of its bins and missing values
        above ``profile_admit_psi`` with 95% confidence). An hour moves the day's cycle far less, so
        the cycle is learned and a sudden shift is not."""
        if not self.cfg.daily_profile or st.ref is None or not st.ref.features:
            return
        if st.profile_from < 0:
            st.profile_from, st.profile = start, [None] * 24
        if start >= st.profile_from + DAY_S:
            return
        hour = (start - st.profile_from) // HOUR_S % 24
        last = next((w for w in reversed(st.profile[:hour]) if w is not None), None)
        if last is None:
            last = _reference_window(st.ref, window[0].shape[1])
        if not (self._stepped(last, window) or self._stepped(last, span)):
            st.profile[hour] = _add(st.profile[hour], window)

    def _stepped(self, before: _Window, now: _Window) -> bool:
        """Whether ``now`` is more than ``profile_admit_psi`` from ``before`` with 95% confidence, on
        any feature (its bins and its missing values as one distribution)."""
        a = np.hstack([before[0], before[1][:, None]])
        b = np.hstack([now[0], now[1][:, None]])
        df = ((a + b) > 0).sum(axis=1) - 1
        lower = divergence_bounds(psi(a, b).effect, _n_eff(a, b), df, ADMIT_ALPHA).lower
        return bool(np.any(np.nan_to_num(lower) > self.cfg.profile_admit_psi))

    # -- learning ------------------------------------------------------------------------------

    def _learn(self, st: _Model, events: Sequence[TelemetryEvent]) -> None:
        st.threshold = _sample_add(st.sample, st.threshold, events, self.cfg.reference_sample)

    def _freeze(self, model: str, st: _Model) -> None:
        if len(st.sample) < MIN_REFERENCE:
            st.learn_until += self.window_s  # too little traffic yet: keep learning
            return
        since = datetime.fromtimestamp(st.learn_from, UTC).strftime("%Y%m%dT%H%M")
        rows = _sample_rows(st.sample, self.cfg.reference_sample)
        self._use(st, build_reference(rows, self.cfg, f"{st.version or 'any'}@{since}", st.version))

    def _use(self, st: _Model, ref: _Reference) -> None:
        """Compare from now on with ``ref`` (learned, or from the reference file)."""
        st.ref = ref
        self._start_online(st)
        st.running = {}
        st.sample = []
        st.threshold = 1 << 32
        st.profile_from, st.profile = -1, []

    def _start_online(self, st: _Model) -> None:
        """A fresh Page-Hinkley test per numeric feature of the reference."""
        assert st.ref is not None
        numeric = [f.name for f in st.ref.features if f.numeric]
        threshold = self._online_threshold(len(numeric))
        st.online = {
            name: PageHinkley(
                min_instances=self.cfg.online_min_windows,
                delta=self.cfg.online_delta,
                threshold=threshold,
                alpha=1.0,
            )
            for name in numeric
        }
        st.online_profiled = False

    def _online_threshold(self, series: int) -> float:
        """Page-Hinkley threshold for ``series`` detectors together at the configured false-alarm rate."""
        windows_per_week = 7 * 86400 / self.window_s
        arl0 = windows_per_week * max(series, 1) / self.budget.get("drift.change", 1e-9)
        return page_hinkley_threshold(arl0, self.cfg.online_delta)

    def _relearn(self, st: _Model, start: int) -> None:
        st.ref = None
        st.online = {}
        st.running = {}
        st.recent.clear()
        st.recent_emb.clear()
        st.learn_from, st.learn_until = start, start + self.cfg.reference_s

    # -- signals -------------------------------------------------------------------------------

    def _signals(self, model: str, st: _Model, start: int, against: _Window, span: _Window) -> list[Signal]:
        """The sliding ``span``'s tests against ``against`` (``_against``)."""
        ref = st.ref
        assert ref is not None
        feats = ref.features
        if not feats and ref.embedding is None:
            return []
        bins, missing, n = span
        ref_bins, ref_missing, ref_n = against
        emb = ref.embedding
        tests = 2 * len(feats) + (2 if emb is not None else 0)  # distribution and missing rate per feature
        dist = chi2_homogeneity(ref_bins, bins)
        shift = psi(ref_bins, bins)
        miss = two_proportions(ref_missing, ref_n, missing, n)
        present = bins.sum(axis=1)
        ref_present = ref_bins.sum(axis=1)
        ev_psi, ev_miss = self._evidence(feats, ref_bins, bins, shift.effect, missing, n, ref_missing, ref_n)
        ts = datetime.fromtimestamp(start + self.window_s, UTC)
        out = []

        def emit(
            name: str,
            dims: dict[str, str],
            value: float,
            cnt: int,
            p: float,
            base: float | None,
            evidence: dict | None = None,
        ):
            out.append(
                Signal(
                    ts=ts,
                    window=self.window_s,
                    signal=name,
                    model_id=model,
                    model_version=st.version,
                    dims=dims | {"reference": ref.id},
                    value=value,
                    n=cnt,
                    p_value=None if math.isnan(p) else min(1.0, p * tests),
                    baseline=base,
                    **(evidence or {}),
                )
            )

        for i, f in enumerate(feats):
            cnt = int(present[i])
            if f.name.startswith("prediction."):
                dims = {"output": f.name.removeprefix("prediction.")}
                emit("drift.prediction", dims, float(shift.effect[i]), cnt, float(dist.p_value[i]), None,
                     _fields("value", ev_psi, i))  # fmt: skip
            else:
                dims = {"feature": f.name}
                emit("drift.feature", dims, float(shift.effect[i]), cnt, float(dist.p_value[i]), None,
                     _fields("value", ev_psi, i))  # fmt: skip
            emit(
                "drift.missing_rate",
                {"feature": f.name},
                float(missing[i] / n) if n else 0.0,
                n,
                float(miss.p_value[i]),
                float(ref_missing[i] / ref_n) if ref_n else None,
                _fields("delta", ev_miss, i),
            )
            emit(
                "drift.new_category_share",
                {"feature": f.name},
                float(bins[i, f.width - 1] / cnt) if cnt else 0.0,
                cnt,
                _NAN,
                float(ref_bins[i, f.width - 1] / ref_present[i]) if ref_present[i] else None,
            )
        if emb is not None and st.recent_emb:
            total = sum(w[0] for w in st.recent_emb)
            count = sum(w[1] for w in st.recent_emb)
            if count:
                shift = embedding_mean_shift(emb.mean, emb.var, emb.n, total / count, count)
                alpha = look_alpha(self.budget.get("drift.embedding", 0.0), 1, self.window_s)
                ev = embedding_shift_bounds(emb.mean, emb.var, emb.n, total / count, count, alpha)
                emit("drift.embedding", {}, float(shift.effect[0]), count, float(shift.p_value[0]), None,
                     _fields("value", ev, 0))  # fmt: skip
            if count and (start // self.window_s) % self.cfg.sliding_windows == 0:  # once per span
                recent = sorted((x for w in st.recent_emb for x in w[2]), key=itemgetter(0))
                pooled = [v for _, v in recent[:EMBEDDING_SAMPLE]]
                if len(pooled) >= 20:
                    mmd = mmd_rbf(emb.sample, pooled, permutations=100, seed=start)
                    p = float(mmd.p_value[0])
                    emit("drift.embedding_mmd", {}, float(mmd.effect[0]), len(pooled), p, None)
        return out

    def _evidence(
        self,
        feats: list,
        ref_bins: np.ndarray,
        bins: np.ndarray,
        psi_: np.ndarray,
        missing: np.ndarray,
        n: int,
        ref_missing: np.ndarray,
        ref_events: int,
    ) -> tuple[Bounds, Bounds]:
        """Budgeted bounds of each feature's PSI (drift.feature and drift.prediction share out their
        budgets over their own features) and of its missing share's difference with the reference."""
        n_eff = _n_eff(ref_bins, bins)
        df = ((ref_bins + bins) > 0).sum(axis=1) - 1
        is_pred = np.array([f.name.startswith("prediction.") for f in feats], dtype=bool)
        alpha = np.empty(len(feats))
        for mask, name in ((is_pred, "drift.prediction"), (~is_pred, "drift.feature")):
            tested = int((mask & (n_eff > 0)).sum())
            alpha[mask] = look_alpha(self.budget.get(name, 0.0), tested, self.window_s)
        lo, hi = np.full(len(feats), math.nan), np.full(len(feats), math.nan)
        for a in np.unique(alpha):  # one inversion per budget level
            sel = alpha == a
            b = divergence_bounds(psi_[sel], n_eff[sel], df[sel], float(a))
            lo[sel], hi[sel] = b.lower, b.upper
        miss_alpha = look_alpha(self.budget.get("drift.missing_rate", 0.0), len(feats), self.window_s)
        miss = diff_bounds(missing, n, ref_missing.astype(np.float64), ref_events, miss_alpha)
        return Bounds(lo, hi), miss

    def _online(
        self, model: str, st: _Model, start: int, counts: _Counts, hours: _Window | None = None
    ) -> list[Signal]:
        """Step each numeric feature's Page-Hinkley test with this window's mean bin, in standard
        errors from the mean of all before it (``recursive_shift_z``), or, once the model has a
        daily profile, from the mean of the profile's ``hours`` around this one's time of day (a
        score that follows the day is then no change)."""
        ref = st.ref
        assert ref is not None
        out = []
        ts = datetime.fromtimestamp(start + self.window_s, UTC)
        for i, f in enumerate(ref.features):
            det = st.online.get(f.name)
            if det is None:
                continue
            ordered = f.width - 1  # the last bin (values the reference never had) has no order
            # against the mean of everything before this window (the reference, then each window)
            prior = (
                _mean_bin(hours[0][i, :ordered])
                if hours is not None
                else st.running.get(f.name) or _reference_mean(f)
            )
            ref_bins, cur_bins = f.counts[:ordered], counts.bins[i, :ordered]
            z, mean, cur_n = recursive_shift_z(ref_bins, cur_bins, prior[0], prior[1])
            n = int(cur_n[0])
            if not n or not math.isfinite(z[0]):
                continue
            st.running[f.name] = (float((prior[0] * prior[1] + mean[0] * n) / (prior[1] + n)), prior[1] + n)
            det.update(float(z[0]))
            name = "drift.change"
            out.append(
                Signal(
                    ts=ts,
                    window=self.window_s,
                    signal=name,
                    model_id=model,
                    model_version=st.version,
                    dims={"feature": f.name, "reference": ref.id},
                    value=1.0 if det.drift_detected else 0.0,
                    n=n,
                )
            )
        return out

    # -- lifecycle -----------------------------------------------------------------------------

    def restore(self, model: str, state: bytes) -> None:
        """Take a model's state from ``snapshot_dirty`` output (before any of its events are observed)."""
        s = msgspec.msgpack.decode(state, type=_State)
        if s.v not in (1, 2, STATE_VERSION):
            return
        st = _Model(s.learn_from, 0)
        st.learn_until, st.threshold, st.version, st.ref = s.learn_until, s.threshold, s.version, s.ref
        st.sample = [(h, eid, row) for h, eid, row in s.sample]
        st.online = pickle.loads(s.online) if s.online else {}  # raiwatch wrote it: its own checkpoint
        st.running = {name: (m, n) for name, m, n in s.running}
        st.recent_emb = deque((np.array(t), n, [(h, v) for h, v in smp]) for t, n, smp in s.recent_emb)
        st.recent = deque(_window(w) for w in s.recent)
        st.profile_from = s.profile_from
        st.profile = [None if w is None else _window(w) for w in s.profile]
        st.online_profiled = s.online_profiled
        self._models[model] = st

    @staticmethod
    def _encode(st: _Model) -> bytes:
        return msgspec.msgpack.encode(
            _State(
                STATE_VERSION,
                st.learn_from,
                st.learn_until,
                st.threshold,
                st.sample,
                st.ref,
                [_listed(w) for w in st.recent],
                st.version,
                pickle.dumps(st.online) if st.online else b"",
                [(t.tolist(), n, smp) for t, n, smp in st.recent_emb],
                [(name, m, n) for name, (m, n) in sorted(st.running.items())],
                st.profile_from,
                [None if w is None else _listed(w) for w in st.profile],
                st.online_profiled,
            )
        )


def _window(w: tuple[list[list[int]], list[int], int]) -> _Window:
    bins = np.array(w[0], dtype=np.int64)
    return bins.reshape(len(w[1]), -1) if w[1] else bins.reshape(0, 1), np.array(w[1], dtype=np.int64), w[2]


def _listed(w: _Window) -> tuple[list[list[int]], list[int], int]:
    return w[0].tolist(), w[1].tolist(), w[2]


def _fields(of: str, b: Bounds, i: int) -> dict:
    """Row ``i`` of evidence bounds as Signal fields (none where nothing was measured)."""
    lo, hi = float(b.lower[i]), float(b.upper[i])
    if math.isnan(lo) and math.isnan(hi):
        return {}
    return {
        "evidence_of": of,
        "evidence_lower": None if math.isnan(lo) else lo,
        "evidence_upper": None if math.isnan(hi) else hi,
    }


def _reference_mean(f: _Feature) -> tuple[float, float]:
    """A numeric feature's mean bin and value count in its reference (its ordered bins only)."""
    return _mean_bin(f.counts[: f.width - 1])


def _mean_bin(ordered: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """The mean bin of counts in ordered bins, and their total."""
    counts = np.asarray(ordered, dtype=np.float64)
    total = counts.sum()
    return (float((counts * np.arange(len(counts))).sum() / total) if total else 0.0), float(total)
