"""The evaluation join: ``gen_ai.evaluation.result`` events become verdicts on the operation they judge.

OpenTelemetry ships an operation's span and the evaluations of its answer separately (spans and
logs topics, different batch timers), in either order. So the events mapped from OTLP spans are
*held* in their event-time window instead of being observed at once, and the window's close
hands them to the monitors (``release``): an evaluation that arrives while its operation's window
is open is joined — by span id (its log record's context) or by ``gen_ai.response.id`` — and,
if the mapping calls it a safety verdict, becomes the event's ``safety`` scores, violations and
action. The outcome then depends only on event time and the watermark, as lateness does, so a
replay and a stream (and a restarted worker) join alike.

What can happen to an evaluation is counted (``raiwatch_otlp_evaluations_total{result}``):

- ``joined``: its operation was held; a safety verdict now rides on it.
- ``early``: no operation yet; it waits until its own window closes (at most ``max_early``), and
  is then ``joined`` if the operation came, else ``unmatched``.
- ``label``: a quality evaluation, or a safety one whose operation was already counted (late):
  a feedback-event.v1 label, joined by the quality monitor as any label is.
- ``unmapped``: its ``gen_ai.evaluation.name`` is not in the mapping; ``evicted``: dropped from a
  full early buffer.

Durability needs no state of its own: a held operation's message and an early evaluation's
message both feed an open window (the evaluation its own, which ends no earlier than its
operation's), so neither offset is committed before the joined result is written; after kill -9
both are read again and join again. Memory: at most ``max_held`` operations are held; past it,
the oldest window's are handed to the monitors at once (``released_early``: counted without the
verdicts still to come).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from msgspec import UNSET

from raiwatch.core import metrics
from raiwatch.core.config import OtelConfig
from raiwatch.core.otelmap import OtelMapping, load_mapping
from raiwatch.core.otlp import Evaluation, SpansDecoded
from raiwatch.core.records import FeedbackEvent, Safety, TelemetryEvent

RESULTS = ("joined", "early", "label", "unmatched", "unmapped", "evicted", "released_early")


class EvaluationJoin:
    """Holds OTLP-mapped events per window and joins evaluations to them (see the module docstring)."""

    def __init__(self, mapping: OtelMapping, max_held: int = 200_000, max_early: int = 50_000,
                 remember: int = 200_000):  # fmt: skip
        self.mapping = mapping
        self.max_held = max_held
        self.max_early = max_early
        self.remember = remember
        self._held: dict[int, dict[str, TelemetryEvent]] = {}  # window -> event_id -> event
        self._window_of: dict[str, int] = {}  # held event_id -> window
        self._response: dict[str, str] = {}  # gen_ai.response.id -> event_id, held or released
        self._released: OrderedDict[str, str] = OrderedDict()  # event_id -> model, recently released
        self._early: OrderedDict[int, tuple[Evaluation, int]] = OrderedDict()  # seq -> (evaluation, window)
        self._seq = 0
        self.counts: Counter[str] = Counter()

    @classmethod
    def from_config(cls, otel: OtelConfig) -> EvaluationJoin:
        """The join the ``otel`` settings ask for (``ConfigError`` when the mapping file is bad)."""
        return cls(load_mapping(otel.mapping), otel.max_held, otel.max_early)

    @property
    def held(self) -> int:
        return len(self._window_of)

    # -- operations ---------------------------------------------------------------------------

    def hold(
        self, events: Sequence[TelemetryEvent], starts: Sequence[int], decoded: SpansDecoded
    ) -> tuple[list[TelemetryEvent], list[int], list[tuple[int, FeedbackEvent]]]:
        """Hold counted events in their windows and join the evaluations their spans carried (span
        events). Returns what must be observed now instead (over ``max_held``: the oldest window's),
        and the labels those evaluations became."""
        response_ids = decoded.response_ids
        for ev, start in zip(events, starts, strict=True):
            self._held.setdefault(start, {})[ev.event_id] = ev
            self._window_of[ev.event_id] = start
            rid = response_ids.get(ev.event_id)
            if rid:
                self._response[rid] = ev.event_id
        labels = self._retry_early() if self._early else []
        now_events: list[TelemetryEvent] = []
        now_starts: list[int] = []
        while self.held > self.max_held:
            oldest = min(self._held)
            out = self.release(oldest)
            self._count("released_early", len(out))
            now_events += out
            now_starts += [oldest] * len(out)
        labels += self.add(decoded.evaluations, [None] * len(decoded.evaluations))
        return now_events, now_starts, labels

    def release(self, start: int) -> list[TelemetryEvent]:
        """The held events of window ``start`` (it is closing); early evaluations whose own window
        this is give up (``unmatched``)."""
        out = list(self._held.pop(start, {}).values())
        for ev in out:
            del self._window_of[ev.event_id]
            self._released[ev.event_id] = ev.model.id
        while len(self._released) > self.remember:
            self._released.popitem(last=False)
        if len(self._response) > self.remember + self.held:
            live = set(self._released) | self._window_of.keys()
            self._response = {r: e for r, e in self._response.items() if e in live}
        if self._early:
            gone = [k for k, (_, w) in self._early.items() if w <= start]
            for k in gone:
                del self._early[k]
            self._count("unmatched", len(gone))
        return out

    def forget(self, models: Collection[str]) -> None:
        """Drop the held events of these models (their partitions left this worker; the next
        owner re-reads them)."""
        for start, evs in list(self._held.items()):
            for eid in [eid for eid, ev in evs.items() if ev.model.id in models]:
                del evs[eid]
                del self._window_of[eid]
            if not evs:
                del self._held[start]

    # -- evaluations ----------------------------------------------------------------------------

    def add(
        self, evaluations: Sequence[Evaluation], windows: Sequence[int | None]
    ) -> list[tuple[int, FeedbackEvent]]:
        """Join evaluations (``windows``: each one's own open window, None when that had closed);
        returns the labels to hand to the quality monitor, with the message each came in."""
        labels: list[tuple[int, FeedbackEvent]] = []
        for e, w in zip(evaluations, windows, strict=True):
            safety = self.mapping.safety.get(e.name)
            quality = self.mapping.quality.get(e.name)
            if safety is None and quality is None:
                self._count("unmapped")
                continue
            target = self._target(e)
            if target is not None and safety is not None and target in self._window_of:
                self._apply(target, e)
                self._count("joined")
                if quality is not None:
                    labels.append((e.index, self._label(target, e)))
                continue
            if target is not None and (target in self._released or target in self._window_of):
                labels.append((e.index, self._label(target, e)))
                self._count("label")
                continue
            if w is None:
                self._count("unmatched")
                continue
            self._early[self._seq] = (e, w)
            self._seq += 1
            self._count("early")
            if len(self._early) > self.max_early:
                self._early.popitem(last=False)
                self._count("evicted")
        return labels

    def _target(self, e: Evaluation) -> str | None:
        """The event id of the operation an evaluation judges: by span, else by response id."""
        if e.event_id and (e.event_id in self._window_of or e.event_id in self._released):
            return e.event_id
        if e.response_id:
            return self._response.get(e.response_id)
        return None

    def _retry_early(self) -> list[tuple[int, FeedbackEvent]]:
        """Early evaluations whose operation is now held join it; quality ones become its labels."""
        labels = []
        for k, (e, _) in list(self._early.items()):
            target = self._target(e)
            if target is None or target not in self._window_of:
                continue
            del self._early[k]
            if e.name in self.mapping.safety:
                self._apply(target, e)
            if e.name in self.mapping.quality:
                labels.append((e.index, self._label(target, e)))
            self._count("joined")
        return labels

    def _apply(self, event_id: str, e: Evaluation) -> None:
        """Put a safety verdict on the held event."""
        rule = self.mapping.safety[e.name]
        ev = self._held[self._window_of[event_id]][event_id]
        s = ev.safety or Safety()
        scores = dict(s.scores or {})
        if rule.score and e.score is not None:
            scores[rule.category] = min(1.0, max(0.0, e.score))
        violations = list(s.violations or [])
        if rule.violated(e.label, e.score) and rule.category not in violations:
            violations.append(rule.category)
        action = rule.action_labels.get(e.label, s.action) if e.label is not None else s.action
        ev.safety = Safety(scores=scores or UNSET, violations=violations, action=action)

    def _label(self, event_id: str, e: Evaluation) -> FeedbackEvent:
        quality = self.mapping.quality.get(e.name)
        return FeedbackEvent(
            schema_version=1,
            event_id=event_id,
            timestamp=datetime.fromtimestamp(e.ts, UTC),
            label=e.label,
            favorable=quality.favorable(e.label, e.score) if quality is not None else None,
            value=e.score,
            source=f"otel:{e.name}"[:64],
        )

    def _count(self, result: str, n: int = 1) -> None:
        if n:
            self.counts[result] += n
            metrics.OTLP_EVALUATIONS.labels(result).inc(n)
