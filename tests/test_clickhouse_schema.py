"""ClickHouse schema: migrations on the real engine (chdb), cluster DDL by rendering, connect errors.

chdb opens one data path per process, so every ClickHouse test in a pytest run uses
``<basetemp>/chdb`` and a database of its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from datetime import datetime, timedelta

import pytest

from raiwatch.core.errors import ConfigError, StorageError
from storage.clickhouse import applied_versions, connect, migrate, render_migrations, schema
from storage.clickhouse.schema import split_statements

TABLES = {
    "telemetry_events", "telemetry_events_in", "telemetry_events_mv", "signals", "incidents",
    "rejected_events", "schema_migrations", "checkpoints", "feedback_events", "drift_reports",
    "abuse_clusters", "abuse_cluster_members", "fairness_metrics", "quality_metrics",
    "safety_rates_daily", "drift_daily", "fairness_daily", "incidents_weekly",  # analysts' views
    "signals_1m", "signals_1h", "signals_1d", "signals_1h_mv", "signals_1d_mv",  # rollups
    "events_1m", "events_1h", "events_1d", "events_1h_mv", "events_1d_mv",
}  # fmt: skip
VERSIONS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory) -> str:
    return f"chdb://{tmp_path_factory.getbasetemp() / 'chdb'}"


@pytest.fixture
def db() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def test_migrate_creates_documented_tables_and_records_versions(chdb_dsn, db):
    client = connect(chdb_dsn, db)
    applied = migrate(client, db, ttl_days=30)

    assert applied == [v for v, _ in render_migrations(db)] == VERSIONS
    tables = dict(
        client.query(f"SELECT name, comment FROM system.tables WHERE database = '{db}'").result_rows
    )
    assert set(tables) == TABLES
    assert all(comment for comment in tables.values()), tables
    undocumented = client.query(
        f"SELECT table, name FROM system.columns WHERE database = '{db}' AND comment = '' "
        "AND NOT endsWith(table, '_mv')"  # a view's columns are the query's; the view has a comment
    ).result_rows
    assert undocumented == []
    assert applied_versions(client, db).keys() == set(VERSIONS)
    engines = dict(
        client.query(f"SELECT name, engine FROM system.tables WHERE database = '{db}'").result_rows
    )
    assert engines["telemetry_events"] == engines["signals"] == engines["incidents"] == "ReplacingMergeTree"
    # raw events are inserted in compact parts (one file, not ~50); merges past 32 MiB write wide
    # parts, column by column (vertical), so a merge's memory is not the size of the part it writes
    create = client.command(f"SHOW CREATE TABLE {db}.telemetry_events")
    assert "min_bytes_for_wide_part = 33554432" in create
    assert "vertical_merge_algorithm_min_rows_to_activate = 1" in create


def test_migrate_again_applies_nothing(chdb_dsn, db):
    client = connect(chdb_dsn, db)
    assert migrate(client, db) == VERSIONS
    assert migrate(client, db) == []
    assert migrate(client, db) == []
    assert client.command(f"SELECT count() FROM {db}.schema_migrations") == len(VERSIONS)


def test_editing_an_applied_migration_is_refused(chdb_dsn, db):
    client = connect(chdb_dsn, db)
    migrate(client, db)
    client.command(f"TRUNCATE TABLE {db}.schema_migrations")
    client.command(f"INSERT INTO {db}.schema_migrations VALUES (1, '0001_init.sql', 'deadbeef', now64(3))")
    with pytest.raises(StorageError, match=r"0001_init\.sql was edited"):
        migrate(client, db)


def test_ttl_days_is_rendered_and_applied(chdb_dsn, db):
    (_, sql), *_ = render_migrations(db, ttl_days=7)
    assert sql.count("INTERVAL 7 DAY") == 2  # telemetry_events and rejected_events
    assert "{{" not in sql and "}}" not in sql

    client = connect(chdb_dsn, db)
    migrate(client, db, ttl_days=7)
    ddl = client.command(f"SHOW CREATE TABLE {db}.telemetry_events")
    assert re.search(r"TTL toDateTime\(ingested_at\) \+ toIntervalDay\(7\)", ddl), ddl


# What each table's retention counts from: always when the row was stored, never its event time, so
# that a backfill of any age is kept ttl_days. Tables not named here have no TTL (kept).
STORED_AT = {
    "telemetry_events": "toDateTime(ingested_at)", "feedback_events": "toDateTime(ingested_at)",
    "rejected_events": "toDateTime(received_at)", "fairness_metrics": "toDateTime(written_at)",
    "quality_metrics": "toDateTime(written_at)", "signals_1m": "rolled_at", "events_1m": "rolled_at",
}  # fmt: skip
TTL = re.compile(r"\bTTL (.+?)(?: SETTINGS |$)")


def ttls(client, db: str) -> dict[str, str]:
    """Each table's TTL expression, for the tables that have one."""
    rows = client.query(f"SELECT name, engine_full FROM system.tables WHERE database = '{db}'").result_rows
    return {name: m.group(1) for name, full in rows if (m := TTL.search(full))}


