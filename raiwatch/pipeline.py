"""The one pipeline: decode → check time → drop duplicates → window → monitors → signals → rules → storage.

The Kafka worker and the replay driver are thin loops around ``Pipeline.process``; nothing
about statistics, rules or storage lives in them, which is why a stream and a replay of the
same events open the same incidents.

Every input ends in exactly one place: an event counted in a window (or stored as late,
replayed or duplicate), or a rejection with its reason. A batch's writes run in order on one
writer thread, beside the decoding and monitoring of the next batches (batches that queued while
it was busy are written together, one insert per table: ``raiwatch.writequeue``): rejections, raw
events, signals, the monitors' own rows (abuse clusters), incident store, incident mirror,
notifiers, the checkpoint that says windows are done, the rollups up to them (every
``clickhouse.rollup_every_s``), and last the observers (the drift reporter), which see the written
signals and changes.
``BatchResult.durable`` is done when they are: a caller may commit the input offset of an event
once that is done and the event's window is no longer in ``open_windows()``. A window stays there
from its first event until its results are queued for writing and (live) its checkpoint is
written: if closing it raises (a monitor, the rules, the writer), it never leaves, so no offset of
its events is ever committed.

``live`` (the streaming worker) adds what only a long-running process needs: the age check
against the wall clock, checkpoints of the window clock and of each model's monitor state (at
most every ``kafka.commit_interval_s``, and on ``flush``), and their restore when a partition is
assigned or a model first seen; then too the ids of the model's events already counted (read back
from the stored events, which are durable before the clock's checkpoint) refill the memory of
recent ids, so a copy sent after a restart is still a duplicate.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import NamedTuple

import msgspec
import numpy as np

from alert_rules import RuleEngine
from monitors.base import STATE_SEP, Monitor
from monitors.dedup import RecentIds
from monitors.windows import OK, REPLAYED, WindowClock
from raiwatch.core import metrics
from raiwatch.core.batch import BatchResult
from raiwatch.core.catalogue import Catalogue
from raiwatch.core.codec import Decoded, Rejected, feedback_codec, telemetry_codec
from raiwatch.core.columns import EventColumns, positions
from raiwatch.core.config import Config
from raiwatch.core.errors import StorageError
from raiwatch.core.otlp import OtlpLogs, SpanDecoder
from raiwatch.core.records import SEVERITIES, FeedbackEvent, IncidentChange, Signal, TelemetryEvent
from raiwatch.evaljoin import EvaluationJoin
from raiwatch.writequeue import WriteQueue
from storage.clickhouse import ClickHouseWriter, Rollups, read_checkpoints, recent_event_ids, recent_signals
from storage.incidents import IncidentStore
from storage.incidents.store import Route

log = logging.getLogger("raiwatch.pipeline")

Notify = Callable[[list[IncidentChange]], None]
Observe = Callable[[Sequence[Signal], Sequence[IncidentChange]], None]  # sees each written batch
CLOCK = "clock"  # checkpoint kind of a source's window-clock position
CATCH_UP_HOURS = 2  # hours of rows a live worker's roll-up inserts per family at most
MIRROR_EVERY_S = 5.0  # a live worker copies on-call's incident changes to ClickHouse this often
# events waiting for the writer thread (or kafka.batch_size twice, or one batch, if more), then
# written together; the pipeline waits beyond that, so a ClickHouse outage pauses the input soon
MAX_QUEUED = 10_000
# live: the writer waits this long for more batches to write together (each insert has a fixed
# cost; 200,000 events streamed in batches of 500: writer 12.3 -> 4.5 s, 12,601 -> 14,369 events/s;
# of 5,000: 62 -> 33 writes, writer 8.2 -> 6.3 s)
WRITE_LINGER_S = 0.5
_DECODE, _OBSERVE, _CLOSE, _RULES, _PREPARE, _WRITE = (
    metrics.STAGE_SECONDS.labels(stage)
    for stage in ("decode", "observe", "close", "rules", "prepare", "write")
)


def _span(seconds: float) -> str:
    """``90061`` -> ``1.0 days``; short spans in s, min or h."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


