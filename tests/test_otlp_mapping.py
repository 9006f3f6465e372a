"""The span decoder's fast walk agrees with the mapping as documented, read plainly.

``reference`` is the README's mapping table written the simple way: every attribute of a span
read through protobuf's own ``MessageToDict`` (or orjson, for OTLP/JSON), one dict per event,
validated by ``msgspec.convert``. ``OtlpSpans`` must give the same events, bytes, rejections
(with the same reasons), skips, response ids and span-event evaluations for both encodings, on
spans made by the SDK that cover each row of the table and the ways a value can break the
contract.
"""

from __future__ import annotations

import base64
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import Status, StatusCode

from raiwatch.core.otelmap import OtelMapping, from_dict
from raiwatch.core.otlp import _EARLIEST_NS, _LATEST_NS, EVALUATION, OtlpSpans
from raiwatch.core.records import TelemetryEvent
from tests.otelsdk import GenAISpans

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()
MARKERS = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.system",
    "llm.model_name",
    "openinference.span.kind",
)
MAPPINGS = {
    "defaults": {"version": 1},
    "team": {
        "version": 1,
        "tenant_id": "tenant.id",
        "user_id": ["user.id", "enduser.id"],
        "segments": {"plan": "app.plan", "region": ["app.region", "cloud.region"]},
        "features": {"prompt_chars": "app.prompt_chars", "tier": "app.tier", "ratio": "app.ratio"},
    },
    "chat only": {
        "version": 1,
        "operations": ["chat"],
        "model_id": ["llm.model_name", "gen_ai.request.model"],
    },
}


# -- the reference: the documented mapping over plain dicts


def _value(v: dict) -> Any:
    for k, x in v.items():
        if k in ("stringValue", "boolValue", "doubleValue"):
            return x
        if k == "intValue":
            return int(x)
        if k == "arrayValue":
            return [_value(y) for y in x.get("values") or ()]
        return None
    return None


def _attrs(kvs: list | None) -> dict[str, Any]:
    return {kv["key"]: _value(kv.get("value") or {}) for kv in kvs or ()}


