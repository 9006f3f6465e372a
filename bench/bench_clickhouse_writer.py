"""Throughput of ClickHouseWriter.write_events against a bare 3-column insert, in one run.

Builds N events from the contract examples (fresh event ids, timestamps 1 ms apart, several
models and tenants) and, batch by batch, decodes them with the project codec (not timed) and times:

- ``write_events``: column building (text stripped from raw) plus the insert of 28 columns;
- ``baseline``: ``client.insert`` of the same rows with 3 columns (event_id, ts, model_id),
  column-oriented, types given, columns built beforehand: the floor of an insert through
  clickhouse-connect into chdb.

Usage: ``.venv/bin/python bench/bench_clickhouse_writer.py [--events 300000] [--batch 10000]``.
Uses a fresh chdb directory (deleted afterwards unless ``--keep``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from raiwatch.core import contracts
from raiwatch.core.codec import telemetry_codec
from storage.clickhouse import ClickHouseWriter, connect, count_events, migrate
from storage.clickhouse.writer import EPOCH, MS, event_raws

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--store-text", action="store_true", help="keep prompt/response text (default: strip)")
    ap.add_argument("--keep", action="store_true", help="keep the chdb directory")
    args = ap.parse_args()

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
        writer.write_events(warm.events, warm.raws)  # fetches column types once
        client.command(f"TRUNCATE TABLE {DB}.telemetry_events")

        t_build = t_write = t_base = 0.0
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
            writer.write_events(evs, raws)
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

        stored = count_events(client, DB)
        assert stored == n, (stored, n)
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
        print(f"ratio write_events / bare insert throughput: {t_base / t_write:.2f}")
        print(f"telemetry_events on disk: {int(size) / n:.0f} bytes/event")
    finally:
        if args.keep:
            print(f"chdb data kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