class Pipeline:
    """Stateful per-worker pipeline; one instance owns its ClickHouse path and incident store."""

    def __init__(
        self,
        cfg: Config,
        monitors: Sequence[Monitor],
        engine: RuleEngine,
        writer: ClickHouseWriter,
        store: IncidentStore,
        notify: Sequence[Notify] = (),
        *,
        live: bool = False,
        wall: Callable[[], float] = time.time,
        catalogue: Catalogue | None = None,
        observers: Sequence[Observe] = (),
        routes: Route | None = None,
    ):
        self.cfg = cfg
        self.routes = routes  # which receivers each incident change is queued for (the outbox)
        self.export = metrics.SignalExport(catalogue or Catalogue([]))
        w = cfg.windows
        self.clock = WindowClock(w.size_s, w.allowed_lateness_s, w.watermark_confirm)
        self.monitors = list(monitors)
        self.monitor_seconds = dict.fromkeys((m.family for m in self.monitors), 0.0)  # observe + close
        self.engine = engine
        self.writer = writer
        self.store = store
        self.notify = list(notify)
        self.observers = list(observers)
        self.live = live
        self.wall = wall
        self.events_in = 0
        self.feedback_in = 0
        self.signals_out = 0
        self.storage_rejected: list[Rejected] = []  # replay reads these after its last flush
        self._idle: set[Hashable] = set()
        self._unwritten: set[int] = set()  # windows closed in the clock whose results are not queued yet
        self._recent: dict[Hashable, RecentIds] = {}
        self._models_of: dict[Hashable, set[str]] = {}  # models whose events came from each source
        self._known: set[str] = set()  # live: models whose state is in memory (restored or new)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raiwatch-write")
        self._mirror_cursor = 0  # incident store history line last copied to ClickHouse
        self._next_mirror = 0.0
        self._writes: WriteQueue[_Writes, list[Rejected]] = WriteQueue(
            self._io,
            self._write,
            max(MAX_QUEUED, 2 * cfg.kafka.batch_size),
            size=lambda b: len(b.raws),
            linger_s=WRITE_LINGER_S if live else 0.0,
        )
        self._reload: RuleEngine | None = None  # new rules, built elsewhere, waiting for the pipeline thread
        self.evaluations: EvaluationJoin | None = None  # OTLP input: operations wait for their evaluations
        # a live worker catches up on unrolled history a few hours per roll-up, not all at once
        self.rollups = (
            Rollups(cfg.clickhouse.database, max_chunks=CATCH_UP_HOURS if live else None)
            if cfg.clickhouse.rollups
            else None
        )
        self._next_roll = 0.0
        # live: windows closed (with signals) whose monitor state is not checkpointed yet, and those
        # whose checkpoint is queued with the write it waits for; both count as open
        self._uncheckpointed: set[int] = set()
        self._checkpointing: list[tuple[frozenset[int], Future]] = []
        self._next_checkpoint = 0.0

    def request_reload(self, engine: RuleEngine) -> None:
        """Hand over new rules (any thread): an engine already built on rules that lint, by the
        caller's thread (a bad file costs the pipeline nothing). The pipeline thread swaps it in
        between batches."""
        self._reload = engine

    def _swap_rules(self) -> None:
        engine, self._reload = self._reload, None
        if engine is None:
            return
        self.flush()
        old = self.engine
        self.engine = engine
        try:  # open incidents and pending timers carried over from the stored signals
            self.warm_start(models=self._known if self.live else None)
        except Exception:
            self.engine = old
            raise
        metrics.RULE_RELOADS.labels("ok").inc()
        metrics.RULES_RELOAD_OK.set(1)
        log.info("rules reloaded: %d rules", len(engine.rules))

    def warm_start(
        self, lookback: timedelta | None = None, models: Collection[str] | None = None
    ) -> list[IncidentChange]:
        """Restore rule state after a restart or a partition move: open incidents from the store,
        then recent signals (of ``models`` only, if given).

        Re-feeding the last ``lookback`` of stored signals rebuilds pending ``for`` timers that
        were in memory in the worker that wrote them; changes it yields are idempotent.
        """
        wanted = None if models is None else set(models)
        if wanted is not None and not wanted:
            return []
        self.engine.restore(
            i for i in self.store.open_incidents() if wanted is None or i.labels.get("model_id") in wanted
        )
        lookback = lookback or timedelta(hours=1)
        db = self.cfg.clickhouse.database
        of = None if wanted is None else sorted(wanted)
        latest = self._read("reading the latest signals", recent_signals, db, None, of)
        if not latest:
            return []
        since = max(s.ts for s in latest) - lookback
        signals = self._read("reading recent signals", recent_signals, db, since, of)
        changes = self.engine.evaluate(signals)
        self._submit(changes=changes)
        self.flush()
        return changes

    # -- the batch path -----------------------------------------------------------------------

    def process(
        self,
        raws: Sequence[bytes],
        sources: Sequence[Hashable],
        origin: Callable[[int], str] | None = None,
        codec: SpanDecoder | None = None,
    ) -> BatchResult:
        """Decode, check, window and monitor a batch, evaluate the windows it closes, queue its writes.

        ``codec``: OTLP span messages (``raiwatch.core.otlp``) instead of telemetry-event.v1; one
        message then feeds many events, and its ``windows`` entry is the latest window they fed.
        At most one batch's writes are in flight: a failed write raises from the next call.
        """
        if self._reload is not None:
            self._swap_rules()
        with metrics.BATCH_SECONDS.time():
            t0 = time.perf_counter()
            decoded = (codec or telemetry_codec).decode_batch(raws, origin)
            _DECODE.observe(time.perf_counter() - t0)
            result = BatchResult(windows=[None] * len(raws), rejected=list(decoded.rejected))
            valid = _Valid.of(decoded, sources)
            self._idle.difference_update(valid.srcs)
            valid = self._check_time(valid, origin, result)
            labels: list[tuple[int, FeedbackEvent]] = []  # OTLP span events that became labels
            if valid.events:
                self._track_models(valid.events, valid.srcs)  # first: a restored model's ids count as seen
                valid = self._drop_redelivered(valid, result)  # what remains is stored
            if valid.events:
                counted_events, counted_starts = self._window(valid, result)
                if codec is not None and self.evaluations is not None:  # counted at their window's close
                    counted_events, counted_starts, labels = self.evaluations.hold(
                        counted_events, counted_starts, decoded
                    )
                t_obs = time.perf_counter()
                self._observe(EventColumns(counted_events, counted_starts))
                _OBSERVE.observe(time.perf_counter() - t_obs)
                if self.live:
                    metrics.EVENT_TIME_LAG.set(max(0.0, self.wall() - self.clock.newest))
            self.events_in += len(valid.events)
            metrics.EVENTS.inc(len(valid.events))
            metrics.LATE.inc(result.late)
            metrics.REPLAYED.inc(result.replayed)
            metrics.DUPLICATES.inc(result.duplicates)
            _count_rejects(result.rejected)
            if codec is not None and labels:
                self._otlp_labels(labels, sources, result)
            closing = self.clock.advance(self._idle, self.wall() if self.live else None)
            with self._writing(closing):
                result.merge(self._close(closing))
                result.durable = self._submit(
                    result.rejected, valid.events, valid.raws, valid.ts, valid.idx, result.signals,
                    result.changes, origin, rows=result.rows, closed=closing,
                )  # fmt: skip
        return result

    def tick(self, idle: Collection[Hashable], now: float) -> BatchResult:
        """Close the windows the watermark passed, given the sources that are idle now; now and then,
        copy what on-call changed in the incident store to the ClickHouse mirror."""
        if self._reload is not None:
            self._swap_rules()
        self._idle = set(idle)
        closing = self.clock.advance(self._idle, now)
        with self._writing(closing):
            result = self._close(closing)
            if result.closed or self._checkpoint_due():
                result.durable = self._submit(
                    signals=result.signals, changes=result.changes, rows=result.rows, closed=closing,
                    linger=False,
                )  # fmt: skip
        if time.monotonic() >= self._next_mirror:
            self._next_mirror = time.monotonic() + MIRROR_EVERY_S
            self._io.submit(self._mirror_store)
        return result

    def mirror_now(self) -> None:
        """Copy the incident store's latest changes to ClickHouse and wait (a worker does it on stop)."""
        self._io.submit(self._mirror_store).result()

    def _mirror_store(self) -> None:
        """Copy incidents changed in the store (acks, feedback, manual resolves) to ClickHouse."""
        try:
            while True:
                changed, cursor = self.store.changed_since(self._mirror_cursor)
                if not changed:
                    return
                self.writer.write_incidents(changed)
                self._mirror_cursor = cursor
        except Exception as e:  # the next round tries again; the mirror only lags meanwhile
            log.warning("copying incident changes to ClickHouse failed (%s); will retry", e)

    def process_feedback(
        self, raws: Sequence[bytes], sources: Sequence[Hashable], origin: Callable[[int], str] | None = None
    ) -> BatchResult:
        """Decode and check delayed labels (feedback-event.v1), hand them to the monitors that join
        them, and queue their writes. Labels belong to no window; a late one is not an error."""
        decoded = feedback_codec.decode_batch(raws, origin)
        result = BatchResult(windows=[None] * len(raws), rejected=list(decoded.rejected))
        valid = self._check_time(_Valid.of(decoded, sources), origin, result, age=False)
        events = valid.events
        joined = False
        for m in self.monitors:
            observe = getattr(m, "observe_feedback", None)
            if observe is not None and events:
                observe(events)
                joined = True
        newest = max(self.clock.open_windows(), default=None)
        if joined and newest is not None:  # a label counts at the next close: commit it after that
            result.windows = [newest] * len(raws)
        self.feedback_in += len(events)
        metrics.FEEDBACK.inc(len(events))
        _count_rejects(result.rejected)
        result.durable = self._submit(result.rejected, feedback=(events, valid.raws))
        return result

    def close_all(self) -> BatchResult:
        """Close every open window, write its results, and wait until everything is written."""
        closing = self.clock.close_all()
        with self._writing(closing):
            result = self._close(closing)
            result.durable = self._submit(
                signals=result.signals,
                changes=result.changes,
                rows=result.rows,
                roll=self._roll_args(force=True),
                closed=closing,
            )
        self.flush()
        return result

    def flush(self) -> list[Rejected]:
        """Checkpoint the windows closed since the last checkpoint, and wait until everything queued
        for writing is written (raises the writer's error)."""
        if self._uncheckpointed:
            self._submit(force_checkpoint=True)
        return self._writes.flush() or []

    def open_windows(self) -> set[int]:
        """Windows whose events' offsets may not be committed yet (bar the writes a result waits for):
        open, closed by a call that raised before their results were queued, or (live) closed but
        not in a written checkpoint yet. Any thread may call it."""
        held = [w for w, fut in list(self._checkpointing) if not _written(fut)]
        return self.clock.open_windows() | self._unwritten | self._uncheckpointed | set().union(*held)

    @contextlib.contextmanager
    def _writing(self, closing: list[int]) -> Iterator[None]:
        """Windows being closed count as open until the block queued their results; if it raises
        (a monitor's close, the rules, the previous batch's writes), they stay open for good."""
        self._unwritten.update(closing)
        yield
        self._unwritten.difference_update(closing)

    # -- OpenTelemetry: evaluation events (issue 24; the spans go through ``process``) --------

    def process_evaluations(
        self,
        raws: Sequence[bytes],
        sources: Sequence[Hashable],
        origin: Callable[[int], str] | None = None,
        codec: OtlpLogs | None = None,
    ) -> BatchResult:
        """OTLP log messages: ``gen_ai.evaluation.result`` events joined to the operations they judge
        (``raiwatch.evaljoin``). Each message is held until the latest window its evaluations fell
        in has closed (an evaluation ends no earlier than its operation); late ones become labels."""
        decoded = (codec or OtlpLogs()).decode_batch(raws, origin)
        result = BatchResult(windows=[None] * len(raws), rejected=list(decoded.rejected))
        evals = decoded.evaluations
        if evals and self.evaluations is not None:
            starts, status = self.clock.assign_batch(
                [sources[e.index] for e in evals], [e.ts for e in evals], move=False
            )
            keep, wins = [], []
            for e, start, st in zip(evals, starts.tolist(), status.tolist(), strict=True):
                if st == REPLAYED:  # its window was written before a restart: so was its verdict
                    continue
                w = start if st == OK else None
                keep.append(e)
                wins.append(w)
                if w is not None:
                    old = result.windows[e.index]
                    result.windows[e.index] = w if old is None else max(old, w)
            labels = self.evaluations.add(keep, wins)
            if labels:
                self._otlp_labels(labels, sources, result)
        _count_rejects(result.rejected)
        closing = self.clock.advance(self._idle, self.wall() if self.live else None)
        with self._writing(closing):
            result.merge(self._close(closing))
            result.durable = self._submit(
                result.rejected,
                signals=result.signals,
                changes=result.changes,
                rows=result.rows,
                closed=closing,
            )
        return result

    def _otlp_labels(self, labels: list[tuple[int, FeedbackEvent]], sources: Sequence[Hashable],
                     result: BatchResult) -> None:  # fmt: skip
        """Hand evaluations that became labels (message index, label) to ``process_feedback``; each
        message is then held as its labels are."""
        sub = self.process_feedback(
            [msgspec.json.encode(fb) for _, fb in labels], [sources[i] for i, _ in labels]
        )
        for (i, _), w in zip(labels, sub.windows, strict=True):
            if w is not None:
                result.windows[i] = w if result.windows[i] is None else max(result.windows[i], w)

    def _observe_held(self, start: int) -> None:
        """The OTLP operations held in window ``start``, with the verdicts joined to them, go to the
        monitors now that it closes."""
        assert self.evaluations is not None
        held = self.evaluations.release(start)
        metrics.OTLP_HELD.set(self.evaluations.held)
        if not held:
            return
        self._observe(EventColumns(held, [start] * len(held)))

    def _observe(self, batch: EventColumns) -> None:
        for m in self.monitors:
            t0 = time.perf_counter()
            m.observe(batch)
            dt = time.perf_counter() - t0
            self.monitor_seconds[m.family] += dt
            metrics.MONITOR_SECONDS.labels(m.family, "observe").inc(dt)

    # -- sources: partitions coming and going -------------------------------------------------

    def assign_sources(self, sources: Collection[Hashable]) -> None:
        """Wait for these sources from now on, each continuing from its last checkpoint (live only)."""
        for s in sources:
            self.clock.add_source(s)
        if not self.live or not sources:
            return
        db = self.cfg.clickhouse.database
        keys = [str(s) for s in sources]
        found = self._read(f"reading the clock checkpoints of {keys}", read_checkpoints, db, CLOCK, keys)
        for s in sources:
            if str(s) in found:
                self.clock.restore(s, found[str(s)][0])

    def revoke_sources(self, sources: Collection[Hashable]) -> None:
        """Drop what this worker holds of these sources: partial windows, models' monitor and rule
        state, ids seen.

        Their events are re-read by the next owner from the last committed offset, and that owner
        restores the models' state from the last checkpoint and their rule state from the store and
        the stored signals. Call ``flush`` first.
        """
        models: set[str] = set()
        until = self.clock.closed_until
        for s in sources:
            models |= self._models_of.pop(s, set())
            self.clock.forget_source(s)
            self._recent.pop(s, None)
            self._idle.discard(s)
        if models:
            if self.evaluations is not None:
                self.evaluations.forget(models)
            for m in self.monitors:
                m.forget(models)
            self.engine.forget(models)
            self._known -= models
            if self.rollups is not None:  # roll their closed windows up first: the next owner goes on
                self._io.submit(self._hand_over, sorted(models), until).result()
        if not self.clock.sources():
            # Kafka's eager rebalances revoke every partition before assigning: start the window
            # clock afresh, so a partition that comes next continues from its own checkpoint even
            # where it is behind how far this worker had closed windows (its events are not late)
            self.clock.reset()
            self._idle.clear()

    # -- internals ----------------------------------------------------------------------------

    def _check_time(
        self, valid: _Valid, origin: Callable[[int], str] | None, result: BatchResult, age: bool = True
    ) -> _Valid:
        """Reject events dated too far in the future (and, live and with ``age``, too far in the past)."""
        if not valid.events:
            return valid
        now = self.wall()
        ing = self.cfg.ingest
        latest = now + ing.max_future_s if ing.max_future_s else math.inf
        earliest = now - ing.max_age_s if age and self.live and ing.max_age_s else -math.inf
        ts = valid.ts
        if earliest <= min(ts) and max(ts) <= latest:
            return valid
        keep = []
        for j, t in enumerate(ts):
            if earliest <= t <= latest:
                keep.append(j)
                continue
            when = valid.events[j].timestamp.isoformat()
            if t > latest:
                why = (
                    f"timestamp {when} is {_span(t - now)} ahead of this worker's clock (limit "
                    f"ingest.max_future_s = {ing.max_future_s:g} s); check the producer's clock"
                )
            else:
                why = (
                    f"timestamp {when} is {_span(now - t)} old (limit ingest.max_age_s = {ing.max_age_s:g} s)"
                )
            i = valid.idx[j]
            kind = "future" if t > latest else "too_old"
            result.rejected.append(Rejected(bytes(valid.raws[j]), why, origin(i) if origin else "", i, kind))
        return valid.take(keep)

    def _drop_redelivered(self, valid: _Valid, result: BatchResult) -> _Valid:
        """``valid`` without the events whose id its source already sent: a re-read after a restart
        of an event a window counted is replayed (stored again, counted once); any other is a
        duplicate, and neither is stored."""
        fresh = self._first_seen(valid.events, valid.srcs)
        if all(fresh):
            return valid
        again = [i for i, f in enumerate(fresh) if not f]
        counted = int(self.clock.counted([valid.srcs[i] for i in again], [valid.ts[i] for i in again]).sum())
        result.replayed += counted
        result.duplicates = len(again) - counted
        return valid.take([i for i, f in enumerate(fresh) if f])

    def _window(self, valid: _Valid, result: BatchResult) -> tuple[list[TelemetryEvent], list[int]]:
        """Assign each event its window: the events counted (not late, not replayed) with their
        window starts; ``result`` gets the late and replayed counts and each input's window, the
        latest its counted events fell in (an OTLP message feeds many)."""
        starts, status = self.clock.assign_batch(valid.srcs, valid.ts)
        ok = status == OK
        n_replayed = int(np.count_nonzero(status == REPLAYED))
        result.replayed += n_replayed
        result.late += len(status) - int(np.count_nonzero(ok)) - n_replayed
        counted = np.flatnonzero(ok)
        counted_starts = starts[counted]
        latest = np.full(len(result.windows), -1, dtype=np.int64)
        np.maximum.at(latest, np.asarray(valid.idx, dtype=np.int64)[counted], counted_starts)
        result.windows = [None if w < 0 else w for w in latest.tolist()]
        return [valid.events[j] for j in counted.tolist()], counted_starts.tolist()

    def _first_seen(self, events: Sequence[TelemetryEvent], srcs: Sequence[Hashable]) -> list[bool]:
        """Whether each event's id is new to its source (a redelivery is not)."""
        cap = self.cfg.ingest.dedup_ids
        if len(set(srcs)) == 1:
            seen = self._recent.get(srcs[0]) or self._recent.setdefault(srcs[0], RecentIds(cap))
            return seen.first_seen([e.event_id for e in events])
        out = [True] * len(events)
        for s, js in positions(srcs).items():
            seen = self._recent.get(s) or self._recent.setdefault(s, RecentIds(cap))
            for j, new in zip(js, seen.first_seen([events[j].event_id for j in js]), strict=True):
                out[j] = new
        return out

    def _track_models(self, events: Sequence[TelemetryEvent], srcs: Sequence[Hashable]) -> None:
        """Remember which source feeds each model (the models whose rows this pipeline rolls up); live,
        restore the monitor and rule state, and the ids counted, of models new to memory (after a
        restart, or when a partition moved here from another worker)."""
        pairs = set(zip([e.model.id for e in events], srcs, strict=True))
        for model, src in pairs:
            self._models_of.setdefault(src, set()).add(model)
        if not self.live:
            return
        new = sorted({m for m, _ in pairs} - self._known)
        if not new:
            return
        db = self.cfg.clickhouse.database
        self._restore_ids({(m, s) for m, s in pairs if m in new})
        for m in self.monitors:
            keys = new + (list(getattr(m, "shared_keys", ())) if not self._known else [])
            prefixes = [f"{model}{STATE_SEP}" for model in new]
            states = self._read(
                f"restoring {m.family} state of {len(new)} models",
                read_checkpoints,
                db,
                m.family,
                keys,
                prefixes,
            )
            for key, (_, state) in sorted(states.items()):
                m.restore(key, state)
        self.warm_start(models=new)
        self._known.update(new)

    def _restore_ids(self, pairs: Collection[tuple[str, Hashable]]) -> None:
        """Refill each source's memory of recent ids with the stored events of models new to this
        worker that its windows had counted before a restart (dated before its restored clock)."""
        db, cap = self.cfg.clickhouse.database, self.cfg.ingest.dedup_ids
        for model, src in sorted(pairs, key=str):
            until = self.clock.restored(src)
            if not math.isfinite(until):
                continue
            ids = self._read(f"reading the event ids of {model}", recent_event_ids, db, model, until, cap)
            seen = self._recent.get(src) or self._recent.setdefault(src, RecentIds(cap))
            seen.remember(ids)

    def _close(self, starts: list[int]) -> BatchResult:
        result = BatchResult(closed=list(starts))
        for start in starts:
            if self.evaluations is not None:
                self._observe_held(start)
            signals: list[Signal] = []
            t_close = time.perf_counter()
            for m in self.monitors:
                t0 = time.perf_counter()
                signals.extend(m.close(start))
                drain = getattr(m, "drain_rows", None)
                if drain is not None:
                    result.rows += drain()
                dt = time.perf_counter() - t0
                self.monitor_seconds[m.family] += dt
                metrics.MONITOR_SECONDS.labels(m.family, "close").inc(dt)
            _CLOSE.observe(time.perf_counter() - t_close)
            if not signals:
                continue
            self.signals_out += len(signals)
            self.export(signals)
            t0 = time.perf_counter()
            changes = self.engine.evaluate(signals)
            _RULES.observe(time.perf_counter() - t0)
            result.signals += signals
            result.changes += changes
        if result.changes:
            for c in result.changes:
                metrics.INCIDENT_CHANGES.labels(c.kind, c.incident.severity).inc()
            firing = Counter(i.severity for i in self.engine.firing())
            for sev in SEVERITIES:
                metrics.FIRING.labels(sev).set(firing[sev])
        metrics.WATERMARK.set(max(self.clock.closed_until, 0))
        metrics.OPEN_WINDOWS.set(len(self.clock.open_windows()))
        return result

    def _checkpoint_due(self) -> bool:
        return bool(self._uncheckpointed) and time.monotonic() >= self._next_checkpoint

    def _checkpoint_rows(self) -> list[tuple[str, str, float, bytes]]:
        until = self.clock.closed_until
        if not self.live or not math.isfinite(until):
            return []
        rows = [(CLOCK, str(s), until, b"") for s in sorted(self.clock.sources(), key=str)]
        for m in self.monitors:
            rows += [(m.family, model, until, state) for model, state in m.snapshot_dirty().items()]
        return rows

    def _submit(
        self,
        rejected: Sequence[Rejected] = (),
        events: Sequence[TelemetryEvent] = (),
        raws: Sequence[bytes] = (),
        ts: Sequence[float] = (),
        idx: Sequence[int] = (),
        signals: Sequence[Signal] = (),
        changes: Sequence[IncidentChange] = (),
        origin: Callable[[int], str] | None = None,
        feedback: tuple[Sequence[FeedbackEvent], Sequence[bytes]] = ((), ()),
        rows: Sequence[tuple[str, tuple[str, ...], list[tuple]]] = (),
        roll: tuple[list[str], float] | None = None,
        closed: Sequence[int] = (),
        force_checkpoint: bool = False,
        linger: bool = True,
    ) -> Future[list[Rejected]]:
        """Queue one batch's writes behind the batches queued before it (``WriteQueue``: while the
        writer thread is busy, batches queue up to ``MAX_QUEUED`` events and are then written together).

        Live, the windows it ``closed`` with signals are checkpointed (window clock, each changed
        model's monitor state) with it or, at most ``kafka.commit_interval_s`` later, with a later
        batch or ``flush``: offsets are committed no more often, and a model's state, encoded once
        per checkpoint rather than once per batch, costs the pipeline thread a fraction.
        ``linger=False`` (a tick's results: the input is idle) writes without waiting for more."""
        t0 = time.perf_counter()
        if self.live and signals:
            self._uncheckpointed.update(closed)
        checkpoint = self._checkpoint_due() or (force_checkpoint and bool(self._uncheckpointed))
        checkpoints = self._checkpoint_rows() if checkpoint else []
        if roll is None and signals:
            roll = self._roll_args()
        columns = self.writer.event_columns(events, raws, ts)  # the Python part, beside the writer's work
        _PREPARE.observe(time.perf_counter() - t0)
        batch = _Writes(
            list(rejected), columns, raws, idx, list(signals), list(changes), checkpoints, origin,
            feedback, list(rows), roll,
        )  # fmt: skip
        fut = self._writes.submit(batch, linger)
        if checkpoint:
            self._checkpointing = [(w, f) for w, f in self._checkpointing if not _written(f)]
            self._checkpointing.append((frozenset(self._uncheckpointed), fut))
            self._uncheckpointed = set()  # after the line above: a reader sees them in one or the other
            self._next_checkpoint = time.monotonic() + self.cfg.kafka.commit_interval_s
        return fut

    def _write(self, group: Sequence[_Writes]) -> list[list[Rejected]]:
        """The writes of a group of batches, in order, one insert per table (runs on the writer
        thread); returns what ClickHouse refused, per batch."""
        w = self.writer
        with _WRITE.time():
            with _sink("rejected_events"):
                w.write_rejected([(r.source, r.reason, r.raw) for b in group for r in b.rejected])
            with _sink("telemetry_events"):
                refused = w.write_event_columns(_concat([b.columns for b in group]))
            late_rejects = _refused_events(group, refused)
            late = [r for batch in late_rejects for r in batch]
            if late:
                log.error("ClickHouse refused %d events; sent to the rejected events", len(late))
                _count_rejects(late)
                with _sink("rejected_events"):
                    w.write_rejected([(r.source, r.reason, r.raw) for r in late])
                self.storage_rejected += late
            with _sink("feedback_events"):
                w.write_feedback(
                    [e for b in group for e in b.feedback[0]], [r for b in group for r in b.feedback[1]]
                )
            signals = [s for b in group for s in b.signals]
            with _sink("signals"):
                w.write_signals(signals)
            tables: dict[tuple[str, tuple[str, ...]], list[tuple]] = {}
            for b in group:
                for table, names, table_rows in b.rows:
                    tables.setdefault((table, tuple(names)), []).extend(table_rows)
            for (table, names), table_rows in tables.items():
                with _sink(table):
                    w.write_rows(table, names, table_rows)
            changes = [c for b in group for c in b.changes]
            if changes:
                with _sink("incident_store"):
                    stored = self.store.apply(changes, self.routes)
                with _sink("incidents"):
                    w.write_incidents(stored)  # as stored: with on-call's acks, which the engine never sees
                for fn in self.notify:
                    try:
                        fn(changes)
                    except Exception:  # a broken notifier must not stop the pipeline
                        log.exception("notifier %r failed", fn)
            # a later batch's checkpoint of a model supersedes an earlier one's
            checkpoints = {(r[0], r[1]): r for b in group for r in b.checkpoints}
            with _sink("checkpoints"):
                w.write_checkpoints(list(checkpoints.values()))
            roll = next((b.roll for b in reversed(group) if b.roll is not None), None)
            if roll is not None:
                self._roll_up(*roll)
            if signals or changes:
                for obs in self.observers:
                    try:
                        obs(signals, changes)
                    except Exception:  # an observer (a report queue) must not stop the pipeline
                        log.exception("observer %r failed", obs)
        return late_rejects

    def _roll_up(self, models: list[str], until: float) -> None:
        """Advance the rollups (on the writer thread). A failure is logged and counted, not raised:
        the rollups lag, the monitoring goes on, and the next roll-up continues from the cursors."""
        rollups, w = self.rollups, self.writer
        assert rollups is not None
        try:
            with _sink("rollups"):
                done = w.call(
                    "rolling up signals and events", lambda: rollups.advance(w.client, models, until)
                )
            if done:
                metrics.ROLLED_UP.set(until)
        except StorageError as e:
            log.error("rollups not advanced: %s", e)

    def _hand_over(self, models: list[str], until: float) -> None:
        if models and math.isfinite(until):
            self._roll_up(models, until)
        assert self.rollups is not None
        self.rollups.forget(models)

    def roll_up_now(self) -> None:
        """Roll every closed window up now and wait (a worker does it on stop)."""
        args = self._roll_args(force=True)
        if args is not None:
            self._io.submit(self._roll_up, *args).result()

    def _roll_args(self, force: bool = False) -> tuple[list[str], float] | None:
        """The models to roll up and how far (the closed-until time), when a roll-up is due."""
        if self.rollups is None or not math.isfinite(self.clock.closed_until):
            return None
        now = time.monotonic()
        if not force and now < self._next_roll:
            return None
        models = set().union(*self._models_of.values())
        if not models:
            return None
        self._next_roll = now + self.cfg.clickhouse.rollup_every_s
        return sorted(models), self.clock.closed_until

    def _read(self, what: str, query: Callable, *args: object):
        """Run ``query(client, *args)`` on the writer thread, after the writes queued before it, under
        the writer's retry policy."""
        w = self.writer
        return self._io.submit(w.call, what, lambda: query(w.client, *args)).result()


