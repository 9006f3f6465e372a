"""Rollups (signals_1m/1h/1d, events_1m/1h/1d): every level equals the deduplicated tables it
summarises, on replayed data that crosses an hour and a day, however often each row is written,
and across restarts of the roller."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from raiwatch.dev import synth
from tests.harness import ROOT, cli, query

START = datetime(2026, 11, 1, 23, 40, tzinfo=UTC)  # 40,000 events at 20/s: to 00:13, over midnight
STRAY = "2001-02-03T04:05:06Z"  # and first, one event from long ago: its hour, not every hour since
SETTINGS = "monitors:\n  drift:\n    reference_s: 600\nclickhouse:\n  rollup_every_s: 0\n"
BUCKET = {"1m": "minute", "1h": "hour", "1d": "day"}
ROUND = {"1m": "toStartOfMinute", "1h": "toStartOfHour", "1d": "toStartOfDay"}
SIGNAL_KEY = "model_id, signal, model_version, dims_key, window_s, b"
EVENT_KEY = "model_id, model_version, deployment, feature, b"


def signals_direct(level: str) -> str:
    """The level's numbers computed straight from ``signals FINAL``."""
    return (
        f"SELECT {ROUND[level]}(ts - toIntervalSecond(window_s)) AS b, model_id, signal, model_version,"
        " dims_key, window_s, count() AS windows, sum(s.n) AS n, sum(s.value) AS value_sum,"
        " sum(s.value * s.n) AS value_n_sum, min(s.value) AS value_min, max(s.value) AS value_max,"
        " min(s.p_value) AS p_value_min FROM raiwatch.signals AS s FINAL"
        f" GROUP BY {SIGNAL_KEY} ORDER BY {SIGNAL_KEY}"
    )


def signals_rolled(level: str) -> str:
    return (
        f"SELECT {BUCKET[level]} AS b, model_id, signal, model_version, dims_key, window_s,"
        " sum(windows) AS windows, sum(n) AS n, sum(value_sum) AS value_sum, sum(value_n_sum) AS value_n_sum,"
        " min(value_min) AS value_min, max(value_max) AS value_max, min(p_value_min) AS p_value_min"
        f" FROM raiwatch.signals_{level} GROUP BY {SIGNAL_KEY} ORDER BY {SIGNAL_KEY}"
    )


def events_direct(level: str) -> str:
    return (
        f"SELECT {ROUND[level]}(ts) AS b, model_id, model_version, deployment, feature, count() AS events,"
        " countIf(error IS NOT NULL) AS errors, countIf(notEmpty(violations)) AS violating,"
        " countIf(safety_action = 'blocked') AS blocked, countIf(e.favorable IS NOT NULL) AS decisions,"
        " sum(ifNull(e.favorable, 0)) AS favorable, sum(ifNull(request_tokens, 0)) AS request_tokens,"
        " sum(ifNull(response_tokens, 0)) AS response_tokens, countIf(latency_ms IS NOT NULL) AS latency_n,"
        " sum(ifNull(latency_ms, 0)) AS latency_ms_sum, max(ifNull(latency_ms, 0)) AS latency_ms_max,"
        " quantilesExact(0.5, 0.95, 0.99)(latency_ms) AS latency_q,"
        " uniqExactIf(user_id, user_id != '') AS users"
        f" FROM raiwatch.telemetry_events AS e FINAL GROUP BY {EVENT_KEY} ORDER BY {EVENT_KEY}"
    )


def events_rolled(level: str) -> str:
    return (
        f"SELECT {BUCKET[level]} AS b, model_id, model_version, deployment, feature, sum(events) AS events,"
        " sum(errors) AS errors, sum(violating) AS violating, sum(blocked) AS blocked,"
        " sum(decisions) AS decisions, sum(favorable) AS favorable, sum(request_tokens) AS request_tokens,"
        " sum(response_tokens) AS response_tokens, sum(latency_n) AS latency_n,"
        " sum(latency_ms_sum) AS latency_ms_sum, max(latency_ms_max) AS latency_ms_max,"
        " quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms_q) AS latency_q,"
        " uniqCombinedMerge(users) AS users"
        f" FROM raiwatch.events_{level} GROUP BY {EVENT_KEY} ORDER BY {EVENT_KEY}"
    )