def clickhouse_now(client) -> datetime:
    """The engine's clock, which TTLs and now64() read: chdb does not see libfaketime's clock (see
    tests/test_clock_ahead.py), so a test that runs under it compares ClickHouse times with this."""
    return client.query("SELECT now64(3, 'UTC')").result_rows[0][0]


def add_row(client, db: str, table: str, ts: str, model_id: str, written_at: str = "") -> None:
    """A fairness_metrics or quality_metrics row (``written_at`` left to its default unless given)."""
    extra = ("", "") if not written_at else (", written_at", f", '{written_at}'")
    client.command(
        f"INSERT INTO {db}.{table} (ts, model_id, attribute, group, span_s{extra[0]})"
        f" VALUES ('{ts}', '{model_id}', '', '', 60{extra[1]})"
    )


def test_every_ttl_counts_from_when_the_row_was_stored(chdb_dsn, db):
    client = connect(chdb_dsn, db)
    migrate(client, db, ttl_days=7)
    assert ttls(client, db) == {t: f"{col} + toIntervalDay(7)" for t, col in STORED_AT.items()}

    now = clickhouse_now(client)
    for table in ("fairness_metrics", "quality_metrics"):
        add_row(client, db, table, "2001-02-03 04:05:06", "backfill")
        stale = f"{now - timedelta(days=8):%Y-%m-%d %H:%M:%S}"  # stored 8 days ago: past the 7
        add_row(client, db, table, f"{now:%Y-%m-%d %H:%M:%S}", "stale", written_at=stale)
        client.command(f"OPTIMIZE TABLE {db}.{table} FINAL")
        kept = client.query(f"SELECT model_id, ts, written_at FROM {db}.{table}").result_rows
        assert [m for m, *_ in kept] == ["backfill"], table  # 25 years old, stored just now: kept
        ((_, _, written_at),) = kept
        assert abs(written_at - now) < timedelta(minutes=5)


def test_rows_stored_before_0009_keep_the_expiry_they_had(chdb_dsn, db, monkeypatch):
    """An upgraded store: fairness and quality rows written by an older release count from their ts
    (when they were stored is not known), the rows written after the upgrade from their insert."""
    client = connect(chdb_dsn, db)
    releases = schema._templates()
    monkeypatch.setattr(schema, "_templates", lambda: [t for t in releases if t[0] <= 8])
    assert migrate(client, db) == VERSIONS[:8]
    old = clickhouse_now(client).replace(microsecond=0) - timedelta(days=2)
    for table in ("fairness_metrics", "quality_metrics"):
        add_row(client, db, table, f"{old:%Y-%m-%d %H:%M:%S}", "old")
    monkeypatch.undo()
    assert migrate(client, db) == VERSIONS[8:]  # 0009 and the migrations after it
    for table in ("fairness_metrics", "quality_metrics"):
        add_row(client, db, table, "2001-02-03 04:05:06", "new")
        rows = dict(client.query(f"SELECT model_id, written_at FROM {db}.{table}").result_rows)
        assert rows["old"] == old  # stored in the part: not the default now64(3) again at each read
        assert rows["new"] > old + timedelta(days=1)


