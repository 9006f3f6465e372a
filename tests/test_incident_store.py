"""The SQL incident store on a real SQLite file and on a real PostgreSQL server.

PostgreSQL comes from ``RAIWATCH_TEST_PG_URL`` when set (any database the user may create schemas
in); otherwise the session fixture runs Debian's ``initdb`` and ``postgres`` from
``/usr/lib/postgresql/*/bin`` in a temporary folder (as user ``postgres`` when run as root) and
stops it at the end. Without either, the PostgreSQL cases are skipped with the reason.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from raiwatch.core.errors import ConfigError, StorageError
from raiwatch.core.records import Incident, IncidentChange
from raiwatch.dev.localkafka import free_port
from storage.incidents import Base, IncidentStore, head_revision, migrate
from storage.incidents.models import VERSION_TABLE

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file in a folder that does not exist yet, or a fresh PG schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'var' / 'incidents.db'}"
        return
    yield request.getfixturevalue("pg_url")


@pytest.fixture
def store(url: str) -> Iterator[IncidentStore]:
    with IncidentStore(url) as s:
        yield s


def inc(incident_id: str = "inc-0001", dedup_key: str = "k1", **kw: object) -> Incident:
    fields: dict = {
        "rule": "safety_violation_rate_high",
        "signal": "safety.violation_rate",
        "severity": "high",
        "status": "open",
        "opened_at": T0,
        "labels": {"model_id": "m1", "category": "self_harm"},
        "summary": "violation rate 4.0% > 2.0% for m1",
        "runbook_url": "https://runbooks.example/safety",
        "value": 0.04,
        "threshold": 0.02,
    }
    fields.update(kw)
    return Incident(incident_id=incident_id, dedup_key=dedup_key, **fields)


def opened(**kw: object) -> IncidentChange:
    return IncidentChange(kind="opened", incident=inc(**kw))


def updated(**kw: object) -> IncidentChange:
    return IncidentChange(kind="updated", incident=inc(**kw))


def resolved(**kw: object) -> IncidentChange:
    return IncidentChange(kind="resolved", incident=inc(**kw))


def kinds(store: IncidentStore, incident_id: str) -> list[str]:
    return [h["kind"] for h in store.history(incident_id)]


# -- migrations ---------------------------------------------------------------------------------


def test_migrate_fresh_then_again_applies_nothing_and_keeps_data(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alembic")
    assert migrate(url) == head_revision() == "0004"
    assert "Running upgrade  -> 0001" in caplog.text and "Running upgrade 0001 -> 0002" in caplog.text
    with IncidentStore(url, migrate=False) as s:
        s.apply([opened()])

    caplog.clear()
    assert migrate(url) == "0004"
    assert "Running upgrade" not in caplog.text
    with IncidentStore(url) as s:  # migrating on open is a no-op too
        assert [i.incident_id for i in s.list()] == ["inc-0001"]


def test_migrated_schema_matches_the_orm_model(url: str) -> None:
    migrate(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
            )
            assert compare_metadata(ctx, Base.metadata) == []
            names = set(sa.inspect(conn).get_table_names())
        assert {"incidents", "incident_events", "notifications", "silences", VERSION_TABLE} <= names
    finally:
        engine.dispose()


def test_alembic_command_line_uses_the_shipped_ini(tmp_path: Path) -> None:
    ini = ROOT / "storage" / "incidents" / "alembic.ini"
    db = f"sqlite:///{tmp_path / 'cli.db'}"

    def alembic(*args: str) -> str:
        cmd = [sys.executable, "-m", "alembic", "-c", str(ini), *args]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    alembic("-x", f"url={db}", "upgrade", "head")
    assert "0004 (head)" in alembic("-x", f"url={db}", "current")
    sql = alembic("-x", "url=postgresql+psycopg://dba@db.example/raiwatch", "upgrade", "head", "--sql")
    partial = "CREATE UNIQUE INDEX uq_incidents_open_dedup_key ON incidents (dedup_key) "
    partial += "WHERE status != 'resolved'"
    assert partial in sql
    assert "TIMESTAMP WITH TIME ZONE" in sql


# -- the rule engine's changes ------------------------------------------------------------------


def test_duplicate_open_updates_the_open_incident_instead_of_inserting(store: IncidentStore) -> None:
    store.apply([opened()])
    later = T0 + timedelta(minutes=5)
    store.apply([opened(incident_id="inc-0002", opened_at=later, value=0.07, summary="now 7%")])

    [only] = store.list()
    assert (only.incident_id, only.opened_at, only.updated_at) == ("inc-0001", T0, later)
    assert (only.value, only.summary) == (0.07, "now 7%")
    assert kinds(store, "inc-0001") == ["opened", "updated"]


def test_reapplying_the_same_changes_is_a_no_op(store: IncidentStore) -> None:
    batch = [
        opened(),
        updated(updated_at=T0 + timedelta(minutes=1), value=0.05, summary="5%"),
        opened(dedup_key="k2", incident_id="inc-0002"),
    ]
    store.apply(batch)
    before = (store.list(), store.history("inc-0001"), store.history("inc-0002"))
    store.apply(batch)  # a restarted worker replays the window
    store.apply(batch[:1])
    assert (store.list(), store.history("inc-0001"), store.history("inc-0002")) == before
    assert len(before[0]) == 2


def test_update_changes_value_summary_and_time_but_not_with_stale_changes(store: IncidentStore) -> None:
    store.apply([opened()])
    t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    store.apply([updated(updated_at=t2, value=0.09, summary="9%")])
    store.apply([updated(updated_at=t1, value=0.05, summary="5%")])  # older: ignored
    got = store.get("inc-0001")
    assert (got.value, got.summary, got.updated_at, got.status) == (0.09, "9%", t2, "open")
    assert kinds(store, "inc-0001") == ["opened", "updated"]


def test_update_without_an_open_incident_is_skipped(store: IncidentStore) -> None:
    store.apply([updated(dedup_key="nothing-open")])
    assert store.list() == []


def test_resolve_change_closes_the_open_incident(store: IncidentStore) -> None:
    store.apply([opened()])
    t = T0 + timedelta(minutes=10)
    store.apply([resolved(resolved_at=t)])
    store.apply([resolved(resolved_at=t + timedelta(minutes=1))])  # replayed / repeated: no-op
    got = store.get("inc-0001")
    assert (got.status, got.resolved_at) == ("resolved", t)
    assert store.open_incidents() == []
    assert kinds(store, "inc-0001") == ["opened", "resolved"]


def test_open_update_resolve_in_one_batch(store: IncidentStore) -> None:
    t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    store.apply([opened(), updated(updated_at=t1, value=0.08), resolved(resolved_at=t2)])
    got = store.get("inc-0001")
    assert (got.status, got.value, got.updated_at, got.resolved_at) == ("resolved", 0.08, t1, t2)


def test_reopen_after_resolve_creates_a_new_incident_with_the_same_dedup_key(store: IncidentStore) -> None:
    store.apply([opened(), resolved(resolved_at=T0 + timedelta(minutes=10))])
    again = T0 + timedelta(hours=1)
    store.apply([opened(incident_id="inc-0002", opened_at=again)])
    store.apply([opened()])  # replay of the first, already resolved, opening: not resurrected

    new, old = store.list()
    assert (new.incident_id, new.status, new.opened_at) == ("inc-0002", "open", again)
    assert (old.incident_id, old.status) == ("inc-0001", "resolved")
    assert new.dedup_key == old.dedup_key == "k1"
    assert [i.incident_id for i in store.open_incidents()] == ["inc-0002"]


def test_apply_is_all_or_nothing(store: IncidentStore, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = IncidentChange(kind="opened", incident=inc("inc-0009", "k9", severity="page"))
    with pytest.raises(ValueError, match="severity 'page'"):
        store.apply([opened(), bad])
    assert store.list() == []

    real, calls = IncidentStore._apply_one, []

    def fail_second(self: IncidentStore, s: sa.orm.Session, change: IncidentChange) -> None:
        calls.append(change)
        if len(calls) == 2:
            raise RuntimeError("crash mid-batch")
        real(self, s, change)

    monkeypatch.setattr(IncidentStore, "_apply_one", fail_second)
    with pytest.raises(RuntimeError):
        store.apply([opened(), opened(incident_id="inc-0002", dedup_key="k2")])
    assert store.list() == []


def test_concurrent_opens_of_one_dedup_key_leave_one_incident(url: str) -> None:
    migrate(url)
    writers = 4
    stores = [IncidentStore(url, migrate=False) for _ in range(writers)]
    start, errors = threading.Barrier(writers), []

    def run(n: int) -> None:
        try:
            start.wait()
            for r in range(5):
                at = T0 + timedelta(seconds=r)
                stores[n].apply([opened(incident_id=f"w{n}-r{r}", opened_at=at, value=float(n))])
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert len(stores[0].list()) == 1
    finally:
        for s in stores:
            s.close()


# -- on-call ------------------------------------------------------------------------------------


def test_ack_resolve_feedback_through_the_api_with_history(store: IncidentStore) -> None:
    store.apply([opened(incident_id="7f3a9c21-aaaa")])
    t_ack, t_res = T0 + timedelta(minutes=3), T0 + timedelta(minutes=30)

    acked = store.acknowledge("7f3a", actor="alice", at=t_ack)
    assert (acked.status, acked.acknowledged_at) == ("acknowledged", t_ack)
    assert store.acknowledge("7f3a9c21-aaaa", actor="bob").acknowledged_at == t_ack  # no-op
    assert [i.incident_id for i in store.open_incidents()] == ["7f3a9c21-aaaa"]

    done = store.resolve("7f3a9c21", actor="alice", at=t_res)
    assert (done.status, done.resolved_at) == ("resolved", t_res)
    rated = store.set_feedback("7f3a", "false_positive", actor="bob", note="deploy noise")
    assert rated.feedback == "false_positive"
    assert rated.to_contract()["feedback"] == "false_positive"

    rows = store.history("7f3a")
    assert [(h["kind"], h["actor"]) for h in rows] == [
        ("opened", "rule-engine"),
        ("acknowledged", "alice"),
        ("resolved", "alice"),
        ("feedback", "bob"),
    ]
    assert rows[1]["at"] == t_ack and rows[2]["at"] == t_res
    assert rows[3]["detail"] == {"feedback": "false_positive", "note": "deploy noise"}
    assert all(h["at"].tzinfo is not None for h in rows)


def test_invalid_transitions_and_lookups_raise_clear_errors(store: IncidentStore) -> None:
    store.apply([opened(incident_id="abc-1"), opened(incident_id="abc-2", dedup_key="k2")])
    store.resolve("abc-1")
    with pytest.raises(ValueError, match=r"abc-1 was resolved .* cannot be acknowledged"):
        store.acknowledge("abc-1")
    with pytest.raises(ValueError, match="feedback 'maybe'"):
        store.set_feedback("abc-1", "maybe")
    with pytest.raises(KeyError, match="ambiguous: it matches abc-1, abc-2"):
        store.get("abc")
    with pytest.raises(KeyError, match="no incident has the id or id prefix 'zzz'"):
        store.get("zzz")
    with pytest.raises(KeyError, match="no incident"):
        store.history("ABC-1")  # ids are case-sensitive on every backend
    with pytest.raises(KeyError):
        store.acknowledge("")
    with pytest.raises(ValueError, match="status 'closed'"):
        store.list(status="closed")
    assert store.resolve("abc-1").status == "resolved"  # resolving twice is a no-op
    assert kinds(store, "abc-1") == ["opened", "resolved"]


def test_list_filters_orders_newest_first_and_limits(store: IncidentStore) -> None:
    store.apply(
        [
            opened(incident_id=f"i{n}", dedup_key=f"k{n}", opened_at=T0 + timedelta(minutes=n), rule=rule)
            for n, rule in enumerate(["a", "b", "a", "b", "a"])
        ]
    )
    store.resolve("i4")
    store.acknowledge("i2")
    assert [i.incident_id for i in store.list()] == ["i4", "i3", "i2", "i1", "i0"]
    assert [i.incident_id for i in store.list(limit=2)] == ["i4", "i3"]
    assert [i.incident_id for i in store.list(rule="a")] == ["i4", "i2", "i0"]
    assert [i.incident_id for i in store.list(status="open", rule="a")] == ["i0"]
    assert [i.incident_id for i in store.open_incidents()] == ["i0", "i1", "i2", "i3"]


def test_timestamps_are_utc_aware_whatever_came_in(store: IncidentStore) -> None:
    cest = timezone(timedelta(hours=2))
    store.apply([opened(opened_at=datetime(2026, 3, 1, 14, 0, tzinfo=cest))])
    store.apply([opened(incident_id="naive", dedup_key="k2", opened_at=datetime(2026, 3, 1, 12, 0))])
    for got in store.list():
        assert got.opened_at == T0
        assert got.opened_at.tzinfo is UTC and got.updated_at is not None and got.updated_at.tzinfo is UTC
    assert store.acknowledge("naive").acknowledged_at.tzinfo is UTC  # type: ignore[union-attr]
    assert store.get("inc-0001").labels == {"model_id": "m1", "category": "self_harm"}


# -- specialists --------------------------------------------------------------------------------


def test_precision_per_rule_from_on_call_feedback(store: IncidentStore) -> None:
    store.apply(
        [opened(incident_id=f"a{n}", dedup_key=f"a{n}", rule="rule_a") for n in range(4)]
        + [opened(incident_id="b0", dedup_key="b0", rule="rule_b")]
    )
    store.set_feedback("a0", "true_positive")
    store.set_feedback("a1", "true_positive")
    store.set_feedback("a2", "true_positive")
    store.set_feedback("a2", "false_positive", note="changed my mind")  # the last verdict counts

    got = store.precision()
    assert got["rules"]["rule_a"] == {
        "incidents": 4,
        "true_positive": 2,
        "false_positive": 1,
        "unlabelled": 1,
        "precision": pytest.approx(2 / 3),
    }
    assert got["rules"]["rule_b"] == {
        "incidents": 1,
        "true_positive": 0,
        "false_positive": 0,
        "unlabelled": 1,
        "precision": None,
    }
    assert got["overall"]["incidents"] == 5 and got["overall"]["precision"] == pytest.approx(2 / 3)
    assert list(store.precision("rule_b")["rules"]) == ["rule_b"]
    assert store.precision("no_such_rule")["rules"]["no_such_rule"]["incidents"] == 0


# -- the database's own guarantees --------------------------------------------------------------


def test_partial_unique_index_rejects_a_second_open_row_behind_the_stores_back(
    store: IncidentStore, url: str
) -> None:
    store.apply([opened()])
    table = Base.metadata.tables["incidents"]
    row = {
        "incident_id": "sneaky",
        "dedup_key": "k1",
        "rule": "r",
        "signal": "safety.x",
        "severity": "info",
        "status": "acknowledged",
        "opened_at": T0,
        "labels": {},
        "summary": "",
        "runbook_url": "x",
    }
    engine = sa.create_engine(url)
    try:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(table.insert().values(row))
        with engine.begin() as conn:  # a resolved duplicate is fine: the index is partial
            conn.execute(table.insert().values({**row, "status": "resolved"}))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(table.insert().values({**row, "incident_id": "bad-status", "status": "closed"}))
    finally:
        engine.dispose()
    assert len(store.list()) == 2


# -- configuration errors -----------------------------------------------------------------------


def test_bad_urls_raise_actionable_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is empty"):
        IncidentStore("")
    with pytest.raises(ConfigError, match=r"not a database URL .*sqlite:///"):
        IncidentStore("incidents.db")
    with pytest.raises(ConfigError, match="unknown database kind 'nosuchdb'"):
        IncidentStore("nosuchdb://host/db")
    with pytest.raises(ConfigError, match=r"driver .* is not installed"):
        IncidentStore("postgresql+pg8000://u@localhost/db")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="cannot create folder"):
        IncidentStore(f"sqlite:///{tmp_path / 'a-file' / 'incidents.db'}")
    with pytest.raises(StorageError, match=r"cannot migrate .*127\.0\.0\.1") as err:
        IncidentStore(f"postgresql+psycopg://u:secret@127.0.0.1:{free_port()}/db")
    assert "secret" not in str(err.value)


def test_sqlite_store_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "incidents.db"
    with IncidentStore(f"sqlite:///{path}") as s:
        s.apply([opened()])
    assert path.is_file()


def test_stats_per_rule_with_time_to_ack_and_resolve(store: IncidentStore) -> None:
    crit = {"rule": "crit", "severity": "critical"}
    later = T0 + timedelta(days=2)
    store.apply(
        [opened(incident_id=f"c{n}", dedup_key=f"c{n}", **crit) for n in range(5)]
        + [opened(incident_id="w0", dedup_key="w0", rule="warn", severity="warning", opened_at=later)]
    )
    for n, minutes in enumerate((4, 10, 30)):
        store.acknowledge(f"c{n}", actor="oncall", at=T0 + timedelta(minutes=minutes))
    done = T0 + timedelta(minutes=50)
    store.apply([resolved(incident_id="c0", dedup_key="c0", status="resolved", resolved_at=done, **crit)])
    for n in range(4):
        store.set_feedback(f"c{n}", "true_positive" if n else "false_positive")
    rows = {r["rule"]: r for r in store.stats()}
    c = rows["crit"]
    assert (c["incidents"], c["true_positive"], c["false_positive"], c["unlabelled"]) == (5, 3, 1, 1)
    assert (c["precision"], c["false_positive_share"], c["severity"]) == (0.75, 0.25, "critical")
    assert c["median_minutes_to_ack"] == 10 and c["median_minutes_to_resolve"] == 50
    assert rows["warn"]["precision"] is None and rows["warn"]["median_minutes_to_ack"] is None
    assert [r["rule"] for r in store.stats(since=T0 + timedelta(days=1))] == ["warn"]


# -- concurrency: workers and on-call at once ---------------------------------------------------


def test_workers_and_on_call_at_once_lose_no_update_and_never_say_locked(url: str) -> None:
    """Three workers update their incidents and drain one outbox while on-call acknowledges and
    rates them from the command line and from the API, all at once."""
    migrate(url)
    workers, per = 3, 4
    ids = [[f"inc-w{w}-{i}" for i in range(per)] for w in range(workers)]
    to_hook = lambda _inc, _kind: ["hook"]  # noqa: E731
    with IncidentStore(url, migrate=False) as setup:
        for w in range(workers):
            setup.apply([opened(incident_id=i, dedup_key=i) for i in ids[w]], to_hook)
    rounds = 15
    last_at = T0 + timedelta(minutes=rounds)
    stores = [IncidentStore(url, migrate=False) for _ in range(workers + 1)]
    start, errors = threading.Barrier(workers + 1), []
    claimed: list[int] = []

    def worker(w: int) -> None:
        try:
            start.wait()
            for r in range(1, rounds + 1):  # the engine re-confirms its incidents every window
                at = T0 + timedelta(minutes=r)
                stores[w].apply(
                    [
                        updated(incident_id=i, dedup_key=i, value=0.04 + r / 1000, updated_at=at)
                        for i in ids[w]
                    ]
                )
                claimed.extend(n[0] for n in stores[w].claim_notifications(lease_s=3600))
        except Exception as e:  # reported below
            errors.append(e)

    def on_call_api() -> None:
        try:
            start.wait()
            for i in ids[1]:
                stores[-1].acknowledge(i, actor="api")
                stores[-1].set_feedback(i, "false_positive", actor="api")
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    threads.append(threading.Thread(target=on_call_api))
    env = {**os.environ, "RAIWATCH_INCIDENT_DB": url}
    for t in threads:
        t.start()
    cli_calls = [("ack", i, "--by", "alice") for i in ids[0]]
    cli_calls += [("feedback", i, "true_positive", "--by", "bob") for i in ids[0] + ids[2]]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "raiwatch.cli", "incidents", *call],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for call in cli_calls
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for t in threads:
        t.join()
    try:
        assert errors == []
        for p, (out, err) in zip(procs, outputs, strict=True):
            assert p.returncode == 0, err
            assert "locked" not in out + err and "Traceback" not in err
        store = stores[0]
        for w in range(workers):
            for i in ids[w]:
                got = store.get(i)
                assert got.updated_at == last_at and got.value == pytest.approx(0.04 + rounds / 1000)
                want_status = {0: "acknowledged", 1: "acknowledged", 2: "open"}[w]
                want_feedback = {0: "true_positive", 1: "false_positive", 2: "true_positive"}[w]
                assert (got.status, got.feedback) == (want_status, want_feedback), i
                assert kinds(store, i).count("feedback") == 1
                assert kinds(store, i).count("acknowledged") == (w < 2)
        # the outbox: every queued notification taken by exactly one worker
        assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == workers * per
    finally:
        for s in stores:
            s.close()
