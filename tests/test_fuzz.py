"""Property-based: whatever bytes arrive, each input is stored or rejected with a reason, and nothing raises.

The codec alone on arbitrary bytes, then the whole pipeline (real ClickHouse engine) on mutations
of valid events: deep nesting, huge strings, invalid UTF-8, lone surrogates, NaN/Infinity, extreme
and future dates, wrong types, duplicate keys and ids, nulls, truncation and byte flips. A stored
event must be stored as validated (same id, time and model) and as JSON ClickHouse can parse.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raiwatch.core.codec import KINDS, telemetry_codec
from raiwatch.core.config import load_config
from raiwatch.pipeline import Pipeline
from raiwatch.wiring import build_pipeline

NOW = datetime.now(UTC)


@given(st.lists(st.binary(max_size=300), max_size=20))
@settings(max_examples=300, deadline=None)
def test_the_codec_accounts_for_arbitrary_bytes(raws: list[bytes]):
    d = telemetry_codec.decode_batch(raws, lambda i: f"in:{i}")
    assert sorted(d.indexes + [r.index for r in d.rejected]) == list(range(len(raws)))
    for r in d.rejected:
        assert r.reason and r.raw == raws[r.index] and r.source == f"in:{r.index}" and r.kind in KINDS


def _valid(eid: str, ts: datetime) -> dict:
    return {
        "schema_version": 1,
        "event_id": eid,
        "timestamp": ts.isoformat(),
        "model": {"id": "fuzz-model", "version": "v1", "kind": "llm"},
        "tenant_id": "acme",
        "request": {"text": "hello", "tokens": 3, "language": "en", "features": {"x": 1.5, "c": "a"}},
        "response": {"tokens": 10, "latency_ms": 12.5, "prediction": {"label": "ok", "score": 0.4}},
        "safety": {"scores": {"toxicity": 0.1}, "violations": [], "action": "allowed"},
        "segments": {"region": "eu"},
    }


def _deep(depth: int, array: bool) -> bytes:
    return (b"[" * depth + b"1" + b"]" * depth) if array else (b'{"a":' * depth + b"1" + b"}" * depth)


MUTATIONS = (
    "none", "deep", "huge_string", "bad_utf8", "surrogate", "surrogate_pair", "nan", "infinity",
    "big_number", "date", "wrong_type", "null", "duplicate_key", "truncate", "flip", "control_char",
)  # fmt: skip


@st.composite
def mutated_event(draw, eid: str) -> bytes:
    ts = NOW - timedelta(seconds=draw(st.integers(0, 86_400 * 3)))
    ev = _valid(eid, ts)
    kind = draw(st.sampled_from(MUTATIONS))
    if kind == "date":
        year = draw(st.sampled_from([1, 1900, 1970, 1999, 2100, 2199, 2200, 2262, 9999]))
        when = draw(st.sampled_from([f"{year:04d}-12-31T23:59:59Z", f"{year:04d}-01-01T00:00:00+14:00"]))
        ev["timestamp"] = draw(st.sampled_from([when, (NOW + timedelta(minutes=10)).isoformat()]))
    elif kind == "wrong_type":
        path = draw(st.sampled_from(["event_id", "model", "request", "safety", "segments", "timestamp"]))
        wrong = [None, 7, [], {"k": []}, True] + ([] if path == "event_id" else ["x"])  # ids stay this run's
        ev[path] = draw(st.sampled_from(wrong))
    elif kind == "null":
        ev[draw(st.sampled_from(["tenant_id", "model", "request"]))] = None
    raw = orjson.dumps(ev)
    if kind == "big_number":
        big = draw(st.sampled_from([2**63 - 1, 2**63, 2**64, 10**30, -1, 10**400]))
        raw = raw.replace(b'"tokens":3', b'"tokens":' + str(big).encode())
    if kind == "deep":
        raw = raw[:-1] + b',"extra":' + _deep(draw(st.integers(1, 3000)), draw(st.booleans())) + b"}"
    elif kind == "huge_string":
        raw = raw[:-1] + b',"blob":"' + b"x" * draw(st.sampled_from([10, 70_000, 1_100_000])) + b'"}'
    elif kind == "bad_utf8":
        raw = (
            raw[:-1]
            + b',"note":"caf'
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe9"]))
            + b'"}'
        )
    elif kind == "surrogate":
        field = draw(st.sampled_from([b"note", b"tenant_id"]))
        raw = raw[:-1] + b',"' + field + b'":"x' + draw(st.sampled_from([b"\\ud800", b"\\udfff"])) + b'"}'
    elif kind == "surrogate_pair":
        raw = raw[:-1] + b',"note":"\\ud83d\\ude00 ok"}'
    elif kind == "nan":
        raw = raw.replace(b'"latency_ms":12.5', b'"latency_ms":NaN')
    elif kind == "infinity":
        raw = raw.replace(
            b'"latency_ms":12.5', draw(st.sampled_from([b'"latency_ms":1e999', b'"latency_ms":-1e400']))
        )
    elif kind == "duplicate_key":
        raw = raw[:-1] + b',"event_id":"' + eid.encode() + b'-dup"}'
    elif kind == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif kind == "flip":
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    elif kind == "control_char":
        raw = raw.replace(b'"hello"', b'"hel\x00lo"')
    return raw


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    base = tmp_path_factory.getbasetemp()
    cfg = load_config(data_dir=str(base / "fuzz"))
    import msgspec

    ch = msgspec.structs.replace(cfg.clickhouse, dsn=f"chdb://{base / 'chdb'}", database="fuzz")
    return build_pipeline(msgspec.structs.replace(cfg, clickhouse=ch))


@given(data=st.data())
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
def test_every_input_is_stored_as_validated_or_rejected_with_a_reason(pipeline: Pipeline, data):
    run = uuid.uuid4().hex[:12]
    n = data.draw(st.integers(1, 12))
    ids = [f"{run}-{data.draw(st.integers(0, n))}" for _ in range(n)]  # some ids repeat: redeliveries
    raws = [data.draw(mutated_event(eid)) for eid in ids]

    result = pipeline.process(raws, [0] * len(raws), lambda i: f"{run}:{i}")
    refused = pipeline.flush()

    rejected = {r.index: r for r in [*result.rejected, *refused]}
    for r in rejected.values():
        assert r.reason and r.raw == raws[r.index] and r.kind in KINDS
    decoded = telemetry_codec.decode_batch(raws)
    accepted = [
        (i, ev, t)
        for i, ev, t in zip(decoded.indexes, decoded.events, decoded.ts, strict=True)
        if i not in rejected
    ]
    assert len(accepted) + len(rejected) == len(raws)
    first = {}
    for i, ev, t in accepted:
        first.setdefault(ev.event_id, (i, ev, t))
    assert result.duplicates == len(accepted) - len(first)

    client = pipeline.writer.client
    stored = {
        eid: (ts, model, valid)
        for eid, ts, model, valid in client.query(
            "SELECT event_id, toUnixTimestamp64Milli(ts), model_id, isValidJSON(raw) "
            "FROM fuzz.telemetry_events FINAL "
            "WHERE startsWith(event_id, {run:String}) OR has({ids:Array(String)}, event_id)",
            parameters={"run": run, "ids": list(first)},  # a flipped byte may change an id's prefix
        ).result_rows
    }
    assert stored.keys() == first.keys()
    for eid, (_, ev, t) in first.items():
        ts_ms, model, valid = stored[eid]
        assert (ts_ms, model, valid) == (int(t * 1000 + 5e-4), ev.model.id, 1), eid
    kept = client.command(
        "SELECT count() FROM fuzz.rejected_events WHERE startsWith(source, {run:String})",
        parameters={"run": run},
    )
    assert kept == len(rejected)
