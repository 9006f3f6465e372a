"""libotlpmap (the span mapping compiled in Go) gives what the Python mapping gives, message for message.

Random ``ExportTraceServiceRequest`` messages built with protobuf's own classes cover what the SDK
never writes: every attribute type where the mapping reads a value (kvlists, bytes, unset values,
arrays of mixed types, negative and boolean token counts), strings over the contract's limits and
beyond ASCII, GenAI messages JSON of every shape, missing and zero ids, times outside the
contract, span events, duplicate keys, several resources and scopes; then the same messages cut
short and with bytes flipped. ``OtlpSpans`` with the library must decode each batch exactly as
without it (events, raw bytes, window times, rejections and their reasons, skips, response ids,
evaluations), and it must have mapped every tame message itself (else this proves little).
"""

from __future__ import annotations

import json
import random
import shutil
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from raiwatch.core import otlpnative
from raiwatch.core.otelmap import from_dict
from raiwatch.core.otlp import OtlpSpans
from tests.test_otlp_mapping import MAPPINGS

if shutil.which("go") is None and not otlpnative.library_path().is_file():
    pytest.skip("libotlpmap needs the Go toolchain to build", allow_module_level=True)

T0 = 1_772_452_800 * 10**9  # 2026-03-02T12:00:00Z, in ns
MODEL_KEYS = ("gen_ai.request.model", "gen_ai.response.model", "llm.model_name", "x.model")
KEYS = (
    "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system", "openinference.span.kind",
    *MODEL_KEYS, "service.version", "deployment.environment.name", "service.name", "tenant.id",
    "user.id", "enduser.id", "gen_ai.conversation.id", "session.id", "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.completion",
    "gen_ai.response.finish_reasons", "gen_ai.response.id", "error.type", "gen_ai.input.messages",
    "gen_ai.output.messages", "gen_ai.prompt", "gen_ai.completion", "input.value", "output.value",
    "app.plan", "app.region", "cloud.region", "app.prompt_chars", "app.tier", "app.ratio", "http.route",
)  # fmt: skip
TEXTS = (
    "", "gpt-4o", "chat", "x" * 129, "é" * 128, "é" * 129, "日本語", "line\nbreak\t\"q\"\\", "\x01\x1f",
    "1e400", "-0.0", "None", "[]",
)  # fmt: skip


def _messages_json(rng: random.Random) -> str:
    """GenAI ``*.messages`` JSON, mostly well formed, sometimes not."""
    part = rng.choice([
        {"type": "text", "content": rng.choice(TEXTS)}, {"type": "text", "content": 5}, {"type": "image"},
        "text", {"type": "text"},
    ])  # fmt: skip
    msg: Any = {"role": rng.choice(["user", "assistant", "system", 3]), "parts": [part, part]}
    if rng.random() < 0.15:
        msg["parts"] = rng.choice([{"type": "text"}, "parts", 7, True, None, []])
    doc: Any = [msg, {"role": "user", "parts": [{"type": "text", "content": "first"}]}][
        :: rng.choice([1, -1])
    ]
    r = rng.random()
    if r < 0.1:
        return rng.choice(["plain words", "", "{not json", "[1, 2", '{"a": 1}', "null", '["\\ud800"]'])
    if r < 0.2:
        doc = rng.choice([{"role": "user"}, 5, "s", [[]]])
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5)
    return text.replace("first", "\\ud83d\\ude00 first") if rng.random() < 0.1 else text


