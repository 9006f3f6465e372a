"""The one pipeline: decode → window → monitors → signals → rules → incidents → storage.

The faust agent and the replay driver are thin loops around ``Pipeline.process``; nothing
about statistics, rules or storage lives in them, which is why a stream and a replay of the
same events open the same incidents. A batch's writes are queued on one writer thread and
``BatchResult.durable`` says when they are done: a caller may commit the input offset of an
event once that is done and the event's window is no longer open.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from alert_rules import RULES_DIR, RuleEngine, load_rules
from monitors.base import Monitor
from monitors.safety import SafetyMonitor
from monitors.windows import WindowClock
from raiwatch import metrics
from raiwatch.batch import BatchResult
from raiwatch.codec import Rejected, telemetry_codec
from raiwatch.config import Config
from raiwatch.records import SEVERITIES, IncidentChange, Signal, TelemetryEvent
from storage.clickhouse import ClickHouseWriter, connect, migrate, recent_signals
from storage.incidents import IncidentStore

log = logging.getLogger("raiwatch.pipeline")

Notify = Callable[[list[IncidentChange]], None]


def build_monitors(cfg: Config) -> list[Monitor]:
    """Every monitor the configuration turns on."""
    return [SafetyMonitor(cfg.windows.size_s, cfg.monitors.safety)]


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
    ):
        self.cfg = cfg
        self.clock = WindowClock(cfg.windows.size_s, cfg.windows.allowed_lateness_s, cfg.windows.idle_close_s)
        self.monitors = list(monitors)
        self.engine = engine
        self.writer = writer
        self.store = store
        self.notify = list(notify)
        self.events_in = 0
        self.signals_out = 0
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raiwatch-write")
        self._pending: Future | None = None

    @classmethod
    def from_config(
        cls, cfg: Config, rules_dir: str | Path | None = None, notify: Sequence[Notify] = ()
    ) -> Pipeline:
        """Load and lint the rules, migrate both stores, and wire the monitors (refuses bad rules)."""
        rules = load_rules(rules_dir or cfg.rules_dir or None)
        client = connect(cfg.clickhouse_dsn, cfg.clickhouse.database)
        migrate(client, cfg.clickhouse.database, cfg.clickhouse.cluster, cfg.clickhouse.events_ttl_days)
        writer = ClickHouseWriter(client, cfg.clickhouse.database, store_text=cfg.clickhouse.store_text)
        store = IncidentStore(cfg.incident_db_url)
        engine = RuleEngine(rules, cfg.runbook_base_url or (RULES_DIR / "runbooks").as_uri())
        return cls(cfg, build_monitors(cfg), engine, writer, store, notify)

    def warm_start(self, lookback: timedelta | None = None) -> list[IncidentChange]:
        """Restore rule state after a restart: open incidents from the store, then recent signals.

        Re-feeding the last ``lookback`` of stored signals rebuilds pending ``for`` timers that
        were in memory when the previous worker stopped; changes it yields are idempotent.
        """
        self.engine.restore(self.store.open_incidents())
        lookback = lookback or timedelta(hours=1)
        latest = recent_signals(self.writer.client, self.cfg.clickhouse.database, None)
        if not latest:
            return []
        since = max(s.ts for s in latest) - lookback
        signals = recent_signals(self.writer.client, self.cfg.clickhouse.database, since)
        changes = self.engine.evaluate(signals)
        self._apply(changes)
        self.writer.write_incidents([c.incident for c in changes])
        return changes

    def process(
        self, raws: Sequence[bytes], sources: Sequence[Hashable], origin: Callable[[int], str] | None = None
    ) -> BatchResult:
        """Decode, window and monitor a batch, evaluate the windows it closes, queue its writes.

        The batch's ClickHouse writes (rejects, raw events, signals, incident mirror) run in
        order on one writer thread, beside the decoding and monitoring of the next batch (chdb
        parses and inserts without the interpreter lock); ``result.durable`` is done when they
        are. At most one batch is in flight: a failed write raises from the next call.
        """
        with metrics.BATCH_SECONDS.time():
            decoded = telemetry_codec.decode_batch(raws, origin)
            result = BatchResult(windows=[None] * len(raws), rejected=decoded.rejected)
            events = decoded.events
            starts = self.clock.assign_batch(
                [sources[i] for i in decoded.indexes], [ev.timestamp.timestamp() for ev in events]
            )
            windows = result.windows
            for i, start in zip(decoded.indexes, starts, strict=True):
                windows[i] = start
            if None in starts:  # late events: stored, counted in no window
                kept = [(ev, s) for ev, s in zip(events, starts, strict=True) if s is not None]
                result.late = len(events) - len(kept)
                events, starts = [k[0] for k in kept], [k[1] for k in kept]
            for m in self.monitors:
                m.observe(events, starts)
            self.events_in += len(decoded.events)
            metrics.EVENTS.inc(len(decoded.events))
            metrics.REJECTED.inc(len(decoded.rejected))
            metrics.LATE.inc(result.late)
            result.merge(self._close(self.clock.advance()))
            self.flush()
            result.durable = self._pending = self._io.submit(
                self._write, decoded.rejected, decoded.events, decoded.raws, result.signals, result.changes
            )
        return result

    def close_all(self) -> BatchResult:
        """Close every open window, write its results, and wait until everything is written."""
        result = self._close(self.clock.close_all())
        self.flush()
        result.durable = self._pending = self._io.submit(
            self._write, [], [], [], result.signals, result.changes
        )
        self.flush()
        return result

    def flush(self) -> None:
        """Wait until everything queued for writing is written (raises the writer's error)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def open_windows(self) -> set[int]:
        return self.clock.open_windows()

    def forget_source(self, source: Hashable) -> None:
        self.clock.forget_source(source)

    def _close(self, starts: list[int]) -> BatchResult:
        result = BatchResult()
        for start in starts:
            signals: list[Signal] = []
            for m in self.monitors:
                signals.extend(m.close(start))
            if not signals:
                continue
            self.signals_out += len(signals)
            _export(signals)
            changes = self.engine.evaluate(signals)
            self._apply(changes)
            result.signals += signals
            result.changes += changes
        metrics.WATERMARK.set(max(self.clock.watermark, 0))
        metrics.OPEN_WINDOWS.set(len(self.clock.open_windows()))
        return result

    def _write(
        self,
        rejected: list[Rejected],
        events: list[TelemetryEvent],
        raws: list[bytes],
        signals: list[Signal],
        changes: list[IncidentChange],
    ) -> None:
        """One batch's ClickHouse writes, in order (runs on the writer thread)."""
        w = self.writer
        for sink, write, *rows in (
            ("rejected_events", w.write_rejected, [(r.source, r.reason, r.raw) for r in rejected]),
            ("telemetry_events", w.write_events, events, raws),
            ("signals", w.write_signals, signals),
            ("incidents", w.write_incidents, [c.incident for c in changes]),
        ):
            try:
                write(*rows)
            except Exception:
                metrics.WRITE_FAILURES.labels(sink).inc()
                raise

    def _apply(self, changes: list[IncidentChange]) -> None:
        if not changes:
            return
        self.store.apply(changes)
        for c in changes:
            metrics.INCIDENT_CHANGES.labels(c.kind, c.incident.severity).inc()
        for fn in self.notify:
            try:
                fn(changes)
            except Exception:  # a broken notifier must not stop the pipeline
                log.exception("notifier %r failed", fn)
        firing = Counter(i.severity for i in self.engine.firing())
        for sev in SEVERITIES:
            metrics.FIRING.labels(sev).set(firing[sev])


def _export(signals: list[Signal]) -> None:
    """Headline signals on /metrics, per family."""
    by_family: dict[str, int] = {}
    for s in signals:
        by_family[s.family] = by_family.get(s.family, 0) + 1
        if s.signal == "safety.violation_rate" and len(s.dims) == 1:
            metrics.SAFETY_RATE.labels(s.model_id, s.dims["category"]).set(s.value)
    for fam, n in by_family.items():
        metrics.SIGNALS.labels(fam).inc(n)