EXACT_EVENT_COUNTS = ("events", "errors", "violating", "blocked", "decisions", "favorable", "request_tokens",
                      "response_tokens", "latency_n")  # fmt: skip


def assert_rollups_exact(rows: dict[str, list[dict]]) -> None:
    """``rows`` holds each query's result by name (``signals_direct_1h``...): compare every level."""
    for level in BUCKET:
        direct, rolled = rows[f"signals_direct_{level}"], rows[f"signals_rolled_{level}"]
        assert [_key(r, SIGNAL_KEY) for r in rolled] == [_key(r, SIGNAL_KEY) for r in direct], level
        for d, r in zip(direct, rolled, strict=True):
            assert (r["windows"], r["n"], r["value_min"], r["value_max"], r["p_value_min"]) == (
                d["windows"], d["n"], d["value_min"], d["value_max"], d["p_value_min"]
            ), (level, d)  # fmt: skip
            assert r["value_sum"] == pytest.approx(d["value_sum"], rel=1e-9, abs=1e-9)
            assert r["value_n_sum"] == pytest.approx(d["value_n_sum"], rel=1e-9, abs=1e-9)
        direct, rolled = rows[f"events_direct_{level}"], rows[f"events_rolled_{level}"]
        assert [_key(r, EVENT_KEY) for r in rolled] == [_key(r, EVENT_KEY) for r in direct], level
        for d, r in zip(direct, rolled, strict=True):
            assert [r[c] for c in EXACT_EVENT_COUNTS] == [d[c] for c in EXACT_EVENT_COUNTS], (level, d)
            assert r["latency_ms_sum"] == pytest.approx(d["latency_ms_sum"], rel=1e-9)
            assert r["latency_ms_max"] == d["latency_ms_max"]
            assert abs(r["users"] - d["users"]) <= max(2, 0.02 * d["users"])  # HyperLogLog
            if d["latency_n"] >= 200:  # t-digest against the exact quantiles
                for got, want in zip(r["latency_q"], d["latency_q"], strict=True):
                    assert got == pytest.approx(want, rel=0.1)


def _key(row: dict, key: str) -> tuple:
    return tuple(row[k.strip()] for k in key.split(","))


def rollup_queries() -> dict[str, str]:
    out = {}
    for level in BUCKET:
        out[f"signals_direct_{level}"] = signals_direct(level)
        out[f"signals_rolled_{level}"] = signals_rolled(level)
        out[f"events_direct_{level}"] = events_direct(level)
        out[f"events_rolled_{level}"] = events_rolled(level)
    return out


def rows_of(client, queries: dict[str, str]) -> dict[str, list[dict]]:
    """Each query's rows as dicts, the bucket ``b`` as text (a chdb or a server client)."""
    out = {}
    for name, sql in queries.items():
        r = client.query(sql)
        out[name] = [
            {k: (str(v) if k == "b" else v) for k, v in zip(r.column_names, row, strict=True)}
            for row in r.result_rows
        ]
    return out


_RUN_ALL = """
import sys, orjson
from storage.clickhouse import connect
from tests.test_rollups import rows_of
out = rows_of(connect(sys.argv[1], "raiwatch"), orjson.loads(sys.stdin.buffer.read()))
sys.stdout.buffer.write(orjson.dumps(out, default=str, option=orjson.OPT_SERIALIZE_NUMPY))
"""


def run_all(out: Path, queries: dict[str, str]) -> dict[str, list[dict]]:
    """Every query's rows, from one process (the store's owner must have stopped)."""
    dsn = f"chdb://{(out / 'clickhouse').resolve()}"
    p = subprocess.run(
        [sys.executable, "-c", _RUN_ALL, dsn], input=orjson.dumps(queries), capture_output=True, cwd=ROOT
    )
    assert p.returncode == 0, p.stderr.decode()
    return orjson.loads(p.stdout)


def check(out: Path) -> dict[str, list[dict]]:
    rows = run_all(out, rollup_queries())
    assert_rollups_exact(rows)
    return rows


