"""Prometheus metrics for pipeline health and the headline AI signals (served on /metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from prometheus_client import Counter, Gauge, Histogram

from raiwatch.core.catalogue import Catalogue
from raiwatch.core.records import Signal

EVENTS = Counter("raiwatch_events_total", "Valid telemetry events processed.")
FEEDBACK = Counter("raiwatch_feedback_events_total", "Valid feedback events (delayed labels) processed.")
LABELS = Counter(
    "raiwatch_labels_total",
    "Delayed labels by what the join did with them (joined, duplicate, early, unmatched), and"
    " inferences dropped unlabelled (expired, evicted).",
    ["result"],
)
NOTIFICATIONS = Counter(
    "raiwatch_notifications_total",
    "Notification attempts by route and outcome (delivered, failed).",
    ["route", "outcome"],
)
RULE_RELOADS = Counter(
    "raiwatch_rule_reloads_total", "Rule file reloads by outcome (ok, failed).", ["outcome"]
)
RULES_RELOAD_OK = Gauge(
    "raiwatch_rules_last_reload_successful",
    "1 when the last rule reload (or the start) succeeded, 0 after a bad edit.",
)
OUTBOX_DEPTH = Gauge("raiwatch_notification_outbox_depth", "Notifications not delivered yet.")
LABEL_JOIN_PENDING = Gauge("raiwatch_label_join_pending", "Inferences waiting for their label.")
REJECTED = Counter(
    "raiwatch_rejected_events_total",
    "Inputs rejected (dead-letter topic, rejected_events), by kind.",
    ["kind"],
)
LATE = Counter("raiwatch_late_events_total", "Events whose window had closed; stored, not counted.")
REPLAYED = Counter(
    "raiwatch_replayed_events_total", "Events re-read after a restart whose window was already counted."
)
DUPLICATES = Counter(
    "raiwatch_duplicate_events_total", "Redelivered events (an event_id seen recently); dropped."
)
CLICKHOUSE_UP = Gauge(
    "raiwatch_clickhouse_up", "1 while ClickHouse takes writes, 0 while they wait and retry."
)
KAFKA_UP = Gauge("raiwatch_kafka_up", "1 while fetches from Kafka come back, 0 during an outage.")
PAUSED = Gauge("raiwatch_input_paused", "1 while the worker holds back input (writes pending or failing).")
READY = Gauge("raiwatch_ready", "1 while the worker is consuming and writing.")
DLQ = Counter("raiwatch_dead_letters_total", "Rejected inputs sent to the dead-letter topic.", ["truncated"])
SIGNALS = Counter("raiwatch_signals_total", "Signals emitted, by family.", ["family"])
INCIDENT_CHANGES = Counter("raiwatch_incident_changes_total", "Incident transitions.", ["kind", "severity"])
BATCH_SECONDS = Histogram(
    "raiwatch_batch_seconds",
    "Wall time to process one batch end to end.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WRITE_FAILURES = Counter("raiwatch_write_failures_total", "Writes that failed after retries.", ["sink"])
WATERMARK = Gauge(
    "raiwatch_watermark_timestamp_seconds", "Event-time watermark: every window ending by it is closed."
)
ROLLED_UP = Gauge(
    "raiwatch_rollups_timestamp_seconds",
    "Event time up to which this worker's rollups (signals_1m/1h/1d, events_1m/1h/1d) reach.",
)
EVENT_TIME_LAG = Gauge(
    "raiwatch_event_time_lag_seconds",
    "Wall clock minus the newest event time the worker has taken (how far behind the live edge it is).",
)
CONSUMER_LAG = Gauge(
    "raiwatch_consumer_lag_messages",
    "Messages of an assigned partition after the last one fetched (high watermark minus next offset).",
    ["topic", "partition"],
)
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STAGE_SECONDS = Histogram(
    "raiwatch_stage_seconds",
    "Time per batch in each pipeline stage: decode, observe (monitors), close (monitors' window"
    " closes), rules, prepare (storage columns), write (the writer thread, all sinks).",
    ["stage"],
    buckets=_FAST,
)
MONITOR_SECONDS = Counter(
    "raiwatch_monitor_seconds_total",
    "Time each monitor family spent observing events and closing windows (which one bounds throughput).",
    ["family", "phase"],
)
CLICKHOUSE_WRITE_SECONDS = Histogram(
    "raiwatch_clickhouse_write_seconds",
    "Time to write one batch's rows to a ClickHouse table, retries included.",
    ["table"],
    buckets=_FAST,
)
BUILD_INFO = Gauge(
    "raiwatch_build_info", "Always 1; its labels say which raiwatch and Python run.", ["version", "python"]
)
OPEN_WINDOWS = Gauge("raiwatch_open_windows", "Event-time windows still open.")
DRIFT_REPORTS = Counter(
    "raiwatch_drift_reports_total", "Evidently drift reports, by trigger and outcome.", ["trigger", "outcome"]
)
FIRING = Gauge("raiwatch_incidents_firing", "Incidents currently open, by severity.", ["severity"])

# -- the OTLP source (issue 24) --
OTLP_SKIPPED = Counter(
    "raiwatch_otlp_skipped_total",
    "OTLP spans and log records read but not mapped, by signal (spans, logs) and reason (not_genai,"
    " no_model, operation, not_evaluation, no_name).",
    ["signal", "reason"],
)
OTLP_EVALUATIONS = Counter(
    "raiwatch_otlp_evaluations_total",
    "gen_ai.evaluation.result events by what the join did with them (joined, early, label, unmatched,"
    " unmapped, evicted), and held operations handed over before their window closed (released_early).",
    ["result"],
)
OTLP_HELD = Gauge(
    "raiwatch_otlp_held_operations", "OTLP operations held in open windows for their evaluations."
)


class SignalExport:
    """The headline signals on /metrics: each catalogued signal with ``export`` dims becomes a gauge
    ``raiwatch_<family>_<name>{model_id, <export dims>}`` holding its latest window's value, and
    every signal counts in ``raiwatch_signals_total{family}``. Only the series whose dims are exactly
    the export dims are exported, which keeps label cardinality bounded by the monitors' caps."""

    _gauges: ClassVar[dict[str, Gauge]] = {}  # one per metric name per process (registered globally)

    def __init__(self, catalogue: Catalogue):
        self._specs = {name: s for name, s in catalogue.items() if s.export is not None}
        for spec in self._specs.values():
            if spec.metric_name not in self._gauges:
                self._gauges[spec.metric_name] = Gauge(
                    spec.metric_name, f"{spec.value} (latest window)", ["model_id", *spec.export]
                )

    def __call__(self, signals: Sequence[Signal]) -> None:
        by_family: dict[str, int] = {}
        for s in signals:
            by_family[s.family] = by_family.get(s.family, 0) + 1
            spec = self._specs.get(s.signal)
            if spec is None or len(s.dims) != len(spec.export) or any(k not in s.dims for k in spec.export):
                continue
            labels = (s.model_id, *(s.dims[k] for k in spec.export))
            self._gauges[spec.metric_name].labels(*labels).set(s.value)
        for fam, n in by_family.items():
            SIGNALS.labels(fam).inc(n)
