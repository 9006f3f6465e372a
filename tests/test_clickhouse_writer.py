"""ClickHouseWriter on the real engine (chdb): typed columns, raw bytes, text policy, idempotent replays.

chdb opens one data path per process, so every ClickHouse test in a pytest run uses
``<basetemp>/chdb`` and a database of its own.
"""

from __future__ import annotations

import gc
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from clickhouse_connect.driver.exceptions import OperationalError
from clickhouse_connect.driver.insert import InsertContext
from hypothesis import given, settings
from hypothesis import strategies as st

from raiwatch.core import contracts
from raiwatch.core.codec import telemetry_codec
from raiwatch.core.errors import StorageError
from raiwatch.core.records import Incident, Signal
from storage.clickhouse import (
    ClickHouseWriter,
    connect,
    count_events,
    events_per_model,
    migrate,
    rawtext,
    recent_signals,
    signals_df,
)
from storage.clickhouse.rawtext import event_raws, strip_text

T0 = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory) -> str:
    return f"chdb://{tmp_path_factory.getbasetemp() / 'chdb'}"


@pytest.fixture
def db(chdb_dsn) -> str:
    name = f"t_{uuid.uuid4().hex[:10]}"
    migrate(connect(chdb_dsn, name), name)
    return name


@pytest.fixture
def client(chdb_dsn, db):
    return connect(chdb_dsn, db)


def example_lines() -> list[bytes]:
    """The contract examples; the LLM one also gets a response text and an unknown field."""
    lines = contracts.examples()
    ev = orjson.loads(lines[1])
    ev["response"]["text"] = "Try exporting smaller ranges."
    ev["experiment"] = {"arm": "B", "weights": [1, 2]}
    lines[1] = orjson.dumps(ev)
    return lines


def decode(lines: list[bytes]):
    decoded = telemetry_codec.decode_batch(lines)
    assert not decoded.rejected, decoded.rejected
    return decoded.events, decoded.raws, decoded.ts


def rows(client, db: str, table: str = "telemetry_events") -> dict[str, dict]:
    key = "event_id" if table == "telemetry_events" else "incident_id"
    result = client.query(f"SELECT * FROM {db}.{table} FINAL ORDER BY {key}")
    return {r[key]: r for r in result.named_results()}


def test_event_columns_are_typed_from_the_contract(client, db):
    events, raws, ts = decode(example_lines())
    assert ClickHouseWriter(client, db).write_events(events, raws, ts) == []

    got = rows(client, db)
    claims, chat, blocked, embedder = (got[f"7f1c2a9e-000{i}"] for i in range(1, 5))
    assert claims["ts"] == datetime(2026, 11, 2, 14, 3, 11, 482000, tzinfo=UTC)
    assert (claims["model_id"], claims["model_version"], claims["model_kind"]) == (
        "claims-triage",
        "1.4.2",
        "classifier",
    )
    assert (claims["prediction_label"], claims["prediction_score"]) == ("fast_track", 0.91)
    assert claims["latency_ms"] == pytest.approx(22.4)
    assert claims["segments"] == {"age_band": "35-49", "region": "west"}
    assert claims["favorable"] == 1
    assert claims["request_tokens"] is None and claims["finish_reason"] == ""

    assert (chat["tenant_id"], chat["user_id"], chat["session_id"], chat["ip_hash"]) == (
        "northwind",
        "b77e0d41",
        "s-55c1",
        "e3b0c442",
    )
    assert (chat["request_tokens"], chat["response_tokens"], chat["language"]) == (9, 142, "en")
    assert chat["safety_scores"]["prompt_injection"] == pytest.approx(0.03)
    assert (chat["safety_action"], chat["violations"], chat["error"]) == ("allowed", [], None)

    assert blocked["violations"] == ["prompt_injection", "jailbreak"]
    assert (blocked["safety_action"], blocked["finish_reason"], blocked["favorable"]) == (
        "blocked",
        "content_filter",
        0,
    )
    assert blocked["response_tokens"] == 0  # zero is a value, not a missing one

    assert embedder["model_version"] == embedder["deployment"] == embedder["safety_action"] == ""
    assert embedder["latency_ms"] is embedder["favorable"] is embedder["prediction_score"] is None
    assert embedder["safety_scores"] == {} and embedder["segments"] == {}
    assert orjson.loads(embedder["raw"]) == orjson.loads(raws[3])