def _first(attrs: dict, res: dict, names: tuple[str, ...]) -> Any:
    for n in names:
        v = attrs.get(n)
        if v is None:
            v = res.get(n)
        if v is not None and v != "":
            return v
    return None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _text(messages: Any, role: str | None) -> str | None:
    if not isinstance(messages, str):
        return None
    try:
        msgs = orjson.loads(messages)
    except orjson.JSONDecodeError:
        return messages
    if not isinstance(msgs, list):
        return None
    for m in reversed(msgs):
        if isinstance(m, dict) and (role is None or m.get("role") == role):
            parts = m.get("parts") or []
            text = [p.get("content") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
            return "\n".join(t for t in text if isinstance(t, str)) or None
    return None


def _event(span: dict, attrs: dict, res: dict, ids: tuple[bytes, bytes], m: OtelMapping) -> dict | str:
    """The telemetry-event.v1 dict of one GenAI span that names a model, or why it cannot be one."""
    names = m.names
    model = _first(attrs, res, names["model_id"])
    tid, sid = ids
    if len(tid) != 16 or len(sid) != 8:
        return f"span {span.get('name', '')!r}: trace id or span id of the wrong length"
    event_id = tid.hex() + sid.hex()
    start, end = int(span.get("startTimeUnixNano") or 0), int(span.get("endTimeUnixNano") or 0)
    if not _EARLIEST_NS <= start < _LATEST_NS:
        return f"span {span.get('name', '')!r} ({event_id}): start time {start} ns is outside 1971-2200"
    ev: dict[str, Any] = {
        "schema_version": 1,
        "event_id": event_id,
        "timestamp": datetime.fromtimestamp(start / 1e9, UTC),
        "model": {"id": str(model), "kind": "llm"},
    }
    version = _first(attrs, res, names["model_version"])
    if version is not None and version != model:
        ev["model"]["version"] = str(version)
    for key in ("deployment", "feature", "tenant_id", "user_id", "session_id"):
        if (v := _first(attrs, res, names[key])) is not None:
            ev[key] = str(v)
    request: dict[str, Any] = {}
    response: dict[str, Any] = {}
    tokens = _int(
        _first(
            attrs, {}, ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
        )
    )
    if tokens is not None:
        request["tokens"] = tokens
    tokens = _int(
        _first(
            attrs,
            {},
            ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"),
        )
    )
    if tokens is not None:
        response["tokens"] = tokens
    if end >= start:
        response["latency_ms"] = (end - start) / 1e6
    reasons = attrs.get("gen_ai.response.finish_reasons")
    if reasons:
        response["finish_reason"] = str(reasons[0] if isinstance(reasons, list) else reasons)[:64]
    error = attrs.get("error.type")
    status = span.get("status") or {}
    if error is None and status.get("code") in (2, "STATUS_CODE_ERROR"):
        error = status.get("message") or "error"
    if error is not None:
        response["error"] = str(error)[:512]
    text = attrs.get("input.value") or _text(attrs.get("gen_ai.input.messages"), "user")
    if text is None and isinstance(attrs.get("gen_ai.prompt"), str):
        text = attrs["gen_ai.prompt"]
    if text:
        request["text"] = text
    text = attrs.get("output.value") or _text(attrs.get("gen_ai.output.messages"), None)
    if text is None and isinstance(attrs.get("gen_ai.completion"), str):
        text = attrs["gen_ai.completion"]
    if text:
        response["text"] = text
    feats = {k: v for k, n in m.features.items() if (v := _first(attrs, res, n)) is not None}
    if feats:
        request["features"] = {
            k: v if isinstance(v, str | int | float | bool) else str(v) for k, v in feats.items()
        }
    if request:
        ev["request"] = request
    if response:
        ev["response"] = response
    segs = {k: str(v) for k, n in m.segments.items() if (v := _first(attrs, res, n)) is not None}
    if segs:
        ev["segments"] = segs
    return ev


def reference(raws: list[bytes], m: OtelMapping, encoding: str) -> dict[str, Any]:
    """What the documented mapping makes of ``raws``, in the decoder's terms."""
    out: dict[str, Any] = {
        "events": [],
        "indexes": [],
        "ts": [],
        "rejected": [],
        "skipped": Counter(),
        "response_ids": {},
        "evaluations": [],
    }
    for i, raw in enumerate(raws):
        if encoding == "otlp_json":
            doc, unhex = orjson.loads(raw), bytes.fromhex
        else:
            doc, unhex = MessageToDict(ExportTraceServiceRequest.FromString(raw)), base64.b64decode
        problems, n = [], 0
        for rs in doc.get("resourceSpans", ()):
            res = _attrs(rs.get("resource", {}).get("attributes"))
            for ss in rs.get("scopeSpans", ()):
                for span in ss.get("spans", ()):
                    n += 1
                    attrs = _attrs(span.get("attributes"))
                    if not any(k in attrs for k in MARKERS):
                        out["skipped"]["not_genai"] += 1
                    elif m.operations and attrs.get("gen_ai.operation.name") not in m.operations:
                        out["skipped"]["operation"] += 1
                    elif _first(attrs, res, m.names["model_id"]) is None:
                        out["skipped"]["no_model"] += 1
                    else:
                        ids = unhex(span.get("traceId", "")), unhex(span.get("spanId", ""))
                        ev = _event(span, attrs, res, ids, m)
                        if isinstance(ev, str):
                            problems.append(ev)
                            continue
                        try:
                            event = msgspec.convert(ev, TelemetryEvent)
                        except msgspec.ValidationError as e:
                            problems.append(f"span {span.get('name', '')!r} ({ev['event_id']}): schema: {e}")
                            continue
                        out["events"].append(event)
                        out["indexes"].append(i)
                        out["ts"].append(event.timestamp.timestamp())
                        if rid := attrs.get("gen_ai.response.id"):
                            out["response_ids"][event.event_id] = str(rid)
                        for se in span.get("events", ()):
                            ea = _attrs(se.get("attributes"))
                            if se.get("name") == EVALUATION and isinstance(
                                ea.get("gen_ai.evaluation.name"), str
                            ):
                                out["evaluations"].append(
                                    (
                                        ea["gen_ai.evaluation.name"],
                                        int(se.get("timeUnixNano") or 0) / 1e9,
                                        event.event_id,
                                        ea.get("gen_ai.evaluation.score.label"),
                                        ea.get("gen_ai.evaluation.score.value"),
                                        i,
                                    )
                                )
        if problems:
            out["rejected"].append((i, f"{len(problems)} of {n} spans rejected; the first: {problems[0]}"))
    return out


# -- the spans: every row of the table, and the values that break the contract


def otlp_json(raw: bytes) -> bytes:
    """An ``otlp_proto`` message as the Collector's ``otlp_json`` writes it (hex ids, enums as numbers)."""
    doc = MessageToDict(ExportTraceServiceRequest.FromString(raw), use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", ()):
        for ss in rs.get("scopeSpans", ()):
            for span in ss.get("spans", ()):
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in span:
                        span[k] = base64.b64decode(span[k]).hex()
    return orjson.dumps(doc)


def spans(resource: dict[str, Any] | None = None) -> list[bytes]:
    sdk = GenAISpans(resource)
    t = T0
    sdk.chat(
        t,
        **{
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.response.id": "chatcmpl-1",
            "tenant.id": "acme",
            "user.id": "u1",
            "app.plan": "free",
            "app.prompt_chars": 120,
            "app.tier": 2.5,
            "app.ratio": True,
            "gen_ai.conversation.id": "conv-1",
        },
    )
    sdk.chat(t + 1, error="RateLimitError", **{"enduser.id": "u2", "cloud.region": "eu"})
    sdk.chat(
        t + 2,
        model="gpt-4o",
        **{
            "gen_ai.response.model": "gpt-4o",
            "session.id": "s-1",
            "gen_ai.response.finish_reasons": ["length", "stop"],
        },
    )
    sdk.chat(
        t + 3,
        bare=True,
        **{
            "llm.model_name": "claude-3",
            "openinference.span.kind": "LLM",
            "llm.token_count.prompt": 7,
            "llm.token_count.completion": 9,
            "input.value": "hi",
            "output.value": "ho",
        },
    )
    sdk.chat(
        t + 4,
        bare=True,
        **{
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-3.5",
            "gen_ai.usage.prompt_tokens": 3,
            "gen_ai.usage.completion_tokens": 4,
            "gen_ai.prompt": "an old prompt",
            "gen_ai.completion": "an old answer",
        },
    )
    sdk.chat(
        t + 5,
        **{
            "gen_ai.input.messages": orjson.dumps(
                [
                    {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                    {
                        "role": "user",
                        "parts": [
                            {"type": "text", "content": "first"},
                            {"type": "text", "content": "second"},
                        ],
                    },
                ]
            ).decode(),
            "gen_ai.output.messages": orjson.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": "an answer"}],
                        "finish_reason": "stop",
                    },
                ]
            ).decode(),
        },
    )
    sdk.chat(
        t + 6,
        **{
            "gen_ai.input.messages": "not json",
            "gen_ai.output.messages": "[1, 2]",
            "gen_ai.prompt": "ignored",
            "gen_ai.completion": 5,
        },
    )
    sdk.chat(t + 7, **{"gen_ai.input.messages": '{"role": "user"}', "gen_ai.output.messages": "[]"})
    sdk.http(t + 8)
    sdk.chat(t + 9, bare=True, **{"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"})
    sdk.chat(t + 10, **{"gen_ai.operation.name": "embeddings"})
    sdk.chat(
        t + 11,
        **{
            "gen_ai.usage.input_tokens": -1,
            "gen_ai.usage.output_tokens": "12",
            "gen_ai.usage.prompt_tokens": 5,
            "gen_ai.response.finish_reasons": "x" * 80,
        },
    )
    sdk.chat(
        t + 12,
        **{
            "gen_ai.usage.input_tokens": True,
            "gen_ai.usage.output_tokens": 2.0,
            "gen_ai.usage.completion_tokens": 3,
            "error.type": "e" * 600,
        },
    )
    sdk.chat(
        t + 13,
        model="",
        **{
            "gen_ai.response.model": "gpt-4o-mini",
            "tenant.id": "",
            "user.id": ["a", "b"],
            "app.plan": 7,
            "app.prompt_chars": [1, 2],
        },
    )
    sdk.chat(t + 14, evaluation=("toxicity", "toxic", 0.9), as_span_event=True)
    sdk.chat(t + 15, evaluation=("relevance", None, None), as_span_event=True)
    sdk.chat(t + 16, duration_s=0, **{"gen_ai.response.id": 12345})
    s = sdk.tracer.start_span(
        "chat bad",
        start_time=int((t + 17) * 1e9),
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
    )
    s.set_status(Status(StatusCode.ERROR, "upstream timed out"))
    s.end(end_time=int((t + 16) * 1e9))  # ends before it starts: no latency
    s = sdk.tracer.start_span(
        "chat bad",
        start_time=int((t + 18) * 1e9),
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"},
    )
    s.set_status(Status(StatusCode.ERROR))
    s.end(end_time=int((t + 19) * 1e9))
    first, _ = sdk.take()
    # each of these breaks the contract: its message is rejected, naming the first
    sdk.chat(t + 20, model="m" * 129)
    sdk.chat(t + 21, **{"tenant.id": "t" * 129})
    sdk.chat(t + 22, **{"input.value": 42})
    sdk.chat(t + 23, **{"app.region": "r" * 200})
    sdk.chat(t + 24, **{"gen_ai.response.model": "v" * 129, "gen_ai.usage.input_tokens": 2})
    sdk.chat(t + 25, **{"output.value": ["a", "list"]})
    sdk.chat(t + 26)
    bad, _ = sdk.take()
    sdk.chat(1e6)  # 1970
    sdk.chat(t + 27)
    early, _ = sdk.take()
    return first + bad + early