def _any(rng: random.Random, key: str, depth: int = 0, tame: bool = False) -> AnyValue:
    """A value for ``key``; ``tame``: only what the library maps itself (strings within the limits,
    counts, a list of finish reasons, GenAI messages JSON, a few plain features)."""
    r = rng.random()
    if tame:
        if "tokens" in key or "token_count" in key or key == "app.prompt_chars":
            return AnyValue(int_value=rng.choice([0, 57, 2**40, -3]))
        if key == "gen_ai.response.finish_reasons":
            return AnyValue(array_value={"values": [AnyValue(string_value=rng.choice(["stop", "length"]))]})
        if key in ("gen_ai.input.messages", "gen_ai.output.messages"):
            return AnyValue(
                string_value=json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hé"}]}])
            )
        if key in ("app.tier", "app.ratio"):
            return rng.choice([AnyValue(double_value=0.25), AnyValue(bool_value=True), AnyValue(int_value=3)])
        return AnyValue(string_value=rng.choice([t for t in TEXTS if len(t) <= 128]))
    if key in ("gen_ai.input.messages", "gen_ai.output.messages") and r < 0.7:
        return AnyValue(string_value=_messages_json(rng))
    if ("tokens" in key or "token_count" in key or key == "app.prompt_chars") and r < 0.6:
        return AnyValue(int_value=rng.choice([0, 1, 57, 2**40, -3]))
    if key == "gen_ai.response.finish_reasons" and r < 0.6:
        vals = [
            AnyValue(string_value=rng.choice(["stop", "length", "x" * 70, ""]))
            for _ in range(rng.randint(0, 2))
        ]
        if rng.random() < 0.2:
            vals.insert(0, rng.choice([AnyValue(int_value=3), AnyValue(), AnyValue(bool_value=False)]))
        return AnyValue(array_value={"values": vals})
    r = rng.random()
    if r < 0.55:
        return AnyValue(string_value=rng.choice(TEXTS))
    if r < 0.65:
        return AnyValue(int_value=rng.choice([0, 7, -1, 2**63 - 1]))
    if r < 0.72:
        return AnyValue(bool_value=rng.random() < 0.5)
    if r < 0.8:
        return AnyValue(
            double_value=rng.choice([0.0, 2.5, 1e-7, 1e16, 123456.789, float("nan"), float("inf")])
        )
    if r < 0.86 and depth < 2:
        return AnyValue(array_value={"values": [_any(rng, "", depth + 1) for _ in range(rng.randint(0, 2))]})
    if r < 0.9:
        return AnyValue(kvlist_value={"values": [KeyValue(key="k", value=AnyValue(string_value="v"))]})
    if r < 0.94:
        return AnyValue(bytes_value=b"\x00\xff")
    return AnyValue()  # unset


def _span(rng: random.Random, i: int, tame: bool) -> Span:
    attrs = []
    if rng.random() < 0.85:  # a GenAI span
        attrs.append(
            KeyValue(
                key=rng.choice(KEYS[:4]), value=AnyValue(string_value=rng.choice(["chat", "openai", "LLM"]))
            )
        )
        attrs.append(
            KeyValue(key=rng.choice(MODEL_KEYS), value=AnyValue(string_value=rng.choice(["gpt-4o", "m"])))
        )
    for _ in range(rng.randint(0, 12)):
        key = rng.choice(KEYS)
        attrs.append(KeyValue(key=key, value=_any(rng, key, tame=tame)))
    start = T0 + i * 10**7 + rng.choice([0, 123_456_789, 999_999_600, 500, 1])
    r = 1.0 if tame else rng.random()
    if r < 0.03:
        start = rng.choice([0, 2**64 - 1, 7258118400 * 10**9])
    end = (
        start + rng.choice([800_000_000, 0, 1, 123_457, 10**18]) if rng.random() < 0.95 else max(start - 5, 0)
    )
    end = min(end, 2**64 - 1)
    tid, sid = rng.randbytes(16), rng.randbytes(8)
    r = 1.0 if tame else rng.random()
    if r < 0.03:
        tid = b""
    elif r < 0.05:
        sid = bytes(8)
    elif r < 0.06:
        tid = bytes(16)
    span = Span(
        trace_id=tid,
        span_id=sid,
        name=rng.choice(["chat gpt-4o", "GET /"]),
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=attrs,
    )
    if rng.random() < 0.15:
        span.status.CopyFrom(Status(code=2, message=rng.choice(["", "boom"])))
    if rng.random() < (0.0 if tame else 0.1):
        ev = span.events.add(
            name=rng.choice(["exception", "gen_ai.evaluation.result"]),
            time_unix_nano=min(start + 5, 2**64 - 1),
        )
        ev.attributes.add(key="gen_ai.evaluation.name", value=AnyValue(string_value="toxicity"))
        ev.attributes.add(key="gen_ai.evaluation.score.value", value=AnyValue(double_value=0.9))
    return span