def test_text_is_kept_out_of_clickhouse_by_default(client, db):
    events, raws, ts = decode(example_lines())
    ClickHouseWriter(client, db).write_events(events, raws, ts)

    got = rows(client, db)
    chat = got["7f1c2a9e-0002"]
    raw = orjson.loads(chat["raw"])
    original = orjson.loads(raws[1])
    assert "text" not in raw["request"] and "text" not in raw["response"]
    assert raw["request"] == {"tokens": 9, "language": "en"}
    assert raw["experiment"] == {"arm": "B", "weights": [1, 2]}  # unknown fields are kept
    del original["request"]["text"], original["response"]["text"]
    assert raw == original
    assert all(r["request_text"] is None and r["response_text"] is None for r in got.values())
    assert got["7f1c2a9e-0001"]["raw"].encode() == raws[0]  # events without text are stored as received


def test_text_is_stored_when_store_text(client, db):
    events, raws, ts = decode(example_lines())
    ClickHouseWriter(client, db, store_text=True).write_events(events, raws, ts)

    chat = rows(client, db)["7f1c2a9e-0002"]
    assert chat["request_text"] == "my export to csv keeps failing"
    assert chat["response_text"] == "Try exporting smaller ranges."
    assert chat["raw"].encode() == raws[1]


def test_strip_text_copies_every_other_byte():
    raw = (
        b'{"a": 1, "request": {"text": "x\\"y", "tokens": 3, "note": "caf\\u00e9"}, "z": [1.50, {"q": null}]}'
    )
    out = strip_text(raw, request=True, response=True)
    assert out == b'{"a": 1, "request": {"tokens":3,"note":"caf\\u00e9"}, "z": [1.50, {"q": null}]}'
    assert orjson.loads(out) == {"a": 1, "request": {"tokens": 3, "note": "café"}, "z": [1.5, {"q": None}]}
    assert strip_text(b'{"request": "not an object"}') == b'{"request": "not an object"}'
    assert strip_text(b'{"request": {"tokens": 1}}') == b'{"request": {"tokens": 1}}'


def test_strip_text_when_the_same_object_also_appears_elsewhere():
    """An unknown field holding a copy of the request must not be mistaken for it."""
    raw = b'{"echo": {"text": "hi"}, "request": {"text": "hi"}, "response": {"text": "yo", "tokens": 2}}'
    assert orjson.loads(strip_text(raw)) == {"echo": {"text": "hi"}, "request": {}, "response": {"tokens": 2}}
    assert orjson.loads(strip_text(raw, response=False)) == {
        "echo": {"text": "hi"},
        "request": {},
        "response": {"text": "yo", "tokens": 2},
    }


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (
            b'{"a":1,"request":{"text":"hi, {you}","tokens":3},"z":[1.50]}',
            b'{"a":1,"request":{"tokens":3},"z":[1.50]}',
        ),
        (b'{"request":{"tokens":3,"text":"hi"},"z":1}', b'{"request":{"tokens":3},"z":1}'),
        (b'{"request":{"text":"hi"},"z":1}', b'{"request":{},"z":1}'),
        (
            b'{"request":{"text":"q","tokens":1},"response":{"tokens":2,"text":"a"}}',
            b'{"request":{"tokens":1},"response":{"tokens":2}}',
        ),
        (b'{"request":{"text":"a\\nb \\"c\\" d\\\\","tokens":1}}', b'{"request":{"tokens":1}}'),
        (b'{"request": {"tokens": 1, "text": "hi"}, "z": 1}', b'{"request": {"tokens": 1}, "z": 1}'),
        (b'{"request": {"text" : "hi" ,\n "tokens": 1}}', b'{"request": {\n "tokens": 1}}'),
    ],
)
def test_text_members_are_cut_and_every_other_byte_kept(raw, stored):
    """JSON without ``\\u`` escapes, compact or spaced, takes the byte splice: the rest is kept
    exactly as sent (``1.50`` stays ``1.50``, spaces stay), where msgspec's path re-encodes the
    request and response objects."""
    ev = {"schema_version": 1, "event_id": "e", "timestamp": "2026-11-02T09:00:00Z", "model": {"id": "m"}}
    head = orjson.dumps(ev)[:-1] + b","
    decoded = telemetry_codec.decode_batch([head + raw[1:]])
    assert not decoded.rejected
    assert event_raws(decoded.events, decoded.raws, store_text=False) == [head + stored[1:]]
    assert rawtext._splice(head + raw[1:], raw.count(b'"text"')) == head + stored[1:]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"request":{"text":"caf\\u00e9"}}',  # a \\u escape: a key could be spelled with one
        b'{"request":{"text":"say \\"text"}}',  # "text" again, at an escaped quote inside a string
        b'{"request":{"text":"hi"},"kind":"text"}',  # "text" as a value too
        b'{"request":{"text":"hi"},"echo":{"text":"hi"}}',  # another text member
        b'{"request":{"text":"a","text":"b"}}',  # a duplicate key
    ],
)
def test_what_the_splice_cannot_be_sure_of_goes_through_msgspec(raw):
    assert rawtext._splice(raw, 1) is None
    assert b'"text"' not in orjson.dumps(orjson.loads(strip_text(raw, response=False))["request"])