def message_with_big_numbers() -> bytes:
    """OTLP/JSON only: 64-bit integers are strings there, so one can be any size."""
    sdk = GenAISpans()
    sdk.chat(T0, **{"app.prompt_chars": 1, "gen_ai.usage.output_tokens": 2})
    sdk.chat(T0 + 1, **{"gen_ai.usage.input_tokens": 2})
    (raw,), _ = sdk.take()
    doc = orjson.loads(otlp_json(raw))
    a, b = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    for kv in a["attributes"]:
        if kv["key"] == "app.prompt_chars":
            kv["value"] = {"intValue": str(2**70)}
        if kv["key"] == "gen_ai.usage.output_tokens":
            kv["value"] = {"intValue": str(2**63)}
    for kv in b["attributes"]:
        if kv["key"] == "gen_ai.usage.input_tokens":
            kv["value"] = {"intValue": str(2**63 - 1)}
    return orjson.dumps(doc)


def decoded(raws: list[bytes], m: OtelMapping, encoding: str) -> dict[str, Any]:
    d = OtlpSpans(m, encoding).decode_batch(raws)  # type: ignore[arg-type]
    assert d.raws == [msgspec.json.encode(e) for e in d.events]
    return {
        "events": d.events,
        "indexes": d.indexes,
        "ts": d.ts,
        "rejected": [(r.index, r.reason) for r in d.rejected],
        "skipped": d.skipped,
        "response_ids": d.response_ids,
        "evaluations": [(e.name, e.ts, e.event_id, e.label, e.score, e.index) for e in d.evaluations],
    }


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
@pytest.mark.parametrize("mapping", list(MAPPINGS))
def test_the_fast_walk_maps_as_the_table_says(encoding, mapping):
    m = from_dict(MAPPINGS[mapping])
    for resource in (
        None,
        {
            "service.name": "chat-api",
            "service.version": "1.4.2",
            "tenant.id": "res-tenant",
            "deployment.environment": "staging",
            "cloud.region": "us",
            "app.tier": "gold",
        },
    ):
        raws = spans(resource)
        if encoding == "otlp_json":
            raws = [otlp_json(r) for r in raws] + [message_with_big_numbers()]
        got, want = decoded(raws, m, encoding), reference(raws, m, encoding)
        assert got == want
        assert len(got["events"]) > 10 and len(got["rejected"]) == (3 if encoding == "otlp_json" else 2)
        assert got["skipped"]["not_genai"] == 1 and got["evaluations"]


def test_the_table_is_what_the_reference_reads():
    """The reference is not vacuous: a few of its rows, by value."""
    raws = spans()
    out = reference(raws, from_dict(MAPPINGS["team"]), "otlp_proto")
    first = out["events"][0]
    assert (first.model.id, first.model.version, first.tenant_id, first.user_id) == (
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "acme",
        "u1",
    )
    assert first.segments == {"plan": "free"} and first.request.features == {
        "prompt_chars": 120.0,
        "tier": 2.5,
        "ratio": True,
    }
    assert out["events"][5].request.text == "first\nsecond" and out["events"][5].response.text == "an answer"
    assert "model" in out["rejected"][0][1] or "id" in out["rejected"][0][1]
    assert "outside 1971-2200" in out["rejected"][1][1]