def _message(rng: random.Random, n: int) -> bytes:
    """Half the messages are tame (see ``_any``), half draw anything."""
    tame = n % 2 == 0
    req = ExportTraceServiceRequest()
    for r in range(rng.choice([1, 1, 2])):
        rs = req.resource_spans.add()
        for key in rng.sample(KEYS, rng.randint(0, 4)):
            rs.resource.attributes.add(key=key, value=_any(rng, key, tame=tame))
        for _ in range(rng.choice([1, 2])):
            ss = rs.scope_spans.add()
            ss.scope.name = "opentelemetry.instrumentation.openai_v2"
            ss.spans.extend(_span(rng, n * 10 + r * 5 + j, tame) for j in range(rng.randint(0, 6)))
    return req.SerializeToString()


def _mutated(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    if not b:
        return raw
    r = rng.random()
    if r < 0.4:
        return bytes(b[: rng.randrange(len(b))])
    for _ in range(rng.randint(1, 3)):
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def _decoded(codec: OtlpSpans, raws: list[bytes]) -> dict[str, Any]:
    d = codec.decode_batch(raws)
    return {
        "events": repr(d.events),  # (repr: a NaN feature equals itself)
        "raws": d.raws,
        "indexes": d.indexes,
        "ts": d.ts,
        "rejected": [(r.index, r.kind, r.reason, r.raw) for r in d.rejected],
        "skipped": +d.skipped,
        "response_ids": d.response_ids,
        "evaluations": [
            (e.name, e.ts, e.event_id, e.response_id, e.label, e.score, e.index) for e in d.evaluations
        ],
    }


@pytest.fixture(scope="module")
def native() -> None:
    otlpnative.build(say=lambda _: None)
    otlpnative._lib = False  # look again: it is built now
    assert otlpnative.load() is not None, "the built library does not load"


@pytest.mark.parametrize("mapping", list(MAPPINGS))
def test_the_library_maps_every_message_as_python_does(native, mapping):
    m = from_dict(MAPPINGS[mapping])
    fast, slow = OtlpSpans(m), OtlpSpans(m, native=False)
    assert fast.native
    rng = random.Random(f"otlpmap {mapping}")
    plain = [_message(rng, n) for n in range(400)]
    broken = [_mutated(rng, raw) for raw in plain[:200]] + [b"", b"\x0a\x02\x0a\x00"]
    for batch in (plain, broken):
        for k in range(0, len(batch), 40):
            raws = batch[k : k + 40]
            assert _decoded(fast, raws) == _decoded(slow, raws)
    tame = plain[::2]  # (_message: the even ones)
    assert all(fast._native.message(raw) is not None for raw in tame), "the library fell back on a tame one"
    assert len(fast.decode_batch(tame).events) > (30 if mapping == "chat only" else 300)


def test_the_library_writes_what_msgspec_writes_for_every_float_and_time(native):
    """Latencies and start times over the whole range, through both mappings."""
    rng = random.Random(7)
    fast, slow = OtlpSpans(), OtlpSpans(native=False)
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    for i in range(2000):
        start = rng.randrange(31536000 * 10**9, 7258118400 * 10**9)
        k = i % 20
        end = start + rng.choice([rng.randrange(10**3), rng.randrange(10**9), rng.randrange(10**19), 10**k])
        span = spans.add(
            trace_id=rng.randbytes(16),
            span_id=rng.randbytes(8),
            name="chat",
            start_time_unix_nano=start,
            end_time_unix_nano=min(end, 2**64 - 1),
        )
        span.attributes.add(key="gen_ai.operation.name", value=AnyValue(string_value="chat"))
        span.attributes.add(key="gen_ai.request.model", value=AnyValue(string_value="m"))
    raw = req.SerializeToString()
    assert fast._native.message(raw) is not None
    got, want = _decoded(fast, [raw]), _decoded(slow, [raw])
    assert got == want and len(got["raws"]) == 2000