class _sink:
    """Time a write to a ClickHouse table in ``raiwatch_clickhouse_write_seconds`` (the incident
    store is not one), and count a failed one in ``raiwatch_write_failures_total``."""

    def __init__(self, name: str):
        self.name = name
        self.t0 = 0.0

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            metrics.WRITE_FAILURES.labels(self.name).inc()
        elif self.name != "incident_store":
            metrics.CLICKHOUSE_WRITE_SECONDS.labels(self.name).observe(time.perf_counter() - self.t0)
        return False


class _Valid(NamedTuple):
    """A batch's valid events, field by field in the same order: what each check keeps of it."""

    events: list
    raws: list[bytes]
    idx: list[int]  # each event's position in the input batch
    ts: list[float]  # epoch seconds
    srcs: list[Hashable]  # each event's source (its partition)

    @classmethod
    def of(cls, decoded: Decoded, sources: Sequence[Hashable]) -> _Valid:
        idx = decoded.indexes
        return cls(decoded.events, decoded.raws, idx, decoded.ts, [sources[i] for i in idx])

    def take(self, keep: Sequence[int]) -> _Valid:
        """The events at positions ``keep``."""
        return _Valid(*([x[i] for i in keep] for x in self))


class _Writes(NamedTuple):
    """One batch's writes, as ``Pipeline._submit`` queues them."""

    rejected: list[Rejected]
    columns: list[list]  # ClickHouseWriter.event_columns
    raws: Sequence[bytes]
    idx: Sequence[int]
    signals: list[Signal]
    changes: list[IncidentChange]
    checkpoints: list[tuple[str, str, float, bytes]]
    origin: Callable[[int], str] | None
    feedback: tuple[Sequence[FeedbackEvent], Sequence[bytes]]
    rows: list[tuple[str, tuple[str, ...], list[tuple]]]
    roll: tuple[list[str], float] | None


def _written(fut: Future) -> bool:
    """Whether a batch's writes are done and did not fail."""
    return fut.done() and fut.exception() is None


def _concat(tables: list[list[list]]) -> list[list]:
    """Column lists of several batches joined, column by column."""
    if len(tables) == 1:
        return tables[0]
    return [[v for t in tables for v in t[c]] for c in range(len(tables[0]))]


def _refused_events(group: Sequence[_Writes], refused: list[tuple[int, str]]) -> list[list[Rejected]]:
    """Rows ClickHouse refused (indexes into the group's joined events) as rejections, per batch."""
    out: list[list[Rejected]] = [[] for _ in group]
    if not refused:
        return out
    ends = list(itertools.accumulate(len(b.raws) for b in group))
    for i, reason in refused:
        k = bisect.bisect_right(ends, i)
        b, j = group[k], i - (ends[k - 1] if k else 0)
        origin = b.origin(b.idx[j]) if b.origin else ""
        out[k].append(Rejected(bytes(b.raws[j]), reason, origin, b.idx[j], "storage"))
    return out


def _count_rejects(rejected: Sequence[Rejected]) -> None:
    for kind, n in Counter(r.kind for r in rejected).items():
        metrics.REJECTED.labels(kind).inc(n)