def test_cluster_render_uses_on_cluster_and_replicated_engines():
    (_, single), *_ = render_migrations("raiwatch", cluster="", ttl_days=30)
    (_, clustered), *_ = render_migrations("raiwatch", cluster="c1", ttl_days=30)

    assert "ON CLUSTER" not in single and "Replicated" not in single
    assert "ReplacingMergeTree(ingested_at)" in single

    creates = re.findall(
        r"CREATE (?:TABLE|MATERIALIZED VIEW) IF NOT EXISTS (\S+) (ON CLUSTER c1)?", clustered
    )
    assert [t for t, _ in creates] == [
        "raiwatch.telemetry_events",
        "raiwatch.telemetry_events_in",
        "raiwatch.telemetry_events_mv",
        "raiwatch.signals",
        "raiwatch.incidents",
        "raiwatch.rejected_events",
    ]
    assert all(on for _, on in creates)
    path = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"
    assert f"ReplicatedReplacingMergeTree({path}, ingested_at)" in clustered
    assert f"ReplicatedReplacingMergeTree({path}, inserted_at)" in clustered
    assert f"ReplicatedReplacingMergeTree({path}, updated_at)" in clustered
    assert f"ReplicatedMergeTree({path})" in clustered
    assert re.search(r"ENGINE = (Replacing)?MergeTree", clustered) is None


def test_cluster_ddl_parses_with_the_clickhouse_parser(chdb_dsn):
    """No cluster runs here, but the engine's own parser checks every rendered statement."""
    client = connect(chdb_dsn, "raiwatch")
    for _, sql in render_migrations("raiwatch", cluster="c1", ttl_days=30):
        for stmt in split_statements(sql):
            formatted = client.command("SELECT formatQuery({q:String})", parameters={"q": stmt})
            assert "ON CLUSTER c1" in formatted


@pytest.mark.parametrize(
    ("database", "cluster"), [("rai watch", ""), ("db; DROP TABLE x", ""), ("raiwatch", "c1 --")]
)
def test_names_that_are_not_identifiers_are_refused(database, cluster):
    with pytest.raises(ConfigError, match="not a plain identifier"):
        render_migrations(database, cluster)


@pytest.mark.parametrize("ttl_days", [0, -1, 3651])
def test_ttl_days_out_of_range_is_refused(ttl_days):
    with pytest.raises(ConfigError, match=r"ttl_days must be 1\.\.3650"):
        render_migrations("raiwatch", ttl_days=ttl_days)


def test_connect_caches_one_client_per_dsn_and_database(chdb_dsn, db):
    client = connect(chdb_dsn, db)
    assert connect(chdb_dsn, db) is client
    assert client.database == db
    other = connect(chdb_dsn, db + "_b")  # a second client on the same path works in one process
    assert other is not client
    client.command(f"CREATE TABLE {db}.x (a UInt8) ENGINE = MergeTree ORDER BY a")
    client.command(f"INSERT INTO {db}.x VALUES (1)")
    assert other.command(f"SELECT count() FROM {db}.x") == 1


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("chdb://relative/path", "must be absolute"),
        ("ftp://host/x", "unknown scheme"),
        (
            "http://reader:s3cret@127.0.0.1:1",
            "ClickHouse at http://reader:\\*\\*\\*@127.0.0.1:1: cannot connect",
        ),
    ],
)
def test_connect_errors_name_the_dsn_without_its_password(dsn, message):
    with pytest.raises(StorageError, match=message) as err:
        connect(dsn, "raiwatch")
    assert "s3cret" not in str(err.value)


def test_a_second_chdb_path_in_one_process_is_refused(chdb_dsn, tmp_path):
    connect(chdb_dsn, "raiwatch")
    with pytest.raises(StorageError, match="one path per process"):
        connect(f"chdb://{tmp_path / 'other'}", "raiwatch")


def test_a_chdb_path_held_by_another_process_is_refused(chdb_dsn):
    connect(chdb_dsn, "raiwatch")
    code = f"from storage.clickhouse import connect\nconnect({chdb_dsn!r}, 'raiwatch')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "another process has this chdb path open" in run.stderr
