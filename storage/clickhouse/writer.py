"""Batched, column-oriented writes of events, signals, incidents and rejections to ClickHouse.

Events, the hot path, cross as raw JSON only (text removed unless ``store_text``): ClickHouse
parses each once into the typed columns (``telemetry_events_in`` → ``telemetry_events_mv``).
Signals, incidents and rejections go as one list per column, with column types fetched once
per table and timestamps as integer milliseconds. Replays are safe: the tables are
ReplacingMergeTree, so a re-written event, signal or incident collapses under ``FINAL``.

A failed insert is retried with exponential backoff when the failure can pass (connection
lost, server overloaded or restarting): a bounded number of times, or (streaming) until it
succeeds or the worker stops. A failure that cannot pass is raised at once as ``Refused``;
for raw events the batch is bisected so that only the rows ClickHouse refuses are given back
(as rejections) and the rest are written. The caller must not commit input offsets for a write
that raised.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import numpy as np
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from raiwatch.core.errors import StorageError
from raiwatch.core.records import FeedbackEvent, Incident, Signal, TelemetryEvent
from storage.clickhouse.rawtext import event_raws

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)
T = TypeVar("T")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)

INGEST_COLUMNS = ("event_id", "ts", "model_id", "raw", "ingested_at")
SIGNAL_COLUMNS = (
    "ts", "window_s", "signal", "family", "model_id", "model_version", "dims", "dims_key", "value",
    "baseline", "lower", "upper", "p_value", "n", "evidence_of", "evidence_lower", "evidence_upper",
    "inserted_at",
)  # fmt: skip
CHECKPOINT_COLUMNS = ("kind", "key", "until", "state", "written_at")
FEEDBACK_COLUMNS = ("event_id", "ts", "label", "favorable", "value", "source", "raw", "ingested_at")
DRIFT_REPORT_COLUMNS = (
    "created_at", "model_id", "reference", "trigger", "incident_id", "current_from", "current_to",
    "reference_rows", "current_rows", "columns", "drifted", "drifted_columns", "path",
)  # fmt: skip
REJECTED_COLUMNS = ("received_at", "source", "reason", "size", "sha256", "raw")

# ClickHouse error codes worth a retry: the server is busy, short of memory, restarting or unreachable.
TRANSIENT_CODES = frozenset({
    3,    # UNEXPECTED_END_OF_FILE
    32,   # ATTEMPT_TO_READ_AFTER_EOF
    159,  # TIMEOUT_EXCEEDED
    160,  # TOO_SLOW
    164,  # READONLY
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    236,  # ABORTED
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS
    285,  # TOO_FEW_LIVE_REPLICAS
    319,  # UNKNOWN_STATUS_OF_INSERT
    394,  # QUERY_WAS_CANCELLED
    425,  # SYSTEM_ERROR
    999,  # KEEPER_EXCEPTION
})  # fmt: skip

# Events: skip the in-block ReplacingMergeTree pass (FINAL collapses copies anyway; it doubled the
# insert cost), and accept a batch spanning more than 100 days rather than fail it forever.
EVENT_INSERT_SETTINGS = {"optimize_on_insert": 0, "max_partitions_per_insert_block": 0, "max_threads": 1}


def now_ms() -> int:
    """The current UTC time in milliseconds since the epoch."""
    return (datetime.now(UTC) - EPOCH) // MS


def _ms(dt: datetime | None) -> int | None:
    """Milliseconds since the epoch; a naive datetime is taken as UTC."""
    if dt is None:
        return None
    return ((dt if dt.tzinfo else dt.replace(tzinfo=UTC)) - EPOCH) // MS


INCIDENT_COLUMNS = tuple(f.name for f in msgspec.structs.fields(Incident))  # the record, field by field


_ENCODE_SORTED = msgspec.json.Encoder(order="sorted").encode


def dims_key(dims: dict[str, str]) -> str:
    """Canonical text of a dims map: JSON with sorted keys (``""`` for no dims)."""
    return _ENCODE_SORTED(dims).decode() if dims else ""


def _transient(err: Exception) -> bool:
    if isinstance(err, DataError):
        return False
    if isinstance(err, OperationalError):
        return True
    if isinstance(err, DatabaseError):
        return getattr(err, "code", None) in TRANSIENT_CODES
    return isinstance(err, (ConnectionError, TimeoutError))


class Refused(StorageError):
    """ClickHouse refused a write for what it contains (not for its own state): retrying cannot help."""

    def __init__(self, message: str, detail: str):
        super().__init__(message)
        self.detail = detail


class ClickHouseWriter:
    """Writes record batches to the raiwatch tables of ``database``.

    ``store_text=False`` (the default) keeps prompt and response text out of ClickHouse: out of
    the text columns and out of ``raw``. A transient failure (server down, overloaded, timed out)
    is retried, waiting ``backoff_s`` doubled each time up to ``max_backoff_s``: ``retries``
    times, or with ``retries=None`` until it succeeds or ``stop`` is set (a streaming worker
    pauses behind it instead of giving up). ``on_status(ok, detail)`` hears when ClickHouse
    becomes unavailable and when it is back.
    """

    def __init__(
        self,
        client: Client,
        database: str,
        store_text: bool = False,
        *,
        retries: int | None = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        stop: threading.Event | None = None,
        on_status: Callable[[bool, str], None] | None = None,
        wait: Callable[[float], object] | None = None,
    ):
        self.client = client
        self.database = database
        self.store_text = store_text
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stop = stop or threading.Event()
        self.on_status = on_status
        self.available = True
        self._wait = wait or self.stop.wait  # wait(seconds) -> True when stopped meanwhile
        self._types: dict[str, list] = {}

    def write_events(
        self, events: Sequence[TelemetryEvent], raws: Sequence[bytes], ts: Sequence[float]
    ) -> list[tuple[int, str]]:
        """Insert valid events with their original bytes and epoch-second timestamps (same order).

        ``event_id``, ``ts`` and ``model_id`` go as validated; ``telemetry_events_mv`` parses the
        rest of the raw JSON once inside ClickHouse, off the Python interpreter's lock. A batch
        ClickHouse refuses is split in halves until the refused rows are alone; returns those as
        ``(index, reason)`` (normally none) and writes the rest.
        """
        return self.write_event_columns(self.event_columns(events, raws, ts))

    def event_columns(
        self, events: Sequence[TelemetryEvent], raws: Sequence[bytes], ts: Sequence[float]
    ) -> list[list]:
        """The columns ``write_event_columns`` inserts. Building them is the Python part of writing
        events (text removal, identity columns): a pipeline does it beside its other Python work,
        leaving the writer thread only the insert, which runs off the interpreter lock."""
        if not len(events) == len(raws) == len(ts):
            raise ValueError(f"{len(events)} events, {len(raws)} raw payloads and {len(ts)} timestamps")
        ms = np.floor(np.asarray(ts, dtype=np.float64) * 1000 + 5e-4).astype(np.int64).tolist()
        return [
            [e.event_id for e in events],
            ms,
            [e.model.id for e in events],
            event_raws(events, raws, self.store_text),
        ]

    def write_event_columns(self, columns: list[list]) -> list[tuple[int, str]]:
        """Insert columns from ``event_columns``; return the rows ClickHouse refused (as ``write_events``)."""
        if not columns[0]:
            return []
        columns = [*columns, [now_ms()] * len(columns[0])]
        return self._insert_isolating("telemetry_events_in", INGEST_COLUMNS, columns, EVENT_INSERT_SETTINGS)

    def write_signals(self, signals: Sequence[Signal]) -> int:
        """Insert signals; a signal re-written for the same scope and window collapses under FINAL."""
        if not signals:
            return 0
        n = len(signals)
        columns = [
            [_ms(s.ts) for s in signals],
            [s.window for s in signals],
            [s.signal for s in signals],
            [s.family for s in signals],
            [s.model_id for s in signals],
            [s.model_version for s in signals],
            [dict(sorted(s.dims.items())) if len(s.dims) > 1 else s.dims for s in signals],  # map(...) = dims
            [dims_key(s.dims) for s in signals],
            [s.value for s in signals],
            [s.baseline for s in signals],
            [s.lower for s in signals],
            [s.upper for s in signals],
            [s.p_value for s in signals],
            [s.n for s in signals],
            [s.evidence_of for s in signals],
            [s.evidence_lower for s in signals],
            [s.evidence_upper for s in signals],
            [now_ms()] * n,
        ]
        return self._insert("signals", SIGNAL_COLUMNS, columns)

    def write_incidents(self, incidents: Sequence[Incident]) -> int:
        """Upsert incidents: under FINAL the copy with the latest ``updated_at`` wins.

        Without ``updated_at`` the version is the latest of opened, acknowledged and resolved.
        """
        if not incidents:
            return 0
        columns = []
        for name in INCIDENT_COLUMNS:
            values = [getattr(i, name) for i in incidents]
            if name == "updated_at":
                values = [
                    v or max(t for t in (i.opened_at, i.acknowledged_at, i.resolved_at) if t)
                    for v, i in zip(values, incidents, strict=True)
                ]
            if name.endswith("_at"):
                values = [_ms(v) for v in values]
            columns.append(values)
        return self._insert("incidents", INCIDENT_COLUMNS, columns)

    def write_rejected(self, rows: Sequence[tuple[str, str, bytes]]) -> int:
        """Insert rejected inputs as ``(source, reason, raw)``, stamped with the current time, their
        size and SHA-256; the bytes are kept whole."""
        if not rows:
            return 0
        columns = [
            [now_ms()] * len(rows),
            [r[0] for r in rows],
            [r[1] for r in rows],
            [len(r[2]) for r in rows],
            [hashlib.sha256(r[2]).hexdigest() for r in rows],
            [bytes(r[2]) for r in rows],
        ]
        return self._insert("rejected_events", REJECTED_COLUMNS, columns)

    def write_feedback(self, events: Sequence[FeedbackEvent], raws: Sequence[bytes]) -> int:
        """Insert valid feedback events with their original bytes (same order)."""
        if not events:
            return 0
        columns = [
            [e.event_id for e in events],
            [_ms(e.timestamp) for e in events],
            [e.label for e in events],
            [None if e.favorable is None else int(e.favorable) for e in events],
            [e.value for e in events],
            [e.source or "" for e in events],
            [bytes(r) for r in raws],
            [now_ms()] * len(events),
        ]
        return self._insert("feedback_events", FEEDBACK_COLUMNS, columns)

    def write_rows(self, table: str, names: Sequence[str], rows: Sequence[tuple]) -> int:
        """Insert a monitor's rows (tuples in ``names`` order; datetimes as epoch milliseconds)."""
        if not rows:
            return 0
        return self._insert(table, names, [list(c) for c in zip(*rows, strict=True)])

    def write_drift_report(self, row: Mapping[str, Any]) -> int:
        """Insert one ``drift_reports`` row (``DRIFT_REPORT_COLUMNS`` by name; ``created_at`` now)."""
        values = {**row, "created_at": now_ms()}
        for k in ("current_from", "current_to"):
            values[k] = _ms(values[k])
        columns = [[values[c]] for c in DRIFT_REPORT_COLUMNS]
        return self._insert("drift_reports", DRIFT_REPORT_COLUMNS, columns)

    def write_checkpoints(self, rows: Sequence[tuple[str, str, float, bytes]]) -> int:
        """Insert ``(kind, key, until_epoch_s, state)`` rows in one block (one atomic insert)."""
        if not rows:
            return 0
        columns = [
            [r[0] for r in rows],
            [r[1] for r in rows],
            [round(r[2] * 1000) for r in rows],
            [bytes(r[3]) for r in rows],
            [now_ms()] * len(rows),
        ]
        return self._insert("checkpoints", CHECKPOINT_COLUMNS, columns)

    def _column_types(self, table: str, names: Sequence[str]) -> list:
        types = self._types.get(table)
        if types is None:
            ctx = self.client.create_insert_context(table, list(names), database=self.database)
            types = self._types[table] = list(ctx.column_types)
        return types

    def _insert_isolating(
        self, table: str, names: Sequence[str], columns: list[list], settings: dict | None, first: int = 0
    ) -> list[tuple[int, str]]:
        """Insert; on a refusal, bisect to the refused rows and return them as ``(index, reason)``."""
        try:
            self._insert(table, names, columns, settings)
            return []
        except Refused as e:
            n = len(columns[0])
            if n == 1:
                return [(first, f"refused by ClickHouse: {e.detail}")]
            half = n // 2
            return self._insert_isolating(
                table, names, [c[:half] for c in columns], settings, first
            ) + self._insert_isolating(table, names, [c[half:] for c in columns], settings, first + half)

    def _insert(
        self, table: str, names: Sequence[str], columns: list[list], settings: dict | None = None
    ) -> int:
        def insert() -> int:
            ctx = self.client.create_insert_context(
                table,
                list(names),
                database=self.database,
                column_types=self._column_types(table, names),
                column_oriented=True,
                settings=settings,
                data=columns,
            )
            try:
                self.client.insert(context=ctx)
            finally:
                # an InsertContext refers to itself (it keeps a bound method of its own), so once
                # dropped it would hold the batch's columns until a full garbage collection: 31 of
                # them were waiting after an hour of bench/memory.py with the collector off
                vars(ctx).clear()
            return len(columns[0])

        return self.call(f"writing {len(columns[0])} rows to {self.database}.{table}", insert)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` under this writer's retry policy: a transient failure is retried with backoff, a
        refusal raises ``Refused`` at once; ``what`` ("writing 5 rows to db.t") names it in errors."""
        delay = self.backoff_s
        attempt = 0
        while True:
            try:
                out = fn()
            except Exception as e:
                detail = _first_line(e)
                if not _transient(e):
                    raise Refused(f"{what} failed: {detail}", detail) from e
                attempt += 1
                if (self.retries is not None and attempt > self.retries) or self.stop.is_set():
                    raise StorageError(f"{what} failed after {attempt} attempts: {detail}") from e
                self._set_available(False, detail)
                log.warning("ClickHouse: %s failed (%s); retry in %.1f s", what, detail, delay)
                if self._wait(delay) or self.stop.is_set():
                    raise StorageError(f"stopped while {what}: {detail}") from e
                delay = min(delay * 2, self.max_backoff_s)
                continue
            self._set_available(True, "")
            return out

    def _set_available(self, ok: bool, detail: str) -> None:
        if ok != self.available:
            self.available = ok
            if ok:
                log.warning("ClickHouse is writable again")
            if self.on_status:
                self.on_status(ok, detail)


def _first_line(err: Exception) -> str:
    """The first line of an error, without a URL's credentials or query string."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"://[^/@\s]+@", "://***@", text)
    return re.sub(r"/\?[^\s)'\"]*", "/?...", text)[:500]
