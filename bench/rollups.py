"""What the rollups cost and what they save: a fortnight of signals and events in an embedded store.

Fills a temporary chdb store (the migrations applied) with ``--days`` of 60 s signals for
``--models`` models (30 series each: safety categories, drift features, fairness groups) and
events at ``--rate`` per model per second, inserted straight into the typed tables. Then:

1. the first roll-up of it all (what a store upgraded to migration 0008 pays once), rows per second;
2. one steady-state roll-up of 10 more seconds of every model (what a worker pays every
   ``clickhouse.rollup_every_s``), median of 20;
3. analysts' queries over the whole range from the FINAL tables and from the rollups, and the
   ratio of their times (median of 5 each), with a check that both give the same numbers.

    .venv/bin/python bench/rollups.py                   # 14 days, 20 models, 1 event/s each
    .venv/bin/python bench/rollups.py --days 3 --models 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.clickhouse import Client, Rollups, close_all, connect, migrate  # noqa: E402

SERIES = 30
QUERIES = {
    "daily pooled safety rate per model and category": (
        "SELECT toDate(ts - toIntervalSecond(window_s)) AS d, model_id, dims_key,"
        " sum(s.value * s.n) / sum(s.n) AS r FROM raiwatch.signals AS s FINAL"
        " WHERE signal = 'safety.violation_rate'"
        " GROUP BY d, model_id, dims_key ORDER BY d, model_id, dims_key",
        "SELECT toDate(day) AS d, model_id, dims_key, sum(value_n_sum) / sum(n) AS r FROM raiwatch.signals_1d"
        " WHERE signal = 'safety.violation_rate'"
        " GROUP BY d, model_id, dims_key ORDER BY d, model_id, dims_key",
    ),
    "hourly events and errors per model": (
        "SELECT toStartOfHour(ts) AS h, model_id, count() AS k, countIf(error IS NOT NULL) AS e"
        " FROM raiwatch.telemetry_events FINAL GROUP BY h, model_id ORDER BY h, model_id",
        "SELECT hour AS h, model_id, sum(events) AS k, sum(errors) AS e FROM raiwatch.events_1h"
        " GROUP BY h, model_id ORDER BY h, model_id",
    ),
    "daily latency p95 per model": (
        "SELECT toDate(ts) AS d, model_id, round(quantileExact(0.95)(latency_ms)) AS p"
        " FROM raiwatch.telemetry_events FINAL GROUP BY d, model_id ORDER BY d, model_id",
        "SELECT toDate(day) AS d, model_id,"
        " round(quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms_q)[2]) AS p"
        " FROM raiwatch.events_1d GROUP BY d, model_id ORDER BY d, model_id",
    ),
}


def fill_signals(client: Client, t0: int, windows: int, models: int) -> int:
    """``windows`` 60 s windows of SERIES series per model, the first ending at ``t0 + 60``."""
    client.command(
        "INSERT INTO raiwatch.signals (ts, window_s, signal, family, model_id, model_version, dims, dims_key,"
        " value, n, inserted_at)"
        f" SELECT toDateTime64({t0} + 60 * (intDiv(number, {models * SERIES}) + 1), 3, 'UTC'), 60,"
        " ['safety.violation_rate', 'drift.feature', 'fairness.favorable_rate'][s % 3 + 1] AS sig,"
        f" splitByChar('.', sig)[1], concat('model-', toString(intDiv(number, {SERIES}) % {models})), '',"
        " map('k', toString(s)), concat('{\"k\":\"', toString(s), '\"}'), randCanonical() / 10,"
        " 60 + rand() % 60, now64(3)"
        f" FROM (SELECT number, number % {SERIES} AS s FROM numbers({windows * models * SERIES}))"
    )
    return windows * models * SERIES


def fill_events(client: Client, t0: int, seconds: int, models: int, rate: float, first_id: int) -> int:
    """``rate`` events per second per model for ``seconds`` from ``t0``, ids from ``first_id``."""
    events = int(seconds * rate * models)
    client.command(
        "INSERT INTO raiwatch.telemetry_events (event_id, ts, model_id, user_id, latency_ms, error,"
        " violations, raw, ingested_at)"
        f" SELECT toString({first_id} + number), toDateTime64({t0} + number / {rate * models}, 3, 'UTC'),"
        f" concat('model-', toString(number % {models})), toString(rand() % 5000), 50 + rand() % 500,"
        " if(rand() % 100 = 0, 'timeout', NULL), if(rand() % 50 = 0, ['self_harm'], []), '', now64(3)"
        f" FROM numbers({events})"
    )
    return events


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--rate", type=float, default=1.0, help="events per second per model")
    args = ap.parse_args()
    console = Console()
    start = (datetime.now(UTC) - timedelta(days=args.days + 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    models = [f"model-{i}" for i in range(args.models)]
    with tempfile.TemporaryDirectory() as tmp:
        client = connect(f"chdb://{Path(tmp) / 'clickhouse'}", "raiwatch")
        migrate(client, "raiwatch")
        t0 = int(start.timestamp())
        span = args.days * 86_400

        def fill_all() -> int:
            return fill_signals(client, t0, span // 60, args.models) + fill_events(
                client, t0, span, args.models, args.rate, 0
            )

        t, rows = timed(fill_all)
        console.print(f"filled {rows:,} rows ({args.days} days, {args.models} models) in {t:.1f} s")
        roller = Rollups("raiwatch")
        t, _ = timed(lambda: roller.advance(client, models, t0 + span))
        console.print(f"first roll-up: {rows:,} stored rows in {t:.1f} s ({rows / t:,.0f} rows/s)")
        steps, next_id = [], rows
        for k in range(30):  # steady state: 10 s more of every model, then roll it up
            at = t0 + span + 10 * k
            next_id += fill_events(client, at, 10, args.models, args.rate, next_id)
            if (at + 10 - t0) % 60 == 0:
                fill_signals(client, at + 10 - 60, 1, args.models)
            steps.append(timed(lambda u=at + 10: roller.advance(client, models, u))[0])
        med, worst = statistics.median(steps) * 1000, max(steps) * 1000
        console.print(
            f"steady-state roll-up, {args.models} models every 10 s: median {med:.0f} ms, max {worst:.0f} ms"
        )
        table = Table(title=f"queries over {args.days} days: FINAL tables against rollups (median of 5)")
        for col in ("query", "rows", "FINAL s", "rollup s", "speed-up", "same numbers"):
            table.add_column(col, justify="right" if col != "query" else "left")
        client.command("OPTIMIZE TABLE raiwatch.signals_1d FINAL")  # as background merges would have
        for name, (raw_sql, rolled_sql) in QUERIES.items():
            t_raw, raw = timed(lambda s=raw_sql: client.query(s).result_rows, 5)
            t_rolled, rolled = timed(lambda s=rolled_sql: client.query(s).result_rows, 5)
            same = len(raw) == len(rolled) and all(
                a[:-1] == b[:-1] and abs(a[-1] - b[-1]) <= max(1e-9, 0.05 * abs(a[-1]))
                for a, b in zip(raw, rolled, strict=True)
            )
            table.add_row(
                name,
                f"{len(raw):,}",
                f"{t_raw:.3f}",
                f"{t_rolled:.3f}",
                f"{t_raw / t_rolled:.0f}x",
                str(same),
            )
        console.print(table)
        close_all()


if __name__ == "__main__":
    main()
