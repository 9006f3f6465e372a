"""Read helpers for analysts, tests and the pipeline's warm start.

Each reads with ``FINAL``, so replayed rows count once (but ``recent_event_ids``: a set of ids takes
a repeat as one). For example
``signals_df(connect(dsn, "raiwatch"), "raiwatch", signal="safety.violation_rate")``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd

from raiwatch.core.records import Signal
from storage.clickhouse.writer import EPOCH, MS

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


def _where(model_id: str | None = None, signal: str | None = None, since: datetime | None = None):
    conds, params = [], {}
    if signal is not None:
        conds.append("signal = {signal:String}")
        params["signal"] = signal
    if model_id is not None:
        conds.append("model_id = {model_id:String}")
        params["model_id"] = model_id
    if since is not None:
        conds.append("ts >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')")
        params["since_ms"] = (since - EPOCH) // MS
    return (" WHERE " + " AND ".join(conds)) if conds else "", params


def signals_df(
    client: Client,
    database: str,
    signal: str | None = None,
    model_id: str | None = None,
    since: datetime | None = None,
) -> pd.DataFrame:
    """Signals (optionally one signal, one model, from ``since`` (aware) on), ordered by scope and time."""
    where, params = _where(model_id, signal, since)
    return client.query_df(
        "SELECT ts, window_s, signal, family, model_id, model_version, dims, value, baseline, lower, upper,"
        f" p_value, n FROM {database}.signals FINAL{where} ORDER BY signal, model_id, dims_key, ts",
        parameters=params,
    )


def count_events(client: Client, database: str, model_id: str | None = None) -> int:
    """Distinct telemetry events stored (of one model, if given)."""
    where, params = _where(model_id)
    sql = f"SELECT count() FROM {database}.telemetry_events FINAL{where}"
    return int(client.command(sql, parameters=params))


def events_per_model(client: Client, database: str, since: datetime | None = None) -> dict[str, int]:
    """Distinct telemetry events per model (from ``since`` on, if given), largest first."""
    where, params = _where(since=since)
    rows = client.query(
        f"SELECT model_id, count() AS n FROM {database}.telemetry_events FINAL{where}"
        " GROUP BY model_id ORDER BY n DESC, model_id",
        parameters=params,
    ).result_rows
    return {m: int(n) for m, n in rows}


_SIGNAL_COLUMNS = (
    "ts, window_s, signal, model_id, value, n, model_version, dims, baseline, lower, upper, p_value,"
    " evidence_of, evidence_lower, evidence_upper"
)
_SIGNAL_ORDER = " ORDER BY ts, signal, model_id, model_version, dims_key"


def _signals(rows: Sequence[Sequence]) -> list[Signal]:
    return [
        Signal(ts=ts, window=window, signal=signal, model_id=model, value=value, n=n, model_version=version,
               dims=dict(dims), baseline=baseline, lower=lower, upper=upper, p_value=p, evidence_of=of,
               evidence_lower=ev_lo, evidence_upper=ev_hi)
        for (ts, window, signal, model, value, n, version, dims, baseline, lower, upper, p, of, ev_lo,
             ev_hi) in rows
    ]  # fmt: skip


def recent_signals(
    client: Client, database: str, since: datetime | None, models: Sequence[str] | None = None
) -> list[Signal]:
    """Stored signals as records, oldest window first: from ``since`` on, or the latest window's if
    None; of ``models`` only, if given."""
    params: dict = {}
    of_models = ""
    if models is not None:
        of_models = " AND model_id IN {models:Array(String)}"
        params["models"] = list(models)
    if since is None:
        where = f" WHERE ts = (SELECT max(ts) FROM {database}.signals WHERE 1{of_models}){of_models}"
    else:
        where, more = _where(since=since)
        where += of_models
        params |= more
    result = client.query(
        f"SELECT {_SIGNAL_COLUMNS} FROM {database}.signals FINAL{where}{_SIGNAL_ORDER}", parameters=params
    )
    return _signals(result.result_rows)


def signals_between(
    client: Client,
    database: str,
    since: datetime,
    until: datetime,
    names: Sequence[str],
    step: timedelta = timedelta(hours=6),
) -> Iterator[list[Signal]]:
    """Stored signals named ``names`` with window ends in ``(since, until]``, oldest first, in
    batches of ``step`` of event time (so a month of history never sits in memory at once); a gap
    without signals is crossed in one step (a stray signal from years ago costs one batch)."""
    between = (
        " WHERE ts > fromUnixTimestamp64Milli({a:Int64}, 'UTC')"
        " AND ts <= fromUnixTimestamp64Milli({b:Int64}, 'UTC') AND signal IN {names:Array(String)}"
    )
    t = since
    while t < until:
        end = min(t + step, until)
        rows = client.query(
            f"SELECT {_SIGNAL_COLUMNS} FROM {database}.signals FINAL{between}{_SIGNAL_ORDER}",
            parameters={"a": (t - EPOCH) // MS, "b": (end - EPOCH) // MS, "names": list(names)},
        ).result_rows
        if rows:
            yield _signals(rows)
        t = end
        if not rows and t < until:  # jump to just before the next stored signal, if any
            after = client.query(
                f"SELECT min(ts), count() FROM {database}.signals{between}",
                parameters={"a": (t - EPOCH) // MS, "b": (until - EPOCH) // MS, "names": list(names)},
            ).result_rows[0]
            if not after[1]:
                return
            t = max(t, after[0] - MS)


def signal_span(client: Client, database: str) -> tuple[datetime, datetime] | None:
    """The first window start and the last window end of the stored signals; None when there are none."""
    row = client.query(
        f"SELECT min(ts - toIntervalSecond(window_s)), max(ts), count() FROM {database}.signals"
    ).result_rows[0]
    return (row[0], row[1]) if row[2] else None


def recent_event_ids(client: Client, database: str, model_id: str, before: float, limit: int) -> list[str]:
    """The ids of the newest ``limit`` stored events of a model dated before ``before`` (epoch s), oldest
    first (an event stored twice may come twice)."""
    rows = client.query(
        f"SELECT event_id FROM {database}.telemetry_events WHERE model_id = {{model_id:String}}"
        " AND ts < fromUnixTimestamp64Milli({before_ms:Int64}, 'UTC') ORDER BY ts DESC LIMIT {limit:UInt64}",
        parameters={"model_id": model_id, "before_ms": math.floor(before * 1000), "limit": limit},
    ).result_rows
    return [r[0] for r in reversed(rows)]


def read_checkpoints(
    client: Client, database: str, kind: str, keys: list[str], prefixes: list[str] | None = None
) -> dict[str, tuple[float, bytes]]:
    """The newest checkpoint of each of ``keys`` of this ``kind``, and of every key starting with one
    of ``prefixes`` (a monitor's state kept in several rows): ``key -> (until epoch s, state)``."""
    if not keys and not prefixes:
        return {}
    rows = client.query(
        "SELECT key, toUnixTimestamp64Milli(max(until)) AS until_ms, argMax(state, until) AS state"
        f" FROM {database}.checkpoints WHERE kind = {{kind:String}} AND (key IN {{keys:Array(String)}}"
        " OR arrayExists(p -> startsWith(key, p), {prefixes:Array(String)})) GROUP BY key",
        parameters={"kind": kind, "keys": keys, "prefixes": prefixes or []},
        column_formats={"state": "bytes"},
    ).result_rows
    return {key: (until_ms / 1000, bytes(state)) for key, until_ms, state in rows}
