"""Throughput of ClickHouseWriter.write_events against a bare 3-column insert, in one run.

Builds N events from the contract examples (fresh event ids, timestamps 1 ms apart, several
models and tenants) and, batch by batch, decodes them with the project codec (not timed) and times:

- ``write_events``: column building (text stripped from raw) plus the insert of 28 columns;
- ``baseline``: ``client.insert`` of the same rows with 3 columns (event_id, ts, model_id),
  column-oriented, types given, columns built beforehand: the floor of an insert through
  clickhouse-connect into chdb.

``--typed`` also times the alternative the writer does not take: the 28 typed columns built in
Python from the decoded events and inserted straight into ``telemetry_events`` (no JSON parse in
ClickHouse), once through clickhouse-connect's column-oriented Native insert and once as an Arrow
table (``msgspec.to_builtins`` then ``pyarrow``). Each row counts building plus insert.

Usage: ``.venv/bin/python bench/bench_clickhouse_writer.py [--events 300000] [--batch 10000] [--typed]
[--events-file EVENTS.jsonl]`` (real traffic instead: e.g. ``raiwatch demo``'s or the synthetic
generator's events, about 600 bytes each; the examples average 500).
Uses a fresh chdb directory (deleted afterwards unless ``--keep``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import orjson
from msgspec import UNSET

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's code, not the installed one's (worktrees)

from raiwatch.core import contracts  # noqa: E402
from raiwatch.core.codec import telemetry_codec  # noqa: E402
from storage.clickhouse import ClickHouseWriter, connect, count_events, migrate  # noqa: E402
from storage.clickhouse.rawtext import event_raws  # noqa: E402
from storage.clickhouse.writer import EPOCH, EVENT_INSERT_SETTINGS, MS, now_ms  # noqa: E402

DB = "bench"


def make_lines(n: int) -> list[bytes]:
    """``n`` JSON events: the examples in turn, with unique ids, advancing times, varied scope."""
    examples = [orjson.loads(line) for line in contracts.examples()]
    start = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # any date: rows expire ttl_days after they are stored
    out = []
    for i in range(n):
        ev = dict(examples[i % len(examples)])
        ev["event_id"] = f"bench-{i:08d}"
        ev["timestamp"] = (start + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z")
        ev["model"] = {**ev["model"], "id": f"{ev['model']['id']}-{i % 3}"}
        if "tenant_id" in ev:
            ev["tenant_id"] = f"tenant-{i % 50}"
        if "user_id" in ev:
            ev["user_id"] = f"u{i % 5000:05d}"
        out.append(orjson.dumps(ev))
    return out


TYPED_COLUMNS = (
    "event_id", "ts", "model_id", "model_version", "model_kind", "deployment", "feature", "tenant_id",
    "user_id", "session_id", "ip_hash", "request_tokens", "response_tokens", "latency_ms", "finish_reason",
    "error", "language", "prediction_label", "prediction_score", "safety_scores", "violations",
    "safety_action", "segments", "favorable", "raw", "ingested_at",
)  # fmt: skip


def typed_columns(evs: list, raws: list[bytes], ts: list[float]) -> list[list]:
    """``TYPED_COLUMNS`` of the decoded events, as the materialized view would fill them (text stripped)."""
    rows = []
    for e in evs:
        m, c, q, r, s, o, seg = e.model, e.client, e.request, e.response, e.safety, e.outcome, e.segments
        p = r.prediction if r else None
        rows.append((
            m.version or "", m.kind or "", e.deployment or "", e.feature or "", e.tenant_id or "",
            e.user_id or "", e.session_id or "", (c.ip_hash or "") if c else "",
            (None if q.tokens is UNSET else q.tokens) if q else None,
            (None if r.tokens is UNSET else r.tokens) if r else None,
            (None if r.latency_ms is UNSET else r.latency_ms) if r else None,
            (r.finish_reason or "") if r else "", r.error if r else None, (q.language or "") if q else "",
            p.label if p else None, p.score if p else None,
            (s.scores or {}) if s else {}, (s.violations or []) if s else [], (s.action or "") if s else "",
            {k: v for k, v in seg.items() if v is not None} if seg else {},
            None if not o or o.favorable is UNSET else int(o.favorable),
        ))  # fmt: skip
    ms = np.floor(np.asarray(ts, dtype=np.float64) * 1000 + 5e-4).astype(np.int64).tolist()
    n = len(evs)
    middle = [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(21)]
    ids = [e.event_id for e in evs]
    return [ids, ms, [e.model.id for e in evs], *middle, event_raws(evs, raws, False), [now_ms()] * n]


def arrow_table(evs: list, raws: list[bytes], ts: list[float]):
    """The same columns as an Arrow table: the nested events converted by pyarrow in C++, then flattened."""
    import pyarrow as pa

    s = pa.string()
    kind = pa.struct([
        ("event_id", s), ("model", pa.struct([("id", s), ("version", s), ("kind", s)])),
        ("deployment", s), ("feature", s), ("tenant_id", s), ("user_id", s), ("session_id", s),
        ("client", pa.struct([("ip_hash", s)])),
        ("request", pa.struct([("tokens", pa.uint64()), ("language", s)])),
        ("response", pa.struct([
            ("tokens", pa.uint64()), ("latency_ms", pa.float64()), ("finish_reason", s), ("error", s),
            ("prediction", pa.struct([("label", s), ("score", pa.float64())])),
        ])),
        ("safety", pa.struct([
            ("scores", pa.map_(s, pa.float32())), ("violations", pa.list_(s)), ("action", s),
        ])),
        ("segments", pa.map_(s, s)), ("outcome", pa.struct([("favorable", pa.bool_())])),
    ])  # fmt: skip
    table = pa.Table.from_struct_array(pa.array(msgspec.to_builtins(evs), type=kind)).flatten().flatten()
    ms = np.floor(np.asarray(ts, dtype=np.float64) * 1000 + 5e-4).astype(np.int64)
    names = {"model.id": "model_id", "model.version": "model_version", "model.kind": "model_kind",
             "client.ip_hash": "ip_hash", "request.tokens": "request_tokens", "request.language": "language",
             "response.tokens": "response_tokens", "response.latency_ms": "latency_ms",
             "response.finish_reason": "finish_reason", "response.error": "error",
             "response.prediction.label": "prediction_label", "response.prediction.score": "prediction_score",
             "safety.scores": "safety_scores", "safety.violations": "violations",
             "safety.action": "safety_action",
             "outcome.favorable": "favorable"}  # fmt: skip
    table = table.rename_columns([names.get(c, c) for c in table.column_names])
    stamp = pa.timestamp("ms", tz="UTC")
    table = table.append_column("ts", pa.array(ms, type=stamp))
    table = table.append_column("raw", pa.array(event_raws(evs, raws, False), type=pa.binary()))
    return table.append_column("ingested_at", pa.array([now_ms()] * len(evs), type=stamp))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--events-file", type=Path, help="the first --events lines of this JSONL instead")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--store-text", action="store_true", help="keep prompt/response text (default: strip)")
    ap.add_argument("--keep", action="store_true", help="keep the chdb directory")
    ap.add_argument("--typed", action="store_true", help="also time typed Native and Arrow inserts")
    args = ap.parse_args()

    if args.events_file:
        with args.events_file.open("rb") as f:
            lines = [line.rstrip(b"\n") for line, _ in zip(f, range(args.events), strict=False)]
    else:
        lines = make_lines(args.events)
    batches = [lines[i : i + args.batch] for i in range(0, len(lines), args.batch)]
    path = Path(tempfile.mkdtemp(prefix="bench-ch-"))
    try:
        client = connect(f"chdb://{path}", DB)
        migrate(client, DB)
        client.command(
            f"CREATE TABLE {DB}.baseline (event_id String, ts DateTime64(3, 'UTC'), "
            "model_id LowCardinality(String)) ENGINE = MergeTree ORDER BY (model_id, ts)"
        )
        base_types = ["String", "DateTime64(3, 'UTC')", "LowCardinality(String)"]
        writer = ClickHouseWriter(client, DB, store_text=args.store_text)
        warm = telemetry_codec.decode_batch(lines[:10])
        writer.write_events(warm.events, warm.raws, warm.ts)  # fetches column types once
        typed_types = writer._column_types("telemetry_events", TYPED_COLUMNS)
        client.command(f"TRUNCATE TABLE {DB}.telemetry_events")

        t_build = t_write = t_base = t_typed = t_arrow = 0.0
        n = texts = 0
        load = os.getloadavg()[0]
        for batch in batches:  # decoded one batch at a time, as the pipeline does; decoding is not timed
            decoded = telemetry_codec.decode_batch(batch)
            assert not decoded.rejected, decoded.rejected[:1]
            evs, raws = decoded.events, decoded.raws
            n += len(evs)
            texts += sum(1 for e in evs if e.request and e.request.text)

            t0 = time.perf_counter()
            event_raws(evs, raws, args.store_text)
            t1 = time.perf_counter()
            writer.write_events(evs, raws, decoded.ts)
            t2 = time.perf_counter()
            t_build += t1 - t0
            t_write += t2 - t1

            cols = [
                [e.event_id for e in evs],
                [(e.timestamp - EPOCH) // MS for e in evs],
                [e.model.id for e in evs],
            ]
            t0 = time.perf_counter()
            client.insert(
                "baseline",
                cols,
                column_names=["event_id", "ts", "model_id"],
                database=DB,
                column_type_names=base_types,
                column_oriented=True,
            )
            t_base += time.perf_counter() - t0
            if args.typed:  # the same rows again; they collapse with the first copy under FINAL
                t0 = time.perf_counter()
                client.insert(
                    "telemetry_events",
                    typed_columns(evs, raws, decoded.ts),
                    column_names=list(TYPED_COLUMNS),
                    database=DB,
                    column_types=typed_types,
                    column_oriented=True,
                    settings=EVENT_INSERT_SETTINGS,
                )
                t1 = time.perf_counter()
                client.insert_arrow(
                    "telemetry_events", arrow_table(evs, raws, decoded.ts), database=DB,
                    settings=EVENT_INSERT_SETTINGS,
                )  # fmt: skip
                t_typed += t1 - t0
                t_arrow += time.perf_counter() - t1

        stored = count_events(client, DB)  # FINAL: the typed copies collapse with the first
        assert stored == n, (stored, n)
        if args.typed:  # the three copies of each event agree in every column
            distinct = client.command(
                f"SELECT uniqExact(tuple({', '.join(TYPED_COLUMNS[:-1])})) FROM {DB}.telemetry_events"
            )
            assert int(distinct) == n, (distinct, n)
        size = client.command(
            f"SELECT sum(bytes_on_disk) FROM system.parts WHERE database = '{DB}'"
            " AND table = 'telemetry_events' AND active"
        )
        mode = "kept" if args.store_text else "stripped from raw"
        print(f"events {n:,} in batches of {args.batch:,}; {texts / n:.0%} carry text ({mode})")
        print(f"load average at start: {load:.2f} (2 cores; other work on the machine skews every figure)")
        print(f"column building only : {n / t_build:>10,.0f} events/s  ({t_build * 1e6 / n:.2f} us/event)")
        print(f"write_events (28 col): {n / t_write:>10,.0f} events/s  ({t_write * 1e6 / n:.2f} us/event)")
        print(f"bare insert (3 col)  : {n / t_base:>10,.0f} rows/s    ({t_base * 1e6 / n:.2f} us/row)")
        if args.typed:
            for what, t in (("typed, Native (26 col)", t_typed), ("typed, Arrow (26 col) ", t_arrow)):
                print(f"{what}: {n / t:>10,.0f} events/s  ({t * 1e6 / n:.2f} us/event)")
        print(f"ratio write_events / bare insert throughput: {t_base / t_write:.2f}")
        print(f"telemetry_events on disk: {int(size) / n:.0f} bytes/event")
    finally:
        if args.keep:
            print(f"chdb data kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