def totals(out: Path) -> dict:
    return query(
        out,
        "SELECT (SELECT sum(n) FROM raiwatch.signals_1d) AS n,"
        " (SELECT sum(windows) FROM raiwatch.signals_1d) AS w,"
        " (SELECT sum(events) FROM raiwatch.events_1d) AS e,"
        " (SELECT sum(events) FROM raiwatch.events_1m) AS e1m,"
        " (SELECT count() FROM raiwatch.telemetry_events FINAL) AS stored",
    )[0]


def replay(events: Path, out: Path, settings: Path) -> None:
    p = cli("replay", str(events), "--out", str(out), "--quiet", "--config", str(settings))
    assert p.returncode == 0, p.stderr


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("rollups")
    events = tmp / "events.jsonl"
    scenario = synth.default_scenario(40_000, seed=5, rate_per_s=20.0, start=START, drift=True, fairness=True)
    synth.write(events, scenario)
    lines = events.read_bytes().splitlines()
    stray = orjson.loads(lines[0]) | {"event_id": "stray", "timestamp": STRAY}
    events.write_bytes(b"\n".join([orjson.dumps(stray), *lines]) + b"\n")
    settings = tmp / "raiwatch.yaml"
    settings.write_text(SETTINGS)
    return events, settings


@pytest.fixture(scope="module")
def replayed(history, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rollups-out") / "out"
    replay(history[0], out, history[1])
    return out


def test_every_level_equals_the_deduplicated_tables_over_an_hour_and_a_day(replayed):
    rows = check(replayed)
    days = {r["b"][:10] for r in rows["events_rolled_1d"]}
    hours = {r["b"] for r in rows["events_rolled_1h"]}
    assert days == {STRAY[:10], "2026-11-01", "2026-11-02"} and len(hours) == 3  # crossed midnight
    assert sum(r["events"] for r in rows["events_rolled_1d"]) == 40_001
    assert {r["signal"] for r in rows["signals_rolled_1d"]} >= {
        "safety.violation_rate", "drift.feature", "fairness.disparity"
    }  # fmt: skip


def test_every_rollup_column_is_documented(replayed):
    rows = query(
        replayed,
        "SELECT table, name, comment FROM system.columns WHERE database = 'raiwatch'"
        " AND match(table, '^(signals|events)_1[mhd]$')",
    )
    assert len({r["table"] for r in rows}) == 6
    assert [r for r in rows if not r["comment"]] == []


_WRITE_TWICE_AND_RESTART = """
import sys
from datetime import UTC, datetime
from storage.clickhouse import Rollups, connect

DUPLICATE_EVERYTHING = (
    # what a crashed worker, a restarted one and a partition's next owner do: write it all again
    "INSERT INTO raiwatch.signals SELECT * REPLACE (now64(3) AS inserted_at) FROM raiwatch.signals",
    "INSERT INTO raiwatch.telemetry_events_in (event_id, ts, model_id, raw, ingested_at)"
    " SELECT event_id, ts, model_id, raw, now64(3) FROM raiwatch.telemetry_events",
)
client = connect(sys.argv[1], "raiwatch")
count = lambda: client.query("SELECT count() FROM raiwatch.telemetry_events").result_rows[0][0]
models = [m for (m,) in client.query("SELECT DISTINCT model_id FROM raiwatch.signals").result_rows]
assert len(models) == 3, models
raw = count()
for sql in DUPLICATE_EVERYTHING:
    client.command(sql)
assert count() == 2 * raw
mark1 = datetime(2026, 11, 1, 23, 50, tzinfo=UTC).timestamp()
mark2 = datetime(2026, 11, 2, 0, 5, tzinfo=UTC).timestamp()
end = datetime(2026, 11, 2, 1, 0, tzinfo=UTC).timestamp()
first = Rollups("raiwatch", max_chunks=1)  # a live worker's pace: one hour per family and call
assert not first.advance(client, models, mark1)  # the stray event's hour, in 2001
assert first.advance(client, models, mark1)  # then straight on, from the first rows (23:40) to 23:50
assert not first.advance(client, models, mark2)  # to the hour's end (00:00), short of 00:05
assert first.advance(client, models, mark2)  # on from its in-memory cursors
assert first.advance(client, models, mark2)  # nothing new
for sql in DUPLICATE_EVERYTHING:  # and again, after part of it was rolled up
    client.command(sql)
second = Rollups("raiwatch")  # a restart: the cursors come from the tables
second.advance(client, models, end)
assert Rollups("raiwatch").advance(client, models, end)  # a third roller finds it all done
"""


def test_rows_written_again_and_a_restarted_roller_count_once(history, tmp_path):
    events, _ = history
    settings = tmp_path / "raiwatch.yaml"
    settings.write_text(SETTINGS.replace("rollup_every_s: 0", "rollups: false"))
    out = tmp_path / "out"
    replay(events, out, settings)
    assert totals(out)["e"] == 0  # nothing rolled up by this replay
    dsn = f"chdb://{(out / 'clickhouse').resolve()}"  # in a process of its own: one chdb path each
    p = subprocess.run(
        [sys.executable, "-c", _WRITE_TWICE_AND_RESTART, dsn], capture_output=True, text=True, cwd=ROOT
    )
    assert p.returncode == 0, p.stderr
    assert totals(out)["e"] == 40_001
    check(out)


_READ_ACROSS_THE_GAP = """
import sys
from storage.clickhouse import connect, signal_span, signals_between
client = connect(sys.argv[1], "raiwatch")
calls = 0
query = client.query
def counted(*a, **k):
    global calls
    calls += 1
    return query(*a, **k)
client.query = counted
since, until = signal_span(client, "raiwatch")
names = ["safety.violation_rate"]
got = sum(len(b) for b in signals_between(client, "raiwatch", since, until, names))
stored = query("SELECT count() FROM raiwatch.signals FINAL WHERE signal IN {n:Array(String)}",
               parameters={"n": names}).result_rows[0][0]
print(since.year, got, stored, calls)
"""


def test_the_history_of_a_backtest_crosses_a_gap_of_years_in_a_few_reads(replayed):
    """Backtests read signals in 6-hour batches: 25 years without any would be 36,500 reads."""
    dsn = f"chdb://{(replayed / 'clickhouse').resolve()}"
    p = subprocess.run(
        [sys.executable, "-c", _READ_ACROSS_THE_GAP, dsn], capture_output=True, text=True, cwd=ROOT
    )
    assert p.returncode == 0, p.stderr
    first_year, got, stored, calls = map(int, p.stdout.split())
    assert first_year == 2001 and got == stored > 0
    assert calls <= 6, calls


_CHUNKS = """
import sys
from datetime import UTC, datetime
from storage.clickhouse import Rollups, connect
from storage.clickhouse.rollups import EVENTS
client = connect(sys.argv[1], "raiwatch")
models = [m for (m,) in client.query("SELECT DISTINCT model_id FROM raiwatch.telemetry_events").result_rows]
end = int(datetime(2026, 11, 2, 1, 0, tzinfo=UTC).timestamp() * 1000)
for roller in (Rollups("raiwatch"), Rollups("raiwatch", max_chunks=5)):
    starts = [h * roller.chunk_ms for h in roller._chunks(client, EVENTS, models, None, end)]
    print(" ".join(datetime.fromtimestamp(s / 1000, UTC).strftime("%Y-%m-%dT%H") for s in starts))
"""


def test_a_replay_rolls_up_a_utc_day_per_insert_and_a_live_worker_an_hour(replayed):
    """A replay waits for its roll-ups at its end, each insert with a fixed cost: one per UTC day
    with rows. A live worker takes short steps: one per hour with rows. Either way, one partition."""
    dsn = f"chdb://{(replayed / 'clickhouse').resolve()}"
    p = subprocess.run([sys.executable, "-c", _CHUNKS, dsn], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    replay_chunks, live_chunks = p.stdout.splitlines()
    assert replay_chunks == "2001-02-03T00 2026-11-01T00 2026-11-02T00"
    assert live_chunks == "2001-02-03T04 2026-11-01T23 2026-11-02T00"