_PIECES = [*'ab "\\/\n\té😀{}:,', "text", '"text":', "\\u0041"]
_TEXTS = st.lists(st.sampled_from(_PIECES), max_size=8).map("".join)


@given(
    prompt=_TEXTS,
    answer=st.one_of(st.none(), _TEXTS),
    spaced=st.booleans(),
    ascii_only=st.booleans(),
    echo=st.sampled_from([None, "same", "other", "value"]),
    text_last=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_text_never_reaches_storage_however_it_was_written(
    prompt, answer, spaced, ascii_only, echo, text_last
):
    """Whatever the producer's spacing, escaping and member order, and whatever other "text" members
    or values the event carries, the stored raw JSON lacks request.text and response.text and
    keeps everything else."""
    request = {"tokens": 3, "text": prompt} if text_last else {"text": prompt, "tokens": 3}
    ev = {"schema_version": 1, "event_id": "e1", "timestamp": "2026-11-02T09:00:00Z", "model": {"id": "m"}}
    ev["request"] = request
    if answer is not None:
        ev["response"] = {"text": answer}
    if echo == "same":
        ev["echo"] = {"text": prompt}
    elif echo == "other":
        ev["echo"] = {"text": "something else"}
    elif echo == "value":
        ev["kind"] = "text"
    raw = json.dumps(ev, ensure_ascii=ascii_only, separators=(", ", ": ") if spaced else (",", ":")).encode()
    decoded = telemetry_codec.decode_batch([raw])
    (stored,) = event_raws(decoded.events, decoded.raws, store_text=False)
    del ev["request"]["text"]
    if answer is not None:
        del ev["response"]["text"]
    assert orjson.loads(stored) == ev


_KEY_PIECES = ["text", 'te"xt', "\\", "a", "é", "\\u0041", '"text"', ":"]
_KEYS = st.lists(st.sampled_from(_KEY_PIECES), min_size=1, max_size=3).map("".join)
_VALUES = st.recursive(
    st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), _TEXTS),
    lambda inner: st.dictionaries(_KEYS, inner, max_size=3) | st.lists(inner, max_size=3),
    max_leaves=6,
)


