"""storage/clickhouse/TABLES.md: current with the migrations, every table in it, and every example
query run on replayed data (with drift, an abuse campaign, a fairness shift, labels and garbage).

The replayed history is years old, as a backfill would be: a table whose retention counted from
the event time instead of from when the row was stored comes back empty here the day it is written.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from raiwatch.dev import synth
from storage.clickhouse.tables_doc import notes
from tests.harness import ROOT, cli
from tests.test_clickhouse_schema import STORED_AT
from tests.test_rollups import run_all

DOC = ROOT / "storage" / "clickhouse" / "TABLES.md"
SETTINGS = "monitors:\n  drift:\n    reference_s: 600\n  abuse:\n    warmup_s: 300\n"
BACKFILL = datetime(2019, 11, 4, 9, 0, tzinfo=UTC)  # years before any day these tests run on
TTL_DAYS = 30  # clickhouse.events_ttl_days, the default


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tables")
    sc = synth.default_scenario(
        40_000, seed=3, garbage_fraction=0.002, start=BACKFILL, drift=True, abuse=True, fairness=True
    )
    labelled = [
        msgspec.structs.replace(m, labels=synth.Labels(share=0.5, delay="2m", jitter="1m"))
        if m.id == "claims-triage" else m
        for m in sc.models
    ]  # fmt: skip
    events = tmp / "events.jsonl"
    synth.write(events, msgspec.structs.replace(sc, models=labelled))
    feedback = events.with_name("events.feedback.jsonl")
    assert feedback.exists()
    (tmp / "raiwatch.yaml").write_text(SETTINGS)
    out = tmp / "out"
    p = cli(
        "replay", str(events), "--feedback", str(feedback), "--out", str(out), "--quiet",
        "--config", str(tmp / "raiwatch.yaml"),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return out


def test_the_document_is_current(tmp_path):
    fresh = tmp_path / "TABLES.md"
    p = subprocess.run(
        [sys.executable, "-m", "storage.clickhouse.tables_doc", str(fresh)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert fresh.read_text() == DOC.read_text(), "run: python -m storage.clickhouse.tables_doc"


def test_every_example_runs_on_a_replay_and_finds_rows(replayed):
    described = notes()
    rows = run_all(replayed, {name: n["example"] for name, n in described.items()})
    empty = sorted(name for name, found in rows.items() if not found)
    assert empty == sorted(name for name, n in described.items() if n.get("empty_in_replay"))


_EXPIRE_NOW = """
import sys, orjson
from storage.clickhouse import connect
c = connect(sys.argv[1], "raiwatch")
names = [n for (n,) in c.query(
    "SELECT name FROM system.tables WHERE database = 'raiwatch' AND engine_full LIKE '% TTL %'"
).result_rows]
out = {}
for t in names:
    c.command(f"OPTIMIZE TABLE raiwatch.{t} FINAL")  # runs every TTL that is due, now
    out[t] = c.query(
        f"SELECT (SELECT count() FROM raiwatch.{t}), dateDiff('hour', now(), min(delete_ttl_info_min))"
        f" FROM system.parts WHERE database = 'raiwatch' AND table = '{t}' AND active"
    ).result_rows[0]
sys.stdout.buffer.write(orjson.dumps(out))
"""


def test_a_backfill_years_old_is_kept_for_the_whole_retention(replayed):
    """Every table with a TTL, after ClickHouse applied its TTLs: the rows of history from years ago
    are there, and the first of them expires no sooner than events_ttl_days from now."""
    dsn = f"chdb://{(replayed / 'clickhouse').resolve()}"
    p = subprocess.run([sys.executable, "-c", _EXPIRE_NOW, dsn], capture_output=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    tables = msgspec.json.decode(p.stdout)
    assert set(tables) == set(STORED_AT)
    assert {t: rows for t, (rows, _) in tables.items() if not rows} == {}
    assert {t: hours for t, (_, hours) in tables.items() if hours < (TTL_DAYS - 1) * 24} == {}
