"""Decoding and validation of telemetry: every bad input is rejected with a reason, nothing else."""

from __future__ import annotations

import json
import re

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raiwatch.core import contracts
from raiwatch.core.codec import MAX_EVENT_BYTES, feedback_codec, has_unicode_escape, telemetry_codec

EXAMPLES = contracts.examples()
SCHEMA = contracts.schema("telemetry-event.v1")


def _base(**extra: object) -> dict:
    return {
        "schema_version": 1,
        "event_id": "e1",
        "timestamp": "2026-11-02T14:03:11.482Z",
        "model": {"id": "m"},
        **extra,
    }


def test_contract_examples_decode():
    d = telemetry_codec.decode_batch(EXAMPLES)
    assert not d.rejected
    assert [e.event_id for e in d.events] == [f"7f1c2a9e-000{i}" for i in range(1, 5)]
    llm = d.events[2]
    assert llm.safety.violations == ["prompt_injection", "jailbreak"] and llm.safety.action == "blocked"
    bare = d.events[3]
    assert not bare.safety and not bare.segments and bare.request.embedding == [0.12, -0.03, 0.44, 0.08]


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        (b'{"schema_version":1,', "not JSON"),
        (b"<html>502</html>", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (orjson.dumps(_base(model={})), "`$.model`"),
        (orjson.dumps({k: v for k, v in _base().items() if k != "event_id"}), "event_id"),
        (orjson.dumps(_base(timestamp="2026-11-02T14:03:11")), "timezone"),
        (orjson.dumps(_base(timestamp="yesterday")), "$.timestamp"),
        (orjson.dumps(_base(schema_version=2)), "$.schema_version"),
        (orjson.dumps(_base(response={"latency_ms": "fast"})), "$.response.latency_ms"),
        (orjson.dumps(_base(response={"latency_ms": -1})), "$.response.latency_ms"),
        (orjson.dumps(_base(safety={"scores": {"toxicity": 7}})), "$.safety.scores"),
        (orjson.dumps(_base(safety={"action": "ignored"})), "$.safety.action"),
        (orjson.dumps(_base(deployment=None)), "$.deployment"),
        (orjson.dumps(_base(event_id="x" * 129)), "$.event_id"),
        (orjson.dumps(_base(request={"embedding": [0.0] * 4097})), "$.request.embedding"),
        (orjson.dumps([1, 2]), "Expected `object`"),
    ],
)
def test_bad_events_are_rejected_with_reason(raw: bytes, phrase: str):
    d = telemetry_codec.decode_batch([EXAMPLES[0], raw, EXAMPLES[1]], lambda i: f"f:{i + 1}")
    assert [e.event_id for e in d.events] == ["7f1c2a9e-0001", "7f1c2a9e-0002"]
    assert d.indexes == [0, 2]
    (rej,) = d.rejected
    assert rej.raw == raw and rej.source == "f:2"
    assert phrase in rej.reason, rej.reason


def test_huge_event_rejected_but_large_text_kept():
    big_text = "a" * (MAX_EVENT_BYTES - 1000)
    ok = orjson.dumps(_base(request={"text": big_text}))
    huge = orjson.dumps(_base(request={"text": "a" * MAX_EVENT_BYTES}))
    d = telemetry_codec.decode_batch([ok, huge])
    assert len(d.events) == 1 and d.events[0].request.text == big_text
    assert "over the 1048576-byte limit" in d.rejected[0].reason


def test_unknown_fields_are_kept_not_errors():
    raw = orjson.dumps(_base(experiment={"arm": "b"}, model={"id": "m", "shard": 3}))
    d = telemetry_codec.decode_batch([raw])
    assert not d.rejected
    assert orjson.loads(d.raws[0])["experiment"] == {"arm": "b"}  # the raw bytes travel on unchanged


def test_codec_agrees_with_the_json_schema():
    """The msgspec decoder and the contract's JSON Schema accept and refuse the same samples."""
    samples = [orjson.loads(x) for x in EXAMPLES] + [
        _base(deployment=None),
        _base(response={"error": None}),
        _base(segments={"g": None}),
        _base(request={"features": {"a": None, "b": True}}),
        _base(response={"tokens": -1}),
        _base(outcome={"favorable": "yes"}),
        _base(model={"id": "m", "kind": "robot"}),
    ]
    for s in samples:
        schema_ok = jsonschema.Draft202012Validator(SCHEMA).is_valid(s)
        codec_ok = not telemetry_codec.decode_batch([orjson.dumps(s)]).rejected
        assert schema_ok == codec_ok, s


def test_feedback_decodes_and_rejects():
    good = (
        b'{"schema_version":1,"event_id":"e1","timestamp":"2026-11-02T15:00:00Z",'
        b'"favorable":false,"source":"human_review"}'
    )
    bad = b'{"schema_version":1,"timestamp":"2026-11-02T15:00:00Z"}'
    d = feedback_codec.decode_batch([good, bad])
    assert d.events[0].favorable is False and d.events[0].source == "human_review"
    assert "event_id" in d.rejected[0].reason


_REAL_U_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u")  # a backslash-u not itself escaped


@given(st.text(alphabet=st.sampled_from(list('ab\\u"\n\té'))), st.booleans())
def test_a_unicode_escape_is_never_missed(text, ascii_only):
    """``has_unicode_escape`` finds every real ``\\u`` escape; with at most eight backslashes it
    is exact (an escaped backslash before a ``u`` is none)."""
    raw = json.dumps({"t": text}, ensure_ascii=ascii_only).encode()
    real = _REAL_U_ESCAPE.search(raw) is not None
    assert has_unicode_escape(raw) or not real
    if raw.count(b"\\") <= 8:
        assert has_unicode_escape(raw) == real