@given(
    prompt=_TEXTS,
    answer=st.one_of(st.none(), _TEXTS),
    top=st.dictionaries(_KEYS, _VALUES, max_size=3),
    inside=st.dictionaries(_KEYS.filter(lambda k: k != "text"), _VALUES, max_size=2),
    spaced=st.booleans(),
    ascii_only=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_members_and_values_named_text_elsewhere_are_kept(prompt, answer, top, inside, spaced, ascii_only):
    """Unknown members anywhere, keyed or valued "text" or with quotes and backslashes in their
    keys, stay as they were; only request.text and response.text go (by the splice where it is
    certain, else by msgspec)."""
    ev = {"schema_version": 1, "event_id": "e1", "timestamp": "2026-11-02T09:00:00Z", "model": {"id": "m"}}
    ev.update(top)
    ev["request"] = {**inside, "text": prompt}
    if answer is not None:
        ev["response"] = {"text": answer, **inside}
    raw = json.dumps(ev, ensure_ascii=ascii_only, separators=(", ", ": ") if spaced else (",", ":")).encode()
    decoded = telemetry_codec.decode_batch([raw])
    assert not decoded.rejected, decoded.rejected
    (stored,) = event_raws(decoded.events, decoded.raws, store_text=False)
    del ev["request"]["text"]
    if answer is not None:
        del ev["response"]["text"]
    assert orjson.loads(stored) == ev


def test_replayed_events_count_once(client, db):
    events, raws, ts = decode(example_lines())
    writer = ClickHouseWriter(client, db)
    writer.write_events(events, raws, ts)
    writer.write_events(events, raws, ts)

    assert client.command(f"SELECT count() FROM {db}.telemetry_events") == 8  # until a merge
    assert count_events(client, db) == 4
    assert count_events(client, db, model_id="helpdesk-assistant") == 2
    assert events_per_model(client, db) == {"helpdesk-assistant": 2, "claims-triage": 1, "doc-embedder": 1}


def test_extreme_values_the_contract_allows_are_kept(client, db):
    line = {
        "schema_version": 1,
        "event_id": "huge",
        "timestamp": "2026-11-02T16:03:11.482+02:00",
        "model": {"id": "m"},
        "request": {"tokens": 99_999_999_999},
        "response": {"latency_ms": 1e300},
        "segments": {"gender": None, "region": "west"},
    }
    events, raws, ts = decode([orjson.dumps(line)])
    assert ClickHouseWriter(client, db).write_events(events, raws, ts) == []

    row = rows(client, db)["huge"]
    assert row["ts"] == datetime(2026, 11, 2, 14, 3, 11, 482000, tzinfo=UTC)  # offset applied
    assert row["request_tokens"] == 99_999_999_999
    assert row["latency_ms"] == 1e300
    assert row["segments"] == {"region": "west"}  # a null group is an unknown group


def test_a_batch_spanning_many_days_of_old_history_is_kept(client, db):
    lines = [
        orjson.dumps(
            {
                "schema_version": 1,
                "event_id": f"e{i}",
                "timestamp": (T0 - timedelta(days=3 * i)).isoformat(),
                "model": {"id": "m"},
            }
        )
        for i in range(150)  # more days than the default partitions-per-insert limit (100), over a year back
    ]
    events, raws, ts = decode(lines)
    assert ClickHouseWriter(client, db).write_events(events, raws, ts) == []
    assert count_events(client, db) == 150  # rows expire ttl_days after they were written, not after ts


def test_empty_inputs_write_nothing(client, db):
    writer = ClickHouseWriter(client, db)
    assert writer.write_events([], [], []) == []
    assert writer.write_signals([]) == writer.write_incidents([]) == writer.write_rejected([]) == 0
    assert client.command(f"SELECT count() FROM {db}.telemetry_events") == 0
    events, raws, ts = decode(example_lines()[:2])
    with pytest.raises(ValueError, match="2 events, 1 raw payloads and 2 timestamps"):
        writer.write_events(events, raws[:1], ts)


def signal(value: float, ts: datetime = T0, **kw) -> Signal:
    base = dict(ts=ts, window=60, signal="safety.violation_rate", model_id="helpdesk-assistant", n=400)
    return Signal(value=value, **{**base, **kw})


def test_signals_written_twice_collapse(client, db):
    writer = ClickHouseWriter(client, db)
    batch = [
        signal(0.01, dims={"category": "pii", "tenant_id": "globex"}, lower=0.005, upper=0.02, baseline=0.01),
        signal(0.02, ts=T0 + timedelta(minutes=1), dims={"category": "pii", "tenant_id": "globex"}),
        signal(0.5, signal="drift.psi", dims={"feature": "claim_amount"}, p_value=0.001),
        signal(0.03, model_version="v2", dims={"category": "pii", "tenant_id": "globex"}),
    ]
    writer.write_signals(batch)
    rewritten = signal(0.04, dims={"tenant_id": "globex", "category": "pii"})  # same scope, keys reordered
    writer.write_signals([*batch[1:], rewritten])

    df = signals_df(client, db)
    assert len(df) == 4
    assert set(df["family"]) == {"safety", "drift"}
    first = signals_df(client, db, signal="safety.violation_rate", model_id="helpdesk-assistant")
    first = first[(first["ts"] == T0) & (first["model_version"] == "")]
    assert first["value"].tolist() == [0.04]  # the later write wins
    assert first["dims"].iloc[0] == {"category": "pii", "tenant_id": "globex"}
    assert len(signals_df(client, db, since=T0 + timedelta(seconds=30))) == 1
    scope = "map('category', 'pii', 'tenant_id', 'globex')"  # dims are stored sorted by key
    assert client.command(f"SELECT count() FROM {db}.signals FINAL WHERE dims = {scope}") == 3
    drift = signals_df(client, db, signal="drift.psi").iloc[0]
    assert (drift["p_value"], drift["n"], drift["window_s"]) == (0.001, 400, 60)


def test_recent_signals_come_back_as_records(client, db):
    writer = ClickHouseWriter(client, db)
    assert recent_signals(client, db, None) == []
    older = signal(0.01, dims={"category": "pii"}, lower=0.005, upper=0.02)
    newer = [
        signal(0.02, ts=T0 + timedelta(minutes=1)),
        signal(0.3, ts=T0 + timedelta(minutes=1), signal="drift.psi"),
    ]
    writer.write_signals([*newer, older])
    writer.write_signals(newer)  # a replayed window counts once

    assert recent_signals(client, db, None) == sorted(newer, key=lambda s: s.signal)
    assert recent_signals(client, db, T0) == [older, *sorted(newer, key=lambda s: s.signal)]


def incident(status: str, updated_at: datetime, **kw) -> Incident:
    return Incident(
        incident_id="inc-1",
        dedup_key="safety-spike|helpdesk-assistant",
        rule="safety-spike",
        signal="safety.violation_rate",
        severity="high",
        status=status,
        opened_at=T0,
        labels={"model_id": "helpdesk-assistant"},
        summary="Violation rate 4% above 1% for 10 minutes on helpdesk-assistant",
        runbook_url="https://runbooks.example/safety-spike",
        value=0.04,
        threshold=0.01,
        updated_at=updated_at,
        **kw,
    )


def test_incident_updates_win_by_updated_at(client, db):
    writer = ClickHouseWriter(client, db)
    writer.write_incidents([incident("open", T0)])
    acked = T0 + timedelta(minutes=5)
    writer.write_incidents([incident("acknowledged", acked, acknowledged_at=acked, feedback="true_positive")])
    writer.write_incidents([incident("open", T0)])  # a stale copy replayed later does not win

    (row,) = rows(client, db, "incidents").values()
    assert row["status"] == "acknowledged"
    assert row["acknowledged_at"] == acked and row["resolved_at"] is None
    assert (row["feedback"], row["labels"], row["value"]) == (
        "true_positive",
        {"model_id": "helpdesk-assistant"},
        0.04,
    )

    resolved = T0 + timedelta(minutes=9)
    no_version = incident("resolved", None, acknowledged_at=acked, resolved_at=resolved)
    writer.write_incidents([no_version])  # without updated_at the latest lifecycle time versions it
    (row,) = rows(client, db, "incidents").values()
    assert (row["status"], row["updated_at"]) == ("resolved", resolved)


def test_rejected_inputs_are_kept_with_their_reason(client, db):
    writer = ClickHouseWriter(client, db)
    assert writer.write_rejected([("file.jsonl:7", "not JSON: truncated", b'{"event_id": ')]) == 1
    ((source, reason, raw, size, sha, received_at),) = client.query(
        f"SELECT source, reason, raw, size, sha256, received_at FROM {db}.rejected_events"
    ).result_rows
    assert (source, reason, raw, size) == ("file.jsonl:7", "not JSON: truncated", '{"event_id": ', 13)
    assert sha == hashlib.sha256(b'{"event_id": ').hexdigest()
    assert abs(received_at - datetime.now(UTC)) < timedelta(minutes=1)


class FlakyClient:
    """The real client, except that the next ``failures`` inserts raise a connection error."""

    def __init__(self, client, failures: int):
        self.client = client
        self.failures = failures

    def insert(self, *args, **kwargs):
        if self.failures:
            self.failures -= 1
            raise OperationalError("connection reset by peer")
        return self.client.insert(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_transient_failures_are_retried_with_backoff(client, db):
    waits: list[float] = []
    writer = ClickHouseWriter(FlakyClient(client, 3), db, backoff_s=0.5, wait=waits.append)
    events, raws, ts = decode(example_lines())
    assert writer.write_events(events, raws, ts) == []
    assert waits == [0.5, 1.0, 2.0]
    assert count_events(client, db) == 4


def test_a_lasting_outage_raises_storage_error_after_bounded_retries(client, db):
    waits: list[float] = []
    writer = ClickHouseWriter(FlakyClient(client, 100), db, retries=4, max_backoff_s=2, wait=waits.append)
    with pytest.raises(StorageError, match=rf"writing 1 rows to {db}.signals failed after 5 attempts"):
        writer.write_signals([signal(0.1)])
    assert waits == [0.5, 1.0, 2.0, 2.0]


def test_a_permanent_failure_is_not_retried(chdb_dsn):
    waits: list[float] = []
    client = connect(chdb_dsn, "never_migrated")
    writer = ClickHouseWriter(client, "never_migrated", wait=waits.append)
    with pytest.raises(StorageError, match=r"never_migrated\.signals"):
        writer.write_signals([signal(0.1)])
    assert waits == []


def test_an_insert_leaves_no_garbage_holding_its_rows(client, db):
    """clickhouse-connect's InsertContext refers to itself: unless the writer empties it, each insert
    leaves one behind, holding its batch's columns until a full garbage collection."""

    def contexts() -> int:
        return sum(isinstance(o, InsertContext) for o in gc.get_objects())

    writer = ClickHouseWriter(client, db)
    events, raws, ts = decode(example_lines())
    writer.write_events(events, raws, ts)  # the first also reads the table's column types
    gc.collect()
    gc.disable()
    try:
        before = contexts()
        for _ in range(3):
            writer.write_events(events, raws, ts)
        assert contexts() == before
    finally:
        gc.enable()
